"""``scribed status`` reads the journal: text, ``--json`` and ``--follow``; the heartbeat line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import settled

from scribed.config import parse_config
from scribed.daemon import status
from scribed.daemon.journal import Journal

ROOT = Path(__file__).resolve().parents[3]
JSON_KEYS = {"schema", "journal", "has_run", "running", "pid", "heartbeat_age_s", "model", "device",
             "device_configured", "worker", "network", "watch", "queue", "current", "totals", "backlog_audio_s",
             "eta_s", "recent_failures"}  # fmt: skip


def _cfg(tmp_path: Path):
    return parse_config({"watch": {"folders": [str(tmp_path)]}, "model": {"id": "m"},
                         "service": {"state_dir": str(tmp_path / "state")}})


def _busy_journal(tmp_path: Path, **meta: object) -> tuple[Path, Path]:
    """A journal with one failed recording (an undecodable name) and one in progress (2/5 chunks)."""
    cfg = _cfg(tmp_path)
    journal = Journal(cfg.service.journal_path)
    odd = tmp_path / os.fsdecode(b"meeting \xff.wav")
    odd.write_bytes(b"odd")
    busy = tmp_path / "busy.wav"
    busy.write_bytes(b"busy")
    for rec in (odd, busy):
        journal.offer(settled(rec, tmp_path, 90.0))
    odd_job, busy_job = journal.find(odd), journal.find(busy)
    journal.start([(odd_job.id, {}, tmp_path / "x.failed.txt"), (busy_job.id, {}, tmp_path / "y.failed.txt")])
    journal.progress(busy_job.id, 2, 5)
    journal.failed(odd_job.id, "cannot read audio: not a recognised audio format", max_attempts=1)
    journal.set_meta(**{"pid": None, "model": "m", "worker": "ready",
                        "network": "network: blocked in-process; no route", **meta})
    assert status.heartbeat_line(journal, [busy_job.id]) == "0 queued; transcribing busy.wav (2/5 chunks)"
    journal.close()
    return busy, odd


def test_no_journal_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.print_status(_cfg(tmp_path)) == 3
    assert "has not run yet" in capsys.readouterr().out
    assert status.print_status(_cfg(tmp_path), as_json=True) == 3
    view = json.loads(capsys.readouterr().out)
    assert view["has_run"] is False and view["running"] is False and set(view) == JSON_KEYS


def test_text_view_is_aligned_prints_any_name_and_says_the_daemon_is_not_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy, _ = _busy_journal(tmp_path, device="cuda:0 (NVIDIA RTX 4090)", watch={str(tmp_path): "inotify"})
    assert status.print_status(_cfg(tmp_path)) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == [
        "daemon:    not running",
        "model:     m",
        "device:    cuda:0 (NVIDIA RTX 4090) (last known)",  # not "?" once a worker ever reported one
        "worker:    ready",
        "network:   blocked in-process; no route",
        f"watching:  {tmp_path} (inotify)",
    ]
    assert f"current:   {busy} (2/5 chunks)" in lines
    assert "totals:    0 done, 1 failed, 0 skipped, 0 vanished" in lines
    assert any(line.startswith("failed:    ") and "meeting \\xff.wav: cannot read audio" in line for line in lines)
    assert all(line[11] != " " and line[:11].rstrip().endswith(":") for line in lines)  # one value column


def test_device_is_current_while_running_and_configured_before_any_worker_reported(tmp_path: Path) -> None:
    _busy_journal(tmp_path, pid=os.getpid(), heartbeat=time.time(), device="cpu (2 threads)")
    view = status.snapshot(_cfg(tmp_path))
    assert view["running"] is True and status.render(view)[2] == "device:    cpu (2 threads)"
    other = tmp_path / "other"
    other.mkdir()
    Journal(_cfg(other).service.journal_path).close()
    assert status.render(status.snapshot(_cfg(other)))[2] == "device:    not known yet (model.device: auto)"


def test_json_has_the_documented_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy, _ = _busy_journal(tmp_path, pid=os.getpid(), heartbeat=time.time(), device="cpu",
                            watch={str(tmp_path): "polling"})
    assert status.print_status(_cfg(tmp_path), as_json=True) == 0
    view = json.loads(capsys.readouterr().out)
    assert set(view) == JSON_KEYS and view["schema"] == 1
    assert view["running"] is True and view["pid"] == os.getpid() and 0 <= view["heartbeat_age_s"] < 60
    assert (view["model"], view["device"], view["worker"]) == ("m", "cpu", "ready")
    assert view["network"] == "blocked in-process; no route"
    assert view["watch"] == [{"folder": str(tmp_path), "mode": "polling"}]
    assert view["queue"] == {"queued": 0, "working": 1, "waiting": 0}
    assert view["current"] == [{"path": str(busy), "done": 2, "total": 5}]
    assert view["totals"] == {"done": 0, "failed": 1, "skipped": 0, "gone": 0, "changed": 0}
    (failure,) = view["recent_failures"]
    assert failure["path"].endswith("meeting \\xff.wav") and failure["error"].startswith("cannot read audio")
    assert view["backlog_audio_s"] == 90.0 and view["eta_s"] is None  # no file done yet: no speed known


def test_a_stale_heartbeat_means_not_running(tmp_path: Path) -> None:
    _busy_journal(tmp_path, pid=os.getpid(), heartbeat=time.time() - 2 * status.STALE_S)
    assert status.snapshot(_cfg(tmp_path))["running"] is False


def _follow(tmp_path: Path) -> subprocess.Popen[str]:
    config = tmp_path / "config.yaml"
    config.write_text(f"watch:\n  folders: ['{tmp_path}']\nservice:\n  state_dir: '{tmp_path / 'state'}'\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "daemon"), PYTHONUNBUFFERED="1")
    # SIGINT at its default in the child whatever this process inherited (an ignored one would be too)
    return subprocess.Popen([sys.executable, "-m", "scribed.cli", "status", "--follow", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_follow_refreshes_until_ctrl_c(tmp_path: Path) -> None:
    busy, _ = _busy_journal(tmp_path, pid=os.getpid(), heartbeat=time.time())
    proc = _follow(tmp_path)
    try:
        seen: list[str] = []
        while sum(line.startswith("totals:") for line in seen) < 2:  # two whole refreshes
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"follow ended early: {seen} {proc.stderr.read()}"  # type: ignore[union-attr]
            seen.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sum(line.startswith("scribed status at ") for line in seen) == 2
    assert seen.count(f"current:   {busy} (2/5 chunks)") == 2
    assert "Traceback" not in err


def test_follow_ends_with_3_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    _busy_journal(tmp_path)  # pid None: stopped
    proc = _follow(tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert out.count("scribed status at ") == 1 and "daemon:    not running" in out
