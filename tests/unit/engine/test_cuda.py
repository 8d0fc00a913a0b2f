"""The engine on a CUDA GPU, on the trained tiny checkpoint: the real transformers code path.

Skipped where torch sees no GPU (CI has none); run on a lent GPU machine by
``tools/gpu_check.sh``. What a GPU must not change: greedy decoding gives ``generate``'s tokens,
the fixture's transcripts are the CPU's, the pre-sized cache and the one-token attention work on
device memory, and a batch is sized by free GPU memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen3ASRForConditionalGeneration

from fixtures.tinymodel import PHRASE_EN, PHRASE_ZH, _speechlike
from scribed.engine.greedy import DecodeStats, greedy_decode
from scribed.engine.qwen3 import EOS_TOKEN_IDS, AsrEngine
from scribed.engine.types import ChunkRequest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> AsrEngine:
    e = AsrEngine(tiny_model, device="cuda", dtype="float32", name="tiny")
    e.load()
    return e


def _audio(seed: int, seconds: float) -> np.ndarray:
    return _speechlike(np.random.default_rng(seed), seconds)


def test_the_engine_runs_on_the_gpu_in_the_asked_dtype(engine: AsrEngine) -> None:
    assert engine.device.type == "cuda"
    params = list(engine.model.parameters())
    assert all(p.device.type == "cuda" for p in params)
    assert {p.dtype for p in params if p.is_floating_point()} == {torch.float32}
    assert engine.prefill_rows is None and engine.core_share is None  # the whole batch at once, no CPU share


@pytest.mark.parametrize(("minimum", "limit"), [(0, 12), (12, 12)])
def test_greedy_decoding_gives_generates_tokens_on_the_gpu(engine: AsrEngine, tiny_model: Path, minimum: int,
                                                          limit: int) -> None:
    stock = Qwen3ASRForConditionalGeneration.from_pretrained(
        tiny_model, local_files_only=True, dtype=torch.float32, attn_implementation="sdpa").eval().to("cuda")
    rng = np.random.default_rng(7)
    audio = [_speechlike(rng, s) for s in (6.3, 2.1, 4.0)]  # left padding in the batch
    inputs = dict(engine.processor.apply_transcription_request(audio).to("cuda"))
    pad = engine.processor.tokenizer.pad_token_id
    with torch.inference_mode():
        want = stock.generate(**inputs, max_new_tokens=limit, min_new_tokens=minimum, do_sample=False,
                              num_beams=1, pad_token_id=pad)[:, inputs["input_ids"].shape[1]:]
    got = greedy_decode(engine.model, inputs, max_new_tokens=limit, min_new_tokens=minimum,
                        eos_ids=EOS_TOKEN_IDS, pad_id=pad)
    assert got.device.type == "cuda"
    assert torch.equal(got, want)


@pytest.mark.parametrize(("minimum", "limit"), [(0, 40), (24, 24), (3, 20)])
def test_decode_steps_replayed_as_a_cuda_graph_give_generates_tokens(engine: AsrEngine, tiny_model: Path,
                                                                   minimum: int, limit: int) -> None:
    stock = Qwen3ASRForConditionalGeneration.from_pretrained(
        tiny_model, local_files_only=True, dtype=torch.float32, attn_implementation="sdpa").eval().to("cuda")
    rng = np.random.default_rng(11)
    audio = [_speechlike(rng, s) for s in (5.1, 2.6, 7.9, 3.3)]
    inputs = dict(engine.processor.apply_transcription_request(audio).to("cuda"))
    pad = engine.processor.tokenizer.pad_token_id
    with torch.inference_mode():
        want = stock.generate(**inputs, max_new_tokens=limit, min_new_tokens=minimum, do_sample=False,
                              num_beams=1, pad_token_id=pad)[:, inputs["input_ids"].shape[1]:]
    stats = DecodeStats()
    got = greedy_decode(engine.model, inputs, max_new_tokens=limit, min_new_tokens=minimum, eos_ids=EOS_TOKEN_IDS,
                        pad_id=pad, static=True, graph=True, stats=stats)
    assert stats.captures == 1  # really replayed, not the eager fallback
    assert torch.equal(got, want)


def test_transcripts_on_the_gpu_are_the_cpus(engine: AsrEngine, tiny_model: Path) -> None:
    requests = [ChunkRequest(_audio(i, 1.0 + i), 40, language="Chinese" if i % 2 else None) for i in range(5)]
    cpu = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    want = [(r.text, r.language, r.tokens) for r in cpu.run(requests, 4)]
    engine.stats = DecodeStats()
    got = [(r.text, r.language, r.tokens) for r in engine.run(requests, 4)]
    assert got == want
    assert engine.static_steps and engine.stats.captures >= 1  # the engine's own path: graphs
    assert [text for text, _, _ in got] == [PHRASE_EN, PHRASE_ZH, PHRASE_EN, PHRASE_ZH, PHRASE_EN]


def test_bfloat16_on_the_gpu_transcribes_the_fixture(tiny_model: Path) -> None:
    e = AsrEngine(tiny_model, device="cuda", dtype="auto", name="tiny")
    assert e.dtype == torch.bfloat16  # auto on CUDA
    (result,) = e.run([ChunkRequest(_audio(3, 3.0), 40)], 1)
    assert result.text == PHRASE_EN and not result.hit_limit
    e.unload()


def test_a_batch_is_sized_by_free_gpu_memory(engine: AsrEngine) -> None:
    requests = [ChunkRequest(_audio(0, 30.0), 120)] * 4
    assert engine.rows_for(requests, 4) == 4  # the tiny model's cache is small next to a GPU's memory
    free, _total = torch.cuda.mem_get_info()
    blocker = torch.empty(int(free * 0.9) // 4, dtype=torch.float32, device="cuda")  # leave ~10 % free
    try:
        assert engine.rows_for(requests, 10**9) < 10**9
    finally:
        del blocker
        torch.cuda.empty_cache()


def test_peak_gpu_memory_is_reported(engine: AsrEngine) -> None:
    torch.cuda.reset_peak_memory_stats()
    engine.run([ChunkRequest(_audio(5, 2.0), 20)], 1)
    peak = engine.peak_memory_bytes()
    assert peak is not None and peak > sum(p.numel() * p.element_size() for p in engine.model.parameters())
