"""`scribed run` as a user runs it: a real process, real watchdog observers on real folders, the
trained tiny Qwen3-ASR model in a spawned worker, real SQLite. Waits are bounded condition polls.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_helpers import Env, Gate, sha, wait_for, wav


@pytest.fixture
def env(tiny_model: Path, tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, tiny_model)
    yield e
    e.stop_all()


@pytest.fixture
def held(tiny_model: Path, tmp_path: Path) -> Iterator[tuple[Env, Gate]]:
    """An env whose worker holds recordings named ``held*`` until the test releases the gate, so a
    test can act while a job is provably in progress, whatever the machine's speed."""
    e = Env(tmp_path, tiny_model)
    gate = e.hold()
    yield e, gate
    gate.release()
    e.stop_all()


def test_run_once_handles_a_real_folder(env: Env, speech_dir: Path) -> None:
    inbox = env.inbox
    shutil.copy(speech_dir / "en-jfk" / "jfk.flac", inbox / "jfk.flac")
    (inbox / "proj" / "sub").mkdir(parents=True)
    shutil.copy(speech_dir / "zh-funasr" / "asr_example.mp3", inbox / "proj" / "sub" / "20240521_产品需求会_v2.mp3")
    shutil.copy(speech_dir / "smoke-firered2s" / "hello_en.wav", inbox / "proj" / "team sync.wav")
    shutil.copy(speech_dir / "smoke-firered2s" / "hello_zh.wav", inbox / "proj" / ".syncthing.x.wav.tmp")
    shutil.copy(speech_dir / "smoke-firered2s" / "hello_zh.wav", inbox / "proj" / "partial.mp3.part")
    shutil.copy(speech_dir / "smoke-firered2s" / "hello_zh.wav", inbox / "theirs.wav")
    (inbox / "theirs.txt").write_text("a transcript somebody else wrote\n")
    (inbox / "broken.m4a").write_bytes(os.urandom(3000))
    sources = {p: sha(p) for p in inbox.rglob("*") if p.is_file()}

    result = env.run("run", "--once")
    assert result.returncode == 1, result.stderr  # broken.m4a failed
    assert (inbox / "jfk.txt").read_text() == "hello world\n"
    assert (inbox / "proj" / "sub" / "20240521_产品需求会_v2.txt").exists()
    assert (inbox / "proj" / "team sync.txt").exists()
    assert (inbox / "theirs.txt").read_text() == "a transcript somebody else wrote\n"
    assert not (inbox / "proj" / ".syncthing.x.txt").exists() and not (inbox / "proj" / "partial.txt").exists()
    failed = (inbox / "broken.failed.txt").read_text()
    assert "broken.m4a" in failed and "not a recognised audio" in failed
    assert {p: sha(p) for p in sources} == sources, "a source file changed"
    states = env.states()
    assert states == {"jfk.flac": "done", "20240521_产品需求会_v2.mp3": "done", "team sync.wav": "done",
                      "theirs.wav": "skipped", "broken.m4a": "failed"}

    # A second pass transcribes nothing again; a changed recording is transcribed again.
    stamp = (inbox / "jfk.txt").stat().st_mtime_ns
    result = env.run("run", "--once")
    assert (inbox / "jfk.txt").stat().st_mtime_ns == stamp
    shutil.copy(speech_dir / "en-librispeech" / "1272-128104-0000.flac", inbox / "jfk.flac")
    result = env.run("run", "--once")
    assert (inbox / "jfk.txt").stat().st_mtime_ns != stamp
    status = env.run("status")
    assert "3 done, 1 failed, 1 skipped" in status.stdout, status.stdout
    assert "broken.m4a" in status.stdout and "not running" in status.stdout


def test_live_daemon_with_sync_clients_status_and_sigterm(env: Env, tmp_path: Path) -> None:
    polled = tmp_path / "nas"
    polled.mkdir()
    config = yaml.safe_load(env.config.read_text())
    config["watch"]["folders"].append(str(polled))
    env.config.write_text(yaml.safe_dump(config))
    daemon = env.start()
    staging = tmp_path / "staging"
    # rsync: hidden temp name in the target folder, then rename into place.
    wav(staging / "a.wav", seed=1)
    shutil.copy(staging / "a.wav", env.inbox / ".rsync-rec.wav.Xy12Ab")
    os.rename(env.inbox / ".rsync-rec.wav.Xy12Ab", env.inbox / "rsync-rec.wav")
    # Syncthing and Nextcloud temp names.
    shutil.copy(staging / "a.wav", env.inbox / ".syncthing.st-rec.wav.tmp")
    os.rename(env.inbox / ".syncthing.st-rec.wav.tmp", env.inbox / "st-rec.wav")
    shutil.copy(staging / "a.wav", env.inbox / "nc-rec.wav.part")
    os.rename(env.inbox / "nc-rec.wav.part", env.inbox / "nc-rec.wav")
    # cp/SMB: slow chunked write under the final name.
    data = (staging / "a.wav").read_bytes()
    with open(env.inbox / "slow copy.wav", "wb") as fh:
        for i in range(0, len(data), len(data) // 5 + 1):
            fh.write(data[i:i + len(data) // 5 + 1])
            fh.flush()
            os.fsync(fh.fileno())
    # A file in a nested folder.
    wav(env.inbox / "2024" / "q3" / "nested.wav", seed=2)
    expected = {"rsync-rec.wav", "st-rec.wav", "nc-rec.wav", "slow copy.wav", "nested.wav"}
    wait_for(lambda: all(env.states().get(n) == "done" for n in expected), what="sync-client files done")
    status = env.run("status")
    assert status.returncode == 0 and "running (pid" in status.stdout, status.stdout
    assert "network:   blocked in-process" in status.stdout
    assert "5 done" in status.stdout
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    for name in expected:
        found = list(env.inbox.rglob(Path(name).stem + ".txt"))
        assert len(found) == 1 and found[0].read_text() == "hello world\n"
    names = {p.name for p in env.inbox.rglob("*")}
    assert not any(".tmp" in n or ".part" in n or n.startswith(".") for n in names), names
    assert len(env.states()) == 5  # temp names never became jobs
    log = env.log()
    assert "hello world" not in log  # transcript text never logged at INFO


def test_burst_of_200_files_each_once(env: Env) -> None:
    daemon = env.start()
    staging = env.tmp / "staging"
    for i in range(200):
        wav(staging / f"memo {i:03d}.wav", seconds=1.0, seed=i)
    for i in range(200):  # renames are atomic: each arrives complete
        os.rename(staging / f"memo {i:03d}.wav", env.inbox / f"memo {i:03d}.wav")
    wait_for(lambda: sum(s == "done" for s in env.states().values()) == 200, timeout=600, what="200 done")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    txts = sorted(env.inbox.glob("*.txt"))
    assert len(txts) == 200 and all(t.read_text() == "hello world\n" for t in txts)
    with env.db() as db:
        assert db.execute("SELECT MAX(attempts) FROM jobs").fetchone()[0] == 1


@pytest.mark.parametrize("point", ["queued", "working"])
@pytest.mark.parametrize("victim", ["daemon", "worker"])
def test_kill_9_then_restart_transcribes_exactly_once(held: tuple[Env, Gate], victim: str, point: str) -> None:
    env, gate = held
    wav(env.tmp / "staging" / "held meeting.wav", seconds=4.0, seed=3)
    wav(env.tmp / "staging" / "short.wav")
    if point == "queued":
        # Files present at start: they are queued while the worker is still loading the model.
        for name in ("held meeting.wav", "short.wav"):
            os.rename(env.tmp / "staging" / name, env.inbox / name)
        daemon = subprocess.Popen(env.cmd("run"), stdout=open(env.tmp / "daemon-first.log", "w"),  # noqa: SIM115
                                  stderr=subprocess.STDOUT, env=env.env)
        env.procs.append(daemon)
        wait_for(lambda: "queued" in env.states().values(), what="a queued job")
        wait_for(lambda: env.meta().get("worker_pid") and env.meta().get("pid") == daemon.pid, what="worker pid")
    else:
        daemon = env.start()
        for name in ("held meeting.wav", "short.wav"):
            os.rename(env.tmp / "staging" / name, env.inbox / name)
        wait_for(gate.entered, what="a job in progress")
        assert env.states()["held meeting.wav"] == "working"
    if victim == "daemon":
        worker_pid = env.meta().get("worker_pid")
        daemon.kill()
        daemon.wait(30)
        wait_for(lambda: not _alive(worker_pid), timeout=30, what="orphan worker gone")
        gate.release()
        daemon = env.start()
    else:
        os.kill(env.meta()["worker_pid"], signal.SIGKILL)
        gate.release()
    wait_for(lambda: env.states() == {"held meeting.wav": "done", "short.wav": "done"}, timeout=300,
             what="both done after the kill")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert sorted(p.name for p in env.inbox.iterdir()) == ["held meeting.txt", "held meeting.wav",
                                                           "short.txt", "short.wav"]
    assert (env.inbox / "held meeting.txt").read_text() == "hello world\n"
    with env.db() as db:
        rows = db.execute("SELECT state, attempts FROM jobs").fetchall()
    assert all(state == "done" and 1 <= attempts <= 2 for state, attempts in rows)
    if victim == "worker":
        assert "worker died" in env.log()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_read_only_folder_fails_clearly_and_the_rest_goes_on(env: Env) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr not available")
    locked = env.inbox / "locked"
    wav(locked / "board.wav")
    wav(env.inbox / "open.wav")
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("filesystem does not support the immutable attribute")
    try:
        result = env.run("run", "--once")
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert result.returncode == 1
    assert (env.inbox / "open.txt").read_text() == "hello world\n"
    assert sorted(p.name for p in locked.iterdir()) == ["board.wav"]
    assert env.states() == {"board.wav": "failed", "open.wav": "done"}
    assert "cannot write transcript" in result.stderr and "board.wav" in result.stderr
    assert "cannot write transcript" in env.run("status").stdout


def test_sighup_reloads_config_and_keeps_running_on_a_bad_one(env: Env) -> None:
    daemon = env.start()
    later = env.tmp / "later"
    later.mkdir()
    good = yaml.safe_load(env.config.read_text())
    good["watch"]["folders"].append(str(later))
    env.config.write_text(yaml.safe_dump(good))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in env.log(), what="reload")
    env.drop("x.wav", folder=later)
    wait_for(lambda: env.states().get("x.wav") == "done", what="file in the new folder done")
    env.config.write_text("watch: {settle_s: soon}\n")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reload failed" in env.log(), what="bad reload reported")
    assert daemon.poll() is None
    assert "At 'watch.settle_s': expected a number" in env.log()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0


def _start_with_a_held_job(env: Env, gate: Gate) -> subprocess.Popen:
    """A running daemon whose worker is provably busy with held.wav (until the gate opens)."""
    daemon = env.start()
    env.drop("held.wav")
    wait_for(gate.entered, what="held.wav in progress")
    assert env.states().get("held.wav") == "working"
    return daemon


def test_file_deleted_while_queued_is_dropped(held: tuple[Env, Gate]) -> None:
    env, gate = held
    daemon = _start_with_a_held_job(env, gate)
    env.drop("short.wav")
    wait_for(lambda: env.states().get("short.wav") == "queued", what="short file queued")
    (env.inbox / "short.wav").unlink()
    gate.release()
    wait_for(lambda: env.states() == {"held.wav": "done", "short.wav": "gone"}, timeout=300,
             what="held done, short dropped")
    assert not (env.inbox / "short.txt").exists()
    assert "disappeared before it was transcribed" in env.log()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0


def test_sigterm_lets_the_current_file_finish(held: tuple[Env, Gate]) -> None:
    env, gate = held
    daemon = _start_with_a_held_job(env, gate)
    daemon.send_signal(signal.SIGTERM)
    wait_for(lambda: "stop requested: finishing the current job" in env.log(), what="the stop noticed")
    assert daemon.poll() is None
    gate.release()
    assert daemon.wait(120) == 0
    assert env.states() == {"held.wav": "done"}
    assert (env.inbox / "held.txt").read_text() == "hello world\n"


def test_odd_names_and_a_moved_recording_keep_their_transcripts(env: Env) -> None:
    daemon = env.start()
    odd = os.fsdecode(b"r\xe9union \xff")  # not UTF-8: the file system allows it, so must scribed
    os.rename(wav(env.tmp / "staging" / "odd.wav"), env.inbox / f"{odd}.wav")
    wait_for(lambda: (env.inbox / f"{odd}.txt").exists(), what="odd name transcribed")
    assert (env.inbox / f"{odd}.txt").read_text() == "hello world\n"
    (env.inbox / "2024").mkdir()
    os.rename(env.inbox / f"{odd}.wav", env.inbox / "2024" / "renamed.wav")
    wait_for(lambda: (env.inbox / "2024" / "renamed.txt").exists(), what="transcript followed the recording")
    assert not (env.inbox / f"{odd}.txt").exists()

    def rows() -> list[tuple[str, str, int]]:
        with contextlib.closing(env.db()) as db:
            return [(Path(p).name, s, a) for p, s, a in db.execute("SELECT path, state, attempts FROM jobs")]

    # the transcript is moved first and the journal records it just after: wait for both
    wait_for(lambda: rows() == [("renamed.wav", "done", 1)], what="the journal to record the move")
    assert rows() == [("renamed.wav", "done", 1)]  # not transcribed again
    assert env.log().count("transcribing ") == 1
    status = env.run("status")
    assert status.returncode == 0 and "1 done" in status.stdout
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert "Traceback" not in env.log()


def test_a_second_daemon_on_the_same_state_refuses_with_4(env: Env) -> None:
    daemon = env.start()
    second = env.run("run", timeout=120)
    assert second.returncode == 4, second.stderr
    assert f"another scribed daemon (pid {daemon.pid}) is already running" in second.stderr
    assert daemon.poll() is None and env.meta()["pid"] == daemon.pid  # the first one goes on, untouched
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0


def test_two_daemons_on_one_shared_inbox_race_without_a_failure_note(tiny_model: Path, tmp_path: Path) -> None:
    """Two people's scribed (own state, own worker) watch the same synced inbox. A's worker is held
    with the recording while B transcribes it; when A then goes to write, the transcript is B's:
    A skips the recording (as it would have had it seen B's file first) -- no NAME.failed.txt that
    the sync client would carry to everyone, no error in A's log, B's transcript untouched."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Env(tmp_path / "a", tiny_model)
    gate = a.hold()
    b = Env(tmp_path / "b", tiny_model, watch={"folders": [str(a.inbox)]})
    try:
        a.start()
        a.drop("held-standup.wav")
        wait_for(gate.entered, what="A's worker holding the recording")
        b.start()
        wait_for(lambda: b.states().get("held-standup.wav") == "done", what="B done")
        theirs = (a.inbox / "held-standup.txt").read_bytes()
        gate.release()
        wait_for(lambda: a.states().get("held-standup.wav") == "skipped", what="A skipped")
        _state, _attempts, error = a.job("held-standup.wav")
        assert "appeared while it was transcribed" in error
        assert not (a.inbox / "held-standup.failed.txt").exists()
        assert (a.inbox / "held-standup.txt").read_bytes() == theirs == b"hello world\n"
        assert " ERROR " not in a.log() and "skipped " in a.log()
    finally:
        gate.release()
        a.stop_all()
        b.stop_all()


def test_idle_worker_frees_the_model_and_reloads_on_the_next_file(tiny_model: Path, tmp_path: Path) -> None:
    env = Env(tmp_path, tiny_model, model={"idle_unload_min": 0.02})  # 1.2 s of idleness
    try:
        daemon = env.start()
        env.drop("first.wav")
        wait_for(lambda: env.states().get("first.wav") == "done", what="first done")
        wait_for(lambda: env.meta().get("worker") == "idle (model unloaded)", what="model unloaded")
        env.drop("second.wav")
        wait_for(lambda: env.states().get("second.wav") == "done", what="second done after reload")
        log = env.log()
        assert "model unloaded after" in log and "model reloaded in" in log
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        env.stop_all()
