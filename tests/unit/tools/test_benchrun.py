"""``scribed.tools.benchrun``: the counting engine, the busy competitor and the start-up probe.

Timings are never asserted; only that the work is what was asked and the figures are there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scribed.tools import benchrun


def test_bench_engine_fixes_the_work_per_call_and_counts_it(tiny_model: Path) -> None:
    from fixtures.tinymodel import _speechlike
    from scribed.engine.qwen3 import AsrEngine
    from scribed.engine.types import ChunkRequest

    engine = AsrEngine(tiny_model, device="cpu", dtype="float32")
    wrapped = benchrun.BenchEngine(engine, tokens_per_s=4.0)
    rng = np.random.default_rng(0)
    requests = [ChunkRequest(_speechlike(rng, 3.0), 40), ChunkRequest(_speechlike(rng, 2.0), 40)]
    fixed = wrapped.fixed_requests(requests)
    assert [(r.min_new_tokens, r.max_new_tokens) for r in fixed] == [(12, 12), (12, 12)]  # 4/s x longest 3 s
    assert requests[0].min_new_tokens == 0  # the pipeline's own requests are untouched
    done: list[int] = []
    results = wrapped.run(requests, 1, on_done=done.append)
    assert [r.tokens for r in results] == [12, 12] and not any(r.hit_limit for r in results)
    assert (wrapped.chunks, wrapped.batches, wrapped.tokens) == (2, 2, 24) and done == [1, 1]
    assert wrapped.loaded and wrapped.load_seconds == engine.load_seconds and wrapped.name == engine.name
    assert wrapped.device_name == engine.device_name and wrapped.peak_memory_bytes() is None
    wrapped.unload()
    assert not engine.loaded


def test_the_competitor_is_busy_while_it_runs_and_gone_after() -> None:
    with benchrun.Competitor() as competitor:
        assert competitor.process is not None and competitor.process.poll() is None
        pid = competitor.process.pid
        before = _cpu_of(pid)
        while _cpu_of(pid) <= before:  # a spinning process accrues a clock tick within ~10 ms
            pass
    assert competitor.process.poll() is not None


def _cpu_of(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_startup_probe_reports_each_phase(tiny_model: Path) -> None:
    row = benchrun.startup(tiny_model, "cpu", "float32")
    assert set(row) == {"import_s", "load_s", "first_chunk_s", "process_s", "interpreter_s"}
    assert row["process_s"] > 0 and row["import_s"] > 0 and row["load_s"] > 0
    assert os.environ.get("HF_HUB_OFFLINE") in (None, "1")
