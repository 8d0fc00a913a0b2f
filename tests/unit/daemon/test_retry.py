"""``scribed retry``: queue recordings again, attempts and backoff forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import settled

from scribed.config import parse_config
from scribed.daemon.journal import Journal
from scribed.daemon.retry import retry_command
from scribed.errors import UsageError


@pytest.fixture
def setup(tmp_path: Path):
    cfg = parse_config({"watch": {"folders": [str(tmp_path / "in")]}, "model": {"id": "m"},
                        "service": {"state_dir": str(tmp_path / "state")}})
    (tmp_path / "in" / "sub").mkdir(parents=True)
    journal = Journal(cfg.service.journal_path)
    paths = {}
    for name in ("failed.wav", "sub/done.wav", "sub/working.wav", "transient.wav"):
        path = tmp_path / "in" / name
        path.write_bytes(name.encode())
        journal.offer(settled(path, tmp_path / "in"))
        paths[Path(name).stem] = path
    ids = {k: journal.find(p).id for k, p in paths.items()}
    journal.start([(i, {}, tmp_path / "n") for i in ids.values()])
    journal.failed(ids["failed"], "bad", max_attempts=1)
    journal.done(ids["done"], {}, 1.0, "en")
    journal.defer(ids["transient"], "No space left on device", retry_at=journal.now() + 3600, since=journal.now())
    yield cfg, journal, paths
    journal.close()


def test_failed_jobs_are_queued_again_with_attempts_reset(setup, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, journal, paths = setup  # the daemon's journal stays open: retry works while it runs
    assert retry_command(cfg, [], failed=True) == 0
    job = journal.find(paths["failed"])
    assert (job.state, job.attempts, job.last_error) == ("queued", 0, None)
    assert "1 recording(s) queued again" in capsys.readouterr().out


def test_paths_and_folders(setup, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, journal, paths = setup
    folder = paths["done"].parent
    assert retry_command(cfg, [folder, paths["transient"]], failed=False) == 0
    out = capsys.readouterr().out
    assert journal.find(paths["done"]).state == "queued"
    assert journal.find(paths["working"]).state == "working" and "(in progress now)" in out
    transient = journal.find(paths["transient"])
    assert (transient.state, transient.retry_at, transient.transient) == ("queued", None, 0)
    assert journal.find(paths["failed"]).state == "failed"
    assert retry_command(cfg, [folder / "nothing.wav"], failed=False) == 1
    assert "no such recording in the journal" in capsys.readouterr().out


def test_nothing_asked_or_no_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parse_config({"watch": {"folders": [str(tmp_path)]}, "model": {"id": "m"},
                        "service": {"state_dir": str(tmp_path / "state")}})
    with pytest.raises(UsageError):
        retry_command(cfg, [], failed=False)
    assert retry_command(cfg, [tmp_path / "a.wav"], failed=False) == 1
    assert "has not run yet" in capsys.readouterr().out
