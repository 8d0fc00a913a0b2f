"""Tests for scribed.engine.qwen3 on the trained tiny checkpoint: the real transformers code path.

The fixture model answers "hello world" (auto/English) and "你好世界" (forced Chinese) to
speech-like audio; it is never mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures.tinymodel import PHRASE_EN, PHRASE_ZH, _speechlike
from scribed.engine.qwen3 import AsrEngine, cpu_threads, resolve_device
from scribed.engine.types import ChunkRequest
from scribed.errors import ModelError

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> AsrEngine:
    e = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    e.load()
    return e


def _audio(seed: int, seconds: float) -> np.ndarray:
    return _speechlike(np.random.default_rng(seed), seconds)


def test_results_come_back_in_request_order_with_progress(engine: AsrEngine) -> None:
    requests = [ChunkRequest(_audio(i, 1.0 + i), 40, language="Chinese" if i % 2 else None) for i in range(5)]
    done: list[int] = []
    results = engine.run(requests, 2, on_done=done.append)
    assert [r.text for r in results] == [PHRASE_EN, PHRASE_ZH, PHRASE_EN, PHRASE_ZH, PHRASE_EN]
    assert [r.language for r in results] == ["English", "Chinese", "English", "Chinese", "English"]
    assert sum(done) == 5 and max(done) <= 2  # batches never exceed batch_size
    assert not any(r.hit_limit for r in results)


def test_no_batch_size_means_the_engines_choice_for_its_device(engine: AsrEngine) -> None:
    assert engine.auto_batch_size == 16  # a CPU (engine.qwen3.AUTO_BATCH_SIZE)
    requests = [ChunkRequest(_audio(i, 1.0), 20) for i in range(18)]
    done: list[int] = []
    engine.run(requests, None, on_done=done.append)
    assert done == [16, 2]


def test_a_too_small_budget_is_reported_as_hitting_the_limit(engine: AsrEngine) -> None:
    (result,) = engine.run([ChunkRequest(_audio(1, 2.0), 2)], 4)
    assert result.hit_limit and result.tokens == 2


def test_min_new_tokens_forces_the_work_and_is_not_a_truncation(engine: AsrEngine) -> None:
    free, forced = engine.run([ChunkRequest(_audio(2, 3.0), 40), ChunkRequest(_audio(2, 3.0), 17, min_new_tokens=17)],
                              1)
    assert free.text == PHRASE_EN and free.tokens < 17  # stops by itself at its end token
    assert forced.tokens == 17 and not forced.hit_limit


def test_a_batch_mixing_minimums_uses_the_largest_and_cuts_each_row_at_its_own_limit(engine: AsrEngine) -> None:
    forced, free = engine.run([ChunkRequest(_audio(3, 3.0), 12, min_new_tokens=12), ChunkRequest(_audio(4, 2.0), 30)],
                              2)
    assert forced.tokens == 12 and not forced.hit_limit
    # The shared generate call could not end before 12 tokens; the row still ends at its own
    # end token or its own limit, never beyond.
    assert 12 <= free.tokens <= 30


def test_an_out_of_memory_batch_is_halved_and_retried_until_it_fits(engine: AsrEngine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    real = engine._generate
    sizes: list[int] = []

    def generate(batch: list[ChunkRequest]) -> list:
        sizes.append(len(batch))
        if len(batch) > 2:  # what a GPU says when a batch's cache and activations do not fit
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(batch)

    monkeypatch.setattr(engine, "_generate", generate)
    requests = [ChunkRequest(_audio(i, 1.0 + i / 4), 40) for i in range(8)]
    done: list[int] = []
    results = engine.run(requests, 8, on_done=done.append)
    assert [r.text for r in results] == [PHRASE_EN] * 8  # nothing lost, in request order
    assert sizes == [8, 4, 2, 2, 2, 2] and done == [2, 2, 2, 2]  # halved until it fits, then kept


def test_out_of_memory_on_a_single_row_is_raised(engine: AsrEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def generate(batch: list[ChunkRequest]) -> list:
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(engine, "_generate", generate)
    with pytest.raises(torch.OutOfMemoryError):
        engine.run([ChunkRequest(_audio(1, 1.0), 40)] * 3, 4)


def test_lifecycle_unload_and_reload_on_run(tiny_model: Path) -> None:
    e = AsrEngine(tiny_model, device="cpu", dtype="float32")
    assert not e.loaded and e.name == tiny_model.name
    e.load()
    first = e.model
    e.load()  # idempotent
    assert e.loaded and e.model is first and e.load_seconds > 0
    assert e.device_name.startswith("cpu (") and e.peak_memory_bytes() is None
    e.unload()
    assert not e.loaded
    assert e.run([ChunkRequest(_audio(5, 1.5), 40)], 1)[0].text == PHRASE_EN
    assert e.loaded


def test_a_folder_without_weights_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_asr"}))
    with pytest.raises(ModelError, match="cannot load the model"):
        AsrEngine(tmp_path, device="cpu").load()


def test_device_and_dtype_resolution() -> None:
    dev, dtype = resolve_device("cpu", "float32")
    assert (dev.type, str(dtype)) == ("cpu", "torch.float32")
    assert str(resolve_device("cpu", "bfloat16")[1]) == "torch.bfloat16"
    assert resolve_device("auto", "auto")[0].type in ("cpu", "cuda")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda", "auto")
    assert 1 <= cpu_threads() <= (os.cpu_count() or 1)


def test_weights_load_in_the_target_dtype(engine: AsrEngine, tiny_model: Path) -> None:
    import torch

    e = AsrEngine(tiny_model, device="cpu", dtype="bfloat16")
    e.load()
    assert {p.dtype for p in e.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}


def test_importing_the_engine_bounds_openmp_spinning_before_torch_loads() -> None:
    code = ("import os, scribed.engine.qwen3 as q; "
            "print(os.environ.get('GOMP_SPINCOUNT'), q.threadenv.TORCH_WAS_LOADED)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(REPO / "daemon")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10000", "False"]
