"""Tests for scribed.engine.budget and the engine's use of it (rows per model call)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fixtures.tinymodel import _speechlike
from scribed.engine import budget
from scribed.engine.qwen3 import AsrEngine
from scribed.engine.types import ChunkRequest


def test_cache_bytes_of_the_real_0_6b_geometry(tokenizer_dir: Path) -> None:
    config = json.loads((tokenizer_dir / "config.json").read_text())
    text = config.get("thinker_config", config)["text_config"]
    per_row = budget.kv_bytes_per_row(SimpleNamespace(**text), positions=528, element_bytes=2)
    assert per_row == 28 * 2 * 8 * 128 * 2 * 528  # ~60 MB: a 30 s chunk with 120 new tokens in bf16
    assert budget.prompt_positions(30.0) == 430


def test_rows_fit_the_budget_between_one_and_the_cap() -> None:
    assert budget.rows_that_fit(per_row=60, budget=512, cap=16) == 8
    assert budget.rows_that_fit(per_row=60, budget=10_000, cap=16) == 16
    assert budget.rows_that_fit(per_row=600, budget=512, cap=16) == 1  # one row always runs


def test_a_small_machine_gets_a_smaller_budget(tmp_path: Path) -> None:
    assert budget.cpu_budget_bytes(available=64 * 2**30) == budget.CPU_BUDGET_BYTES
    assert budget.cpu_budget_bytes(available=2 * 2**30) == 2**28
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemAvailable:   2048 kB\n")
    assert budget.available_bytes(str(meminfo)) == 2048 * 1024
    assert budget.available_bytes(str(tmp_path / "missing")) is None


def test_the_engine_splits_a_batch_the_budget_cannot_hold_and_gives_the_same_text(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    engine.load()
    rng = np.random.default_rng(5)
    requests = [ChunkRequest(audio=_speechlike(rng, s), max_new_tokens=16) for s in (5.0, 4.0, 3.0, 2.0)]
    whole = engine.run(requests, batch_size=4)
    assert engine.batch_size_used == 4
    text = engine.model.config.get_text_config(decoder=True)
    one_row = budget.kv_bytes_per_row(text, budget.prompt_positions(5.0) + 16, 4)
    monkeypatch.setattr(budget, "CPU_BUDGET_BYTES", 2 * one_row)
    engine.batch_size_used = 0
    done: list[int] = []
    split = engine.run(requests, batch_size=4, on_done=done.append)
    assert engine.batch_size_used == 2 and done == [2, 2]
    assert [r.text for r in split] == [r.text for r in whole]
