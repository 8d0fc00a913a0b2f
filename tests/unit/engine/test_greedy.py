"""Tests for scribed.engine.greedy: the same tokens as transformers' generate, on the real model code.

The reference is ``generate`` on a separately loaded copy of the fixture checkpoint with
transformers' stock attention (SDPA) and cache (DynamicCache), in float32.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import Qwen3ASRForConditionalGeneration

from fixtures.tinymodel import _speechlike
from scribed.engine import graphstep
from scribed.engine.greedy import DecodeStats, greedy_decode, supports
from scribed.engine.qwen3 import EOS_TOKEN_IDS, AsrEngine
from scribed.engine.types import ChunkRequest


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> AsrEngine:
    e = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    e.load()
    return e


@pytest.fixture(scope="module")
def stock(tiny_model: Path) -> Qwen3ASRForConditionalGeneration:
    return Qwen3ASRForConditionalGeneration.from_pretrained(
        tiny_model, local_files_only=True, dtype=torch.float32, attn_implementation="sdpa").eval()


def _inputs(engine: AsrEngine, seconds: tuple[float, ...], language: str | None = None) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(7)
    audio = [_speechlike(rng, s) for s in seconds]  # different lengths: left padding in the batch
    inputs = engine.processor.apply_transcription_request(audio, language=language)
    return dict(inputs)


@pytest.mark.parametrize("prefill_rows", [None, 1, 2])
@pytest.mark.parametrize(("minimum", "limit"), [(0, 12), (12, 12), (3, 20)])
def test_same_tokens_as_generate(engine: AsrEngine, stock: Qwen3ASRForConditionalGeneration,
                                 prefill_rows: int | None, minimum: int, limit: int) -> None:
    inputs = _inputs(engine, (6.3, 2.1, 4.0))
    pad = engine.processor.tokenizer.pad_token_id
    with torch.inference_mode():
        want = stock.generate(**inputs, max_new_tokens=limit, min_new_tokens=minimum, do_sample=False,
                              num_beams=1, pad_token_id=pad)[:, inputs["input_ids"].shape[1]:]
    got = greedy_decode(engine.model, inputs, max_new_tokens=limit, min_new_tokens=minimum,
                        eos_ids=EOS_TOKEN_IDS, pad_id=pad, prefill_rows=prefill_rows)
    assert got.shape == want.shape
    assert torch.equal(got, want)
    if minimum == 0:  # the fixture ends its phrase early: rows stop, then pad
        assert got.shape[1] < limit
        assert bool(torch.isin(got, torch.tensor(EOS_TOKEN_IDS)).any(dim=1).all())


@pytest.mark.parametrize(("minimum", "limit"), [(0, 12), (12, 12), (3, 20)])
def test_fixed_shape_steps_give_the_same_tokens_as_generate(engine: AsrEngine, stock: Qwen3ASRForConditionalGeneration,
                                                            minimum: int, limit: int) -> None:
    # what a GPU replays as a CUDA graph (engine.graphstep), run eagerly here: every step over the
    # whole reserved cache, the new position written through a device index, the rest masked
    inputs = _inputs(engine, (6.3, 2.1, 4.0))
    pad = engine.processor.tokenizer.pad_token_id
    with torch.inference_mode():
        want = stock.generate(**inputs, max_new_tokens=limit, min_new_tokens=minimum, do_sample=False,
                              num_beams=1, pad_token_id=pad)[:, inputs["input_ids"].shape[1]:]
    stats = DecodeStats()
    assert graphstep.usable(engine.model)  # Qwen3-ASR's decoder: full attention in every layer
    got = greedy_decode(engine.model, inputs, max_new_tokens=limit, min_new_tokens=minimum,
                        eos_ids=EOS_TOKEN_IDS, pad_id=pad, static=True, graph=True, stats=stats)
    assert torch.equal(got, want)
    assert stats.captures == 0  # no graph on a CPU: the same step, eagerly


def test_forced_language_prefix_decodes_the_same(engine: AsrEngine, stock: Qwen3ASRForConditionalGeneration) -> None:
    inputs = _inputs(engine, (3.0, 5.5), language="Chinese")
    pad = engine.processor.tokenizer.pad_token_id
    with torch.inference_mode():
        want = stock.generate(**inputs, max_new_tokens=16, do_sample=False, num_beams=1,
                              pad_token_id=pad)[:, inputs["input_ids"].shape[1]:]
    got = greedy_decode(engine.model, inputs, max_new_tokens=16, min_new_tokens=0, eos_ids=EOS_TOKEN_IDS,
                        pad_id=pad, prefill_rows=1)
    assert torch.equal(got, want)


def test_configs_asking_for_more_than_greedy_are_not_supported() -> None:
    assert supports(SimpleNamespace(do_sample=False, temperature=1e-6, num_beams=1))
    assert not supports(SimpleNamespace(repetition_penalty=1.1))
    assert not supports(SimpleNamespace(suppress_tokens=[5]))
    assert not supports(SimpleNamespace(do_sample=True))


def test_engine_falls_back_to_generate_for_such_a_config(tiny_model: Path, engine: AsrEngine) -> None:
    other = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    other.load()
    other.model.generation_config.no_repeat_ngram_size = 0  # still plain
    assert other.greedy_loop
    other.greedy_loop = False  # what load() decides for e.g. a repetition penalty
    rng = np.random.default_rng(3)
    requests = [ChunkRequest(audio=_speechlike(rng, s), max_new_tokens=16) for s in (4.0, 2.5)]
    fallback = other.run(requests, batch_size=2)
    loop = engine.run(requests, batch_size=2)
    assert [r.text for r in fallback] == [r.text for r in loop]
    assert all(r.text for r in loop)
