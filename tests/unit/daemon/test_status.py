"""``scribed status`` reads the journal; the heartbeat line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import settled

from scribed.config import parse_config
from scribed.daemon import status
from scribed.daemon.journal import Journal


def _cfg(tmp_path: Path):
    return parse_config({"watch": {"folders": [str(tmp_path)]}, "model": {"id": "m"},
                         "service": {"state_dir": str(tmp_path / "state")}})


def test_no_journal_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.print_status(_cfg(tmp_path)) == 3
    assert "has not run yet" in capsys.readouterr().out


def test_status_prints_any_name_and_says_the_daemon_is_not_running(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
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
    journal.set_meta(pid=None, model="m", worker="ready", network="network: blocked in-process; no route")
    assert status.heartbeat_line(journal, [busy_job.id]) == "0 queued; transcribing busy.wav (2/5 chunks)"
    journal.close()
    assert status.print_status(cfg) == 3
    out = capsys.readouterr().out
    assert "daemon:    not running" in out
    assert "network: blocked in-process" in out
    assert f"current:   {busy} (2/5 chunks)" in out
    assert "meeting \\xff.wav: cannot read audio" in out
    assert "0 done, 1 failed" in out
