"""The daemon driven tick by tick: injected clock, fake watcher, fake worker released step by step,
real journal (SQLite) and real files. No process, thread or sleep."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fakes import FakeWatcher, FakeWorker, Notes, Workers, settled

from scribed.config import load_config
from scribed.daemon import jobs
from scribed.daemon.journal import Journal
from scribed.daemon.service import HUNG_S, Daemon


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rig:
    def __init__(self, tmp: Path, **sections: dict) -> None:
        self.tmp = tmp
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.data = {"watch": {"folders": [str(self.inbox)]}, "model": {"id": "fake-model"},
                     "service": {"state_dir": str(tmp / "state"), "stop_timeout_s": 60, "attempts": 3}}
        for name, values in sections.items():
            self.data.setdefault(name, {}).update(values)
        self.config = tmp / "config.yaml"
        self.write_config()
        self.cfg = load_config(self.config)
        self.clock = Clock(0.0)
        self.wall = Clock(1_000_000.0)
        self.journal = Journal(self.cfg.service.journal_path, wall_clock=self.wall)
        self.workers = Workers()
        self.notes = Notes()
        self.daemon = Daemon(self.cfg, journal=self.journal, watcher_factory=FakeWatcher, worker_factory=self.workers,
                             notifier=self.notes, clock=self.clock)  # type: ignore[arg-type]

    def write_config(self) -> None:
        self.config.write_text(yaml.safe_dump(self.data))

    @property
    def worker(self) -> FakeWorker:
        return self.workers.last

    def start(self) -> None:
        self.daemon.start(self.clock())

    def tick(self, at: float | None = None) -> int | None:
        if at is not None:
            self.clock.t = at
        return self.daemon.tick(self.clock())

    def drop(self, name: str, content: bytes | None = None, audio_s: float = 1.0) -> Path:
        path = self.inbox / name
        path.write_bytes(content if content is not None else name.encode() * 10)
        if self.daemon.watcher is not None:
            self.daemon.watcher.inbox.append(settled(path, self.inbox, audio_s))
        return path

    def ready_worker(self) -> FakeWorker:
        self.worker.load()
        assert self.tick() is None
        return self.worker

    def busy(self, name: str = "a.wav", content: bytes | None = None) -> tuple[FakeWorker, Path]:
        """Started, worker ready, and ``name`` dispatched to it."""
        self.start()
        worker = self.ready_worker()
        path = self.drop(name, content)
        assert self.tick() is None
        return worker, path

    def state(self, path: Path) -> tuple[str, int]:
        job = self.journal.find(path)
        assert job is not None
        return job.state, job.attempts


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.journal.close()


def test_a_recording_goes_from_settled_to_done(rig: Rig) -> None:
    rig.start()
    worker = rig.ready_worker()
    assert rig.notes.sent.count("READY") == 1
    a = rig.drop("a.wav")
    assert rig.tick() is None
    (spec,) = worker.current
    assert spec.path == a and spec.outputs == {"txt": rig.inbox / "a.txt"}
    assert spec.failure_note == rig.inbox / "a.failed.txt"
    assert rig.state(a) == ("working", 1)
    assert rig.journal.find(a).outputs == spec.outputs  # decided at dispatch, stored
    worker.complete(spec)
    rig.tick()
    assert rig.state(a) == ("done", 1)
    assert rig.journal.find(a).written["txt"].same_file(os.lstat(rig.inbox / "a.txt"))


def test_recovery_marks_a_job_finished_before_the_crash_done(rig: Rig) -> None:
    finished, lost, stale = (rig.drop(n) for n in ("finished.wav", "lost.wav", "stale.wav"))
    for path in (finished, lost, stale):
        jobs.intake(rig.cfg, rig.journal, settled(path, rig.inbox))
    specs = jobs.plan_batch(rig.cfg, rig.journal)  # "dispatched" by the daemon that then crashed
    assert [s.path for s in specs] == [finished, lost, stale]
    (rig.inbox / "finished.txt").write_text("hello world\n")  # written after the attempt started
    (rig.inbox / "stale.txt").write_text("an older transcript\n")
    os.utime(rig.inbox / "stale.txt", (rig.wall.t - 100, rig.wall.t - 100))  # from before the attempt

    rig.start()
    assert rig.state(finished) == ("done", 1)
    assert rig.state(lost) == ("queued", 1) and rig.state(stale) == ("queued", 1)  # attempt stays counted
    worker = rig.ready_worker()
    assert [s.path for s in worker.current] == [lost]  # a job that failed an attempt goes alone


def test_batch_caps_files_and_audio(rig: Rig) -> None:
    rig.start()
    paths = [rig.drop(f"m{i:02d}.wav") for i in range(jobs.MAX_FILES_PER_BATCH + 2)]
    worker = rig.ready_worker()
    assert [s.path for s in worker.current] == paths[:jobs.MAX_FILES_PER_BATCH]
    for spec in worker.current:
        worker.complete(spec)
    rig.tick()
    assert [s.path for s in worker.current] == paths[jobs.MAX_FILES_PER_BATCH:]
    for spec in worker.current:
        worker.complete(spec)
    long = [rig.drop(f"long{i}.wav", audio_s=1000.0) for i in range(6)]
    rig.tick()
    rig.tick()
    assert [s.path for s in worker.current] == long[:4]  # 4000 s >= MAX_AUDIO_PER_BATCH_S


def test_a_job_that_failed_an_attempt_goes_alone(rig: Rig) -> None:
    rig.start()
    worker = rig.ready_worker()
    bad = rig.drop("bad.wav")
    rig.tick()
    worker.answer(worker.current[0].job_id, "retry", "engine hiccup")
    others = [rig.drop(f"o{i}.wav") for i in range(3)]
    rig.tick()
    assert [s.path for s in worker.current] == [bad]
    assert rig.state(bad) == ("working", 2)
    worker.complete(worker.current[0])
    rig.tick()
    assert [s.path for s in worker.current] == others


def test_worker_death_restart_backoff_and_attempts(rig: Rig) -> None:
    _, a = rig.busy()
    rig.workers.last.die(-11)
    rig.tick(at=10.0)
    assert rig.state(a) == ("queued", 1)
    assert rig.daemon.next_worker_start == 11.0  # 1 s after the first death
    rig.tick(at=10.99)
    assert len(rig.workers.started) == 1
    rig.tick(at=11.0)
    assert len(rig.workers.started) == 2
    rig.workers.last.die(1)  # dies again while loading
    rig.tick(at=20.0)
    assert rig.daemon.next_worker_start == 23.0  # 3 s after the second death in a row
    rig.tick(at=22.99)
    assert len(rig.workers.started) == 2
    rig.tick(at=23.0)
    assert len(rig.workers.started) == 3
    rig.ready_worker()  # a worker that loads resets the backoff
    assert rig.state(a) == ("working", 2)
    rig.workers.last.die(-9)
    rig.tick(at=30.0)
    assert rig.daemon.next_worker_start == 31.0
    rig.tick(at=31.0)
    rig.ready_worker()
    assert rig.state(a) == ("working", 3)
    rig.workers.last.die(-9)
    rig.tick(at=40.0)
    assert rig.state(a) == ("failed", 3)
    note = rig.inbox / "a.failed.txt"
    assert "worker process died (exit code -9)" in note.read_text()
    assert rig.journal.find(a).written["failed"].same_file(os.lstat(note))


def test_stop_waits_for_the_current_job(rig: Rig) -> None:
    worker, a = rig.busy()
    rig.daemon.request_stop()
    assert rig.tick(at=5.0) is None
    rig.drop("later.wav")
    worker.complete(worker.current[0])
    assert rig.tick(at=6.0) == 0
    rig.daemon.shutdown()
    assert rig.state(a) == ("done", 1)
    assert rig.state(rig.inbox / "later.wav") == ("queued", 0)  # a stop takes no new files
    assert len(worker.batches) == 1 and worker.killed
    assert rig.notes.sent[-1] == "STOPPING"


def test_stop_timeout_requeues_without_counting(rig: Rig) -> None:
    _, a = rig.busy()
    rig.daemon.request_stop()
    assert rig.tick(at=100.0) is None
    assert rig.tick(at=160.0) is None  # stop_timeout_s = 60: not yet past
    assert rig.tick(at=160.5) == 0
    rig.daemon.shutdown()
    assert rig.state(a) == ("queued", 0)


def test_second_signal_aborts_at_once(rig: Rig) -> None:
    _, a = rig.busy()
    rig.daemon.request_stop()
    assert rig.tick(at=1.0) is None
    rig.daemon.request_stop()
    assert rig.tick(at=1.5) == 0
    rig.daemon.shutdown()
    assert rig.state(a) == ("queued", 0)


def test_a_worker_that_cannot_start_stops_the_daemon_with_2(rig: Rig) -> None:
    rig.start()
    rig.worker.fatal("model 'fake-model' not found")
    assert rig.tick(at=1.0) == 2
    assert rig.journal.meta()["worker"] == "failed: model 'fake-model' not found"
    rig.daemon.shutdown()
    assert len(rig.workers.started) == 1


def test_reload_of_the_model_restarts_the_worker_once_idle(rig: Rig) -> None:
    rig.start()
    first = rig.ready_worker()
    a = rig.drop("a.wav")
    rig.tick()
    rig.data["model"]["batch_size"] = 4
    rig.write_config()
    rig.daemon.request_reload()
    rig.tick()
    assert not first.stop_requested  # busy: the current job finishes first
    b = rig.drop("b.wav")
    first.complete(first.current[0])
    rig.tick()
    assert first.stop_requested and len(first.batches) == 1  # no new batch for the old worker
    first.exit_after_stop()
    rig.tick()
    second = rig.worker
    assert second is not first and second.cfg.model.batch_size == 4
    assert rig.state(a) == ("done", 1)
    rig.ready_worker()
    assert [s.path for s in second.current] == [b]
    assert rig.notes.sent.count("RELOADING") == 1


def test_reload_of_other_settings_keeps_the_worker(rig: Rig) -> None:
    rig.start()
    worker = rig.ready_worker()
    old_watcher = rig.daemon.watcher
    rig.data["watch"]["settle_s"] = 9.0
    rig.data["output"] = {"failure_marker": False}
    rig.write_config()
    rig.daemon.request_reload()
    rig.tick()
    assert rig.daemon.cfg.watch.settle_s == 9.0 and not rig.daemon.cfg.output.failure_marker
    assert rig.daemon.watcher is not old_watcher and rig.daemon.watcher.running and not old_watcher.running
    assert not worker.stop_requested and rig.worker is worker
    rig.config.write_text("watch: {settle_s: soon}\n")
    rig.daemon.request_reload()
    rig.tick()
    assert rig.daemon.cfg.watch.settle_s == 9.0  # the bad config was not taken


def test_transient_errors_back_off_without_using_attempts(rig: Rig) -> None:
    worker, a = rig.busy()
    start = rig.wall.t
    delays = []
    for _ in range(2 * rig.cfg.service.attempts):
        worker.answer(worker.current[0].job_id, "transient", "No space left on device")
        rig.tick()
        job = rig.journal.find(a)
        assert (job.state, job.attempts) == ("queued", 0)
        delays.append(job.retry_at - rig.wall.t)
        rig.wall.t = job.retry_at - 0.5
        rig.tick()
        assert rig.journal.find(a).state == "queued"  # not due yet
        rig.wall.t = job.retry_at
        rig.tick()
        assert rig.state(a) == ("working", 1)
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0]
    rig.wall.t = start + jobs.TRANSIENT_HORIZON_S + 1
    worker.answer(worker.current[0].job_id, "transient", "No space left on device")
    rig.tick()
    assert rig.state(a)[0] == "failed"  # a week of it: given up, with a note
    assert "No space left" in (rig.inbox / "a.failed.txt").read_text()


def test_a_result_for_content_that_changed_meanwhile_is_void(rig: Rig) -> None:
    worker, a = rig.busy("a.wav", b"first half")
    (old,) = worker.current
    a.write_bytes(b"first half, second half")  # the writer was not done after all
    rig.daemon.watcher.inbox.append(settled(a, rig.inbox))
    worker.complete(old, "transcript of the first half\n")
    rig.tick()
    (new,) = worker.current
    assert new.job_id == old.job_id and new.identity.sha256 != old.identity.sha256
    assert rig.state(a) == ("working", 1)  # never done with the old content; the attempt given back
    assert new.replaceable["txt"].same_file(os.lstat(new.outputs["txt"]))  # its own earlier output
    worker.complete(new, "the whole recording\n")
    rig.tick()
    assert rig.state(a) == ("done", 1)
    assert (rig.inbox / "a.txt").read_text() == "the whole recording\n"


def test_changed_outcome_waits_for_the_new_content(rig: Rig) -> None:
    worker, a = rig.busy("a.wav", b"partial")
    worker.answer(worker.current[0].job_id, "changed", "modified while it was read")
    a.write_bytes(b"partial and the rest")
    rig.tick()
    assert rig.state(a) == ("changed", 0)
    assert len(worker.batches) == 1
    rig.daemon.watcher.inbox.append(settled(a, rig.inbox))
    rig.tick()
    assert rig.state(a) == ("working", 1) and len(worker.batches) == 2
    assert worker.current[0].identity.sha256 == settled(a, rig.inbox).identity.sha256


def test_a_failed_recording_that_changes_is_queued_again(rig: Rig) -> None:
    worker, a = rig.busy("a.wav", b"not audio")
    worker.answer(worker.current[0].job_id, "final", "cannot read audio: not a recognised audio format")
    rig.tick()
    assert rig.state(a) == ("failed", 1)
    a.write_bytes(b"a fixed recording")
    rig.daemon.watcher.inbox.append(settled(a, rig.inbox))
    rig.tick()
    assert rig.state(a) == ("working", 1)
    worker.complete(worker.current[0])
    rig.tick()
    assert rig.state(a) == ("done", 1)
    assert not (rig.inbox / "a.failed.txt").exists()  # scribed's own note removed on success


def test_once_exits_when_drained(rig: Rig) -> None:
    rig.start()
    worker = rig.ready_worker()
    rig.drop("a.wav")
    rig.drop("b.wav")
    assert rig.daemon.tick(0.0, once=True) is None
    first, second = worker.current
    worker.complete(first)
    worker.answer(second.job_id, "final", "cannot read audio")
    assert rig.daemon.tick(1.0, once=True) == 1  # one failed


def test_watchdog_is_pinged_only_while_the_worker_shows_life(rig: Rig) -> None:
    rig.start()
    worker = rig.ready_worker()
    rig.drop("a.wav")
    rig.tick(at=1.0)
    job_id = worker.current[0].job_id
    worker.progress(job_id, 1, 4)
    rig.notes.sent.clear()
    rig.tick(at=3.0)
    assert "WATCHDOG" in rig.notes.sent
    assert "STATUS=0 queued; transcribing a.wav (1/4 chunks)" in rig.notes.sent
    rig.notes.sent.clear()
    rig.tick(at=3.0 + HUNG_S)  # busy and silent for HUNG_S: a hung model must get systemd's restart
    assert "WATCHDOG" not in rig.notes.sent and any(s.startswith("STATUS=") for s in rig.notes.sent)


def test_a_touch_while_transcribing_is_transcribed_again_not_lost(rig: Rig) -> None:
    worker, a = rig.busy()
    os.utime(a, ns=(5_000_000_000, 5_000_000_000))  # same content, new mtime: the watcher reports it
    rig.daemon.watcher.inbox.append(settled(a, rig.inbox))
    worker.answer(worker.current[0].job_id, "changed", "modified while it was transcribed")
    rig.tick()
    assert rig.state(a) == ("working", 1) and len(worker.batches) == 2  # not left waiting for a report
    assert worker.current[0].identity.same_file(os.lstat(a))


class FakeDesktop:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.closed = False

    def transcript_ready(self, path: Path) -> bool:
        self.sent.append(("ready", path.name))
        return True

    def transcription_failed(self, path: Path, reason: str = "") -> bool:
        self.sent.append(("failed", path.name))
        return True

    def close(self) -> None:
        self.closed = True


def test_desktop_notifications_only_for_jobs_finished_for_good(tmp_path: Path) -> None:
    rig = Rig(tmp_path, service={"attempts": 2, "notify": "desktop"})
    fake = FakeDesktop()
    rig.daemon.desktop.notifier = fake  # the real one needs a session bus (tests/unit/system/test_desktop.py)
    worker, _good = rig.busy("good.wav")
    worker.complete(worker.current[0])
    assert rig.tick() is None
    assert fake.sent == [("ready", "good.wav")]
    bad = rig.drop("bad.wav")
    assert rig.tick() is None and worker.current[0].path == bad
    worker.answer(worker.current[0].job_id, "retry")  # one attempt of two: no notification yet
    assert rig.tick() is None and fake.sent == [("ready", "good.wav")]
    assert rig.tick() is None and worker.current[0].path == bad
    worker.answer(worker.current[0].job_id, "final", "cannot read audio")
    assert rig.tick() is None
    assert fake.sent == [("ready", "good.wav"), ("failed", "bad.wav")]
    rig.daemon.shutdown()
    assert fake.closed
