"""``scribed bench``: the report's shape and the error paths, on the tiny architecture.

Timings are never asserted (they depend on the machine and its load); only that every figure
is there, has the right type and is positive where it must be.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from scribed import cli
from scribed.tools import bench, benchhost

SCENARIO_KEYS = {
    "recordings": int, "audio_s": float, "wall_s": float, "x_realtime": float, "rtf": float, "cpu_s": float,
    "chunks": int, "batches": int, "batch_size": int, "batch_size_used": int, "tokens": int,
    "tokens_per_audio_s": float, "load_s": float, "peak_rss_bytes": int, "peak_rss_scope": str, "segment_s": float,
}


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No user config, a private checkpoint cache, and short scenarios (the memo is 2 chunks)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SCRIBED_BENCH_DURATIONS", "memo=40,long=12,backlog=5")
    monkeypatch.setenv("SCRIBED_BENCH_MEMORY", "lengths=20,40;backlogs=1,3;each=5")
    monkeypatch.setenv("SCRIBED_BENCH_STEPS", "batches=1,2;chunk=8;steps=4")
    return tmp_path


def test_quick_json_report_has_every_figure(isolated: Path, tokenizer_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SCRIBED_TOKENIZER_DIR", str(tokenizer_dir))
    assert cli.main(["bench", "--quick", "--json", "--sizes", "tiny", "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout

    for key in ("date", "scribed", "python", "torch", "transformers", "cpu", "audio"):
        assert isinstance(report[key], str) and report[key]
    assert report["date"].startswith("20")
    assert report["quick"] is True
    assert report["tokens_per_audio_s"] == bench.TOKENS_PER_AUDIO_S
    assert isinstance(report["threads"], int) and report["threads"] >= 1
    assert len(report["loadavg_before"]) == 3 and len(report["loadavg_after"]) == 3
    host = report["host"]  # measured, never judged: only present and positive
    assert host["read_gb_per_s"] > 0 and host["read_threads"] >= 1
    assert set(host["flags"]) <= set(benchhost.FLAGS)

    (model,) = report["models"]
    assert model["architecture"] == "tiny" and model["random_weights"] is True
    assert model["dtype"] in ("float32", "bfloat16") and model["device"].startswith("cpu")  # dtype auto
    assert model["parameters"] > 0 and model["load_s"] > 0 and model["warmup_s"] > 0
    assert isinstance(model["build_s"], float)  # built into the empty cache, so timed
    assert Path(model["path"]).is_relative_to(isolated / "cache")
    assert model["batch_size"] == 4

    assert set(model["scenarios"]) == {"memo", "long", "backlog"}
    for name, row in model["scenarios"].items():
        for key, kind in SCENARIO_KEYS.items():
            assert isinstance(row[key], kind), (name, key, row[key])
        for key in ("audio_s", "wall_s", "x_realtime", "rtf", "tokens_per_audio_s", "peak_rss_bytes", "chunks"):
            assert row[key] > 0, (name, key)
        assert row["peak_gpu_bytes"] is None  # CPU run
        assert 1 <= row["batch_size_used"] <= row["batch_size"] == 4
        assert row["tokens"] >= row["chunks"]
    assert model["scenarios"]["memo"]["audio_s"] == pytest.approx(40, abs=0.1)
    assert model["scenarios"]["long"]["audio_s"] == pytest.approx(12, abs=0.1)
    assert model["scenarios"]["backlog"]["recordings"] == 2  # --quick default
    assert model["scenarios"]["backlog"]["audio_s"] == pytest.approx(10, abs=0.1)

    speedup = model["batched_speedup"]
    assert speedup["scenario"] == "memo" and speedup["chunks"] >= 2 and speedup["batch_size"] == 4
    assert speedup["ratio"] > 0 and speedup["single_wall_s"] > 0 and speedup["batched_wall_s"] > 0

    contended = model["contended"]
    assert contended["ratio"] > 0 and contended["contended_wall_s"] > 0
    assert contended["idle_wall_s"] == model["scenarios"]["memo"]["wall_s"]
    assert contended["threads_used"] and all(t >= 1 for t in contended["threads_used"])

    assert [row["batch"] for row in model["decode_steps"]] == [1, 2]
    for row in model["decode_steps"]:
        assert row["steps"] == 4 and row["ms_per_step"] > 0 and row["chunk_s"] == 8 and row["prompt_s_per_row"] > 0
        assert row["bound_ms"] > 0  # the bandwidth floor of a CPU step
        assert row["threads_used"] and all(t >= 1 for t in row["threads_used"])

    memory = model["memory"]
    assert memory["model_bytes"] > 0
    assert [row["minutes"] for row in memory["lengths"]] == [pytest.approx(20 / 60, abs=0.01),
                                                             pytest.approx(40 / 60, abs=0.01)]
    assert [row["files"] for row in memory["backlogs"]] == [1, 3]
    assert memory["backlogs"][1]["audio_s"] == pytest.approx(15, abs=0.1)
    for row in memory["lengths"] + memory["backlogs"]:
        assert row["peak_rss_bytes"] > memory["model_bytes"] and row["peak_rss_scope"] in ("scenario", "process")

    startup = model["startup"]
    for key in ("process_s", "interpreter_s", "import_s", "load_s", "first_chunk_s"):
        assert startup[key] >= 0
    assert startup["process_s"] >= startup["import_s"] + startup["load_s"]

    table = bench.format_report(report)  # the non-JSON output of the same report
    for word in ("tiny", "memo", "long", "backlog", "batching", "transformers", "contended", "decode step",
                 "memory", "start-up", "memory read", "bandwidth floor"):
        assert word in table


def test_missing_tokenizer_files_exit_2_and_say_where_to_point(
        isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SCRIBED_TOKENIZER_DIR", str(isolated / "nowhere"))
    assert cli.main(["bench", "--quick", "--sizes", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "--tokenizer" in err and "SCRIBED_TOKENIZER_DIR" in err and "--model" in err


@pytest.mark.parametrize(("argv", "says"), [
    (["--sizes", "3b"], "unknown architecture"),
    (["--sizes", "tiny", "--batch-size", "0"], "batch"),  # checked by the CLI overlay or by bench
    (["--sizes", "tiny", "--backlog", "-1"], "--backlog"),
])
def test_bad_arguments_exit_2(isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                              argv: list[str], says: str) -> None:
    monkeypatch.setenv("SCRIBED_TOKENIZER_DIR", str(isolated / "nowhere"))  # nothing could be built anyway
    assert cli.main(["bench", "--quick", *argv]) == 2
    assert says in capsys.readouterr().err


def test_bad_durations_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    args = argparse.Namespace(quick=True, backlog=None)
    quick = bench.QUICK
    assert bench.durations_from(args, "memo=5, long=0") == bench.dataclasses.replace(quick, memo=5.0, long=0.0)
    chosen = bench.durations_from(args, None, "lengths=60,0,7200;backlogs=1,32", "batches=1,4;steps=10")
    assert chosen.lengths == (60.0, 7200.0) and chosen.backlogs == (1, 32) and chosen.backlog_each == quick.backlog_each
    assert chosen.step_batches == (1, 4) and chosen.steps == 10 and chosen.step_chunk_s == quick.step_chunk_s
    with pytest.raises(bench.UsageError, match="SCRIBED_BENCH_MEMORY"):
        bench.durations_from(args, None, "sizes=1")
    with pytest.raises(bench.UsageError, match="SCRIBED_BENCH_STEPS"):
        bench.durations_from(args, None, None, "batches=many")
    with pytest.raises(bench.UsageError):
        bench.durations_from(args, "lunch=5")
    with pytest.raises(bench.UsageError):
        bench.durations_from(args, "memo=soon")
