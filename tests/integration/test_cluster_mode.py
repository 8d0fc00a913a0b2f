"""Cluster mode end to end: a real redis-server, three ``scribed worker`` processes with the tiny
model, a coordinator ``scribed run``; faults injected while 200 recordings go through. And
single-host mode, which needs no broker at all. Waits are bounded polls of real conditions.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster_harness import Cluster
from e2e_helpers import Env, wait_for, wav

from cluster_helpers import need_redis

N = 200


class Writes:
    """Every time a transcript name is placed in the inbox (inotify: created by link(), or moved
    there by a rename over it), and the first identity it had."""

    def __init__(self, folder: Path) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.placed: Counter[str] = Counter()
        self.first: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event):  # type: ignore[no-untyped-def]
                outer.seen(event.src_path)

            def on_moved(self, event):  # type: ignore[no-untyped-def]
                outer.seen(event.dest_path)

        self.observer = Observer()
        self.observer.schedule(Handler(), str(folder), recursive=False)
        self.observer.start()

    def seen(self, path: str | bytes) -> None:
        p = Path(os.fsdecode(path))
        if p.suffix != ".txt" or p.name.startswith("."):
            return
        with self._lock:
            self.placed[p.name] += 1
            try:
                st = os.lstat(p)
                self.first.setdefault(p.name, (st.st_ino, st.st_mtime_ns))
            except FileNotFoundError:
                pass

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(30)


@pytest.fixture
def cluster(tiny_model: Path, tmp_path: Path, allow_loopback: None) -> Iterator[Cluster]:
    need_redis()
    c = Cluster(tmp_path, tiny_model, visibility_timeout_s=8, prefetch=2, probe=True)
    c.redis.start()
    yield c
    c.gate.release()
    c.stop_all()


def sources(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.glob("*.wav")}


@pytest.mark.slow
def test_200_recordings_each_transcribed_once_through_worker_broker_and_coordinator_crashes(
        cluster: Cluster) -> None:
    names = ["held-000.wav", "probe-001.wav", *(f"rec {i:03d}.wav" for i in range(2, N))]
    names[150] = "held-150.wav"
    waves = [names[:70], names[70:135], names[135:]]  # each fault strikes while a wave is in flight
    staging = cluster.tmp / "staging"
    for i, name in enumerate(names):
        wav(staging / name, seconds=0.5, seed=i)
    originals = sources(staging)

    def deliver(wave: list[str]) -> None:  # as sync clients do: complete files renamed into place
        for name in wave:
            os.rename(staging / name, cluster.inbox / name)

    def in_flight() -> bool:
        return "working" in cluster.states().values()

    cluster.start_workers(3)
    writes = Writes(cluster.inbox)
    try:
        coordinator = cluster.start_coordinator()
        deliver(waves[0])
        # 1. A worker killed (-9) while it provably holds a job (inside run_jobs, before writing):
        #    the broker hands the job to another worker once the visibility timeout has passed.
        holder = int(str(wait_for(cluster.gate.entered, timeout=300, what="a worker holding held-000")).split()[0])
        victim = next(w for w in cluster.workers if w.pid == holder)
        cluster.kill(victim)
        cluster.gate.release()
        wait_for(lambda: cluster.states().get("held-000.wav") == "done", timeout=300, what="held-000 redelivered")
        assert coordinator.poll() is None  # the broker did it, not a restart of the coordinator

        # 2. The broker killed (-9) and started again on its append-only file, with jobs in flight.
        deliver(waves[1])
        wait_for(in_flight, timeout=120, what="jobs of the second wave in flight")
        cluster.redis.kill()
        cluster.redis.start()

        # 3. The coordinator killed (-9) and started again while a worker provably holds a job:
        #    the new coordinator publishes it again and picks up the result of the first copy.
        wait_for(lambda: cluster.done() >= 135, timeout=600, what="the second wave done")
        cluster.gate.path.unlink()  # hold again
        deliver(waves[2])
        wait_for(lambda: "held-150" in cluster.gate.entered(), timeout=300, what="a worker holding held-150")
        cluster.kill(coordinator)
        cluster.start_coordinator()
        dropped = "held-150.wav: another worker is transcribing it; dropped this copy"
        wait_for(lambda: dropped in cluster.logs(tail=None), timeout=300, what="the copy of held-150 dropped")
        cluster.gate.release()

        wait_for(lambda: cluster.done() == N, timeout=600, what=f"all {N} done")
        wait_for(lambda: len(writes.placed) == N, timeout=30, what="every transcript seen")
    finally:
        writes.stop()
    codes = cluster.stop_all()
    logs = cluster.logs(tail=None)

    assert cluster.states() == dict.fromkeys(names, "done")
    transcripts = {p.name for p in cluster.inbox.glob("*.txt")}
    assert transcripts == {Path(n).stem + ".txt" for n in names}, "a transcript is missing or extra"
    assert not list(cluster.inbox.glob("*.failed.txt"))
    assert set(writes.placed.values()) == {1}, [n for n, c in writes.placed.items() if c != 1]
    for name, (ino, mtime) in writes.first.items():
        st = os.lstat(cluster.inbox / name)
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{name} was replaced"
    written = Counter(Path(m).stem for m in re.findall(r"transcribed (/\S.*?\.wav) \(", logs))
    assert set(written) == {Path(n).stem for n in names} and set(written.values()) == {1}, \
        [n for n, c in written.items() if c != 1]
    assert "cannot write transcript" not in logs
    assert sources(cluster.inbox) == originals, "a recording changed"
    holder_log = (cluster.tmp / f"worker{cluster.workers.index(victim)}.log").read_text()
    assert "held-000" not in " ".join(re.findall(r"transcribed .*", holder_log))  # another worker did it
    assert re.search(r"requeued .*held-150\.wav", logs)  # the journal sent it again; the copy was dropped

    # The network rule in cluster mode: the broker is reachable, nothing else is.
    assert cluster.gate.probe("worker") == cluster.gate.probe("daemon") == "NetworkBlockedError"
    assert "network: blocked in-process except the broker 127.0.0.1:" in logs
    # The broker password never reaches a log line (ours, Celery's or Redis's).
    assert cluster.redis.password not in logs + cluster.redis.log()
    assert codes["coordinator1"] == 0 and codes["coordinator0"] == -9
    assert sorted(c for n, c in codes.items() if n.startswith("worker")) == [-9, 0, 0]


def test_single_host_mode_needs_no_broker_and_opens_no_socket(tiny_model: Path, tmp_path: Path) -> None:
    env = Env(tmp_path, tiny_model)
    hook = tmp_path / "no-cluster"
    hook.mkdir()
    # Any import of the cluster's libraries fails in these processes: single-host mode needs none.
    (hook / "no_cluster_libraries.py").write_text(
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('celery', 'kombu', 'redis'):\n"
        "            raise ImportError(f'{name} imported in single-host mode')\n"
        "sys.meta_path.insert(0, Refuse())\n")
    gate = env.hold(probe=True)
    gate.release()  # probe, but do not hold
    (tmp_path / "hook" / "sitecustomize.py").write_text(
        "import no_cluster_libraries\n" + (tmp_path / "hook" / "sitecustomize.py").read_text())
    env.python_path.insert(0, str(hook))
    env.drop("probe.wav")
    env.drop("held.wav")
    result = env.run("run", "--once")
    assert result.returncode == 0, result.stderr
    assert env.states() == {"probe.wav": "done", "held.wav": "done"}
    assert gate.probe("daemon") == gate.probe("worker") == "NetworkBlockedError"
    assert "imported in single-host mode" not in result.stderr
    assert "network: blocked in-process; " in result.stderr
    assert yaml.safe_load(env.config.read_text()).get("cluster") is None
