"""Tests for scribed.daemon.cluster: the coordinator's handle on a real redis-server (loopback, an
ACL user with a password). What a worker would do is done here with the worker's own ledger
(:class:`scribed.engine.cluster_ledger.Ledger`); published tasks are read back from the queue
as Celery stored them."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_helpers import RedisServer, cluster_section, run_python
from scribed import protocol, wire
from scribed.config import Config, parse_config
from scribed.daemon import cluster, cluster_link
from scribed.daemon.worker import Exited
from scribed.engine.cluster_ledger import Ledger
from scribed.identity import FileIdentity
from scribed.protocol import JobSpec, Result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path, allow_loopback: None) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis").start()
    yield s
    s.stop()


def config(tmp_path: Path, server: RedisServer, **cluster_keys: object) -> Config:
    return parse_config({"service": {"state_dir": str(tmp_path / "state")},
                         "cluster": cluster_section(server, **{"visibility_timeout_s": 60, **cluster_keys})})


@pytest.fixture
def link(tmp_path: Path, server: RedisServer) -> Iterator[cluster_link.Link]:
    lk = cluster_link.Link(config(tmp_path, server))
    yield lk
    lk.close()


def handle(tmp_path: Path, server: RedisServer, link: cluster_link.Link, clock: Clock | None = None,
           **cluster_keys: object) -> cluster.ClusterHandle:
    h = cluster.ClusterHandle(config(tmp_path, server, **cluster_keys), link, clock=clock or time.monotonic)
    assert isinstance(h.poll(0)[0], protocol.Ready)
    return h


def spec(tmp_path: Path, job_id: int) -> JobSpec:
    folder = tmp_path / "inbox"
    folder.mkdir(exist_ok=True)
    path = folder / f"rec{job_id}.wav"
    path.write_bytes(b"RIFF" + bytes([job_id]) * 40)
    return JobSpec(job_id, path, folder, FileIdentity.of(os.lstat(path), f"{job_id:064x}"),
                   {"txt": path.with_suffix(".txt")}, path.with_suffix(".failed.txt"))


def published(server: RedisServer, queue: str = "scribed") -> list[dict]:
    """Every task payload waiting in the queue (taken off it), as the worker would receive it."""
    redis = server.client()
    out = []
    while (raw := redis.rpop(queue)) is not None:
        message = json.loads(raw)
        assert message["content-type"] == "application/json" and message["headers"]["task"] == wire.TASK_NAME
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        out.append(args[0])
    return out


def worker_ledger(server: RedisServer, name: str = "scribed-1@gpu1") -> Ledger:
    return Ledger(server.client(), wire.Keys("scribed"), name)


def live_workers(server: RedisServer, n: int) -> None:
    redis = server.client()
    now = float(redis.time()[0])
    redis.zadd(wire.Keys("scribed").workers, {f"w{i}": now for i in range(n)})


def test_ready_once_the_broker_answers(tmp_path: Path, server: RedisServer, link: cluster_link.Link) -> None:
    h = cluster.ClusterHandle(config(tmp_path, server), link)
    assert not h.ready
    events = h.poll(0)
    assert len(events) == 1 and isinstance(events[0], protocol.Ready)
    assert "scribed" in events[0].device and events[0].pid == os.getpid() == h.pid
    assert h.ready and h.alive and h.busy == () and h.poll(0) == []


def test_jobs_go_out_in_tasks_of_prefetch_jobs(tmp_path: Path, server: RedisServer, link: cluster_link.Link) -> None:
    h = handle(tmp_path, server, link, prefetch=2)
    specs = [spec(tmp_path, i) for i in range(1, 6)]
    assert h.send_jobs(specs)
    tasks = [wire.decode_task(p) for p in published(server)]
    assert sorted(len(t.jobs) for t in tasks) == [1, 2, 2]
    sent = {s.job_id: (k, s) for t in tasks for k, s in t.jobs}
    assert {i: s for i, (_, s) in sent.items()} == {s.job_id: s for s in specs}
    assert sent[1][0] == wire.job_key(link.coordinator, 1, 0, specs[0].identity)
    assert h.in_flight == (1, 2, 3, 4, 5)


def test_busy_only_when_the_window_is_full(tmp_path: Path, server: RedisServer, link: cluster_link.Link) -> None:
    clock = Clock()
    h = handle(tmp_path, server, link, clock, prefetch=1)
    assert h.capacity == 2  # no live worker counts as one
    assert h.send_jobs([spec(tmp_path, 1)]) and h.busy == ()
    assert h.send_jobs([spec(tmp_path, 2)]) and h.busy == (1, 2)
    live_workers(server, 3)
    clock.now += cluster.WORKERS_EVERY_S
    h.poll(0)
    assert h.capacity == 6 and h.busy == ()


def test_a_result_comes_once_as_this_host_sees_the_files(tmp_path: Path, server: RedisServer,
                                                         link: cluster_link.Link) -> None:
    h = handle(tmp_path, server, link)
    job = spec(tmp_path, 1)
    assert h.send_jobs([job])
    (key, _), = wire.decode_task(published(server)[0]).jobs
    txt = job.outputs["txt"]
    txt.write_text("hello\n")
    st = os.lstat(txt)
    worker_view = FileIdentity(st.st_dev + 3, st.st_ino, st.st_size, st.st_mtime_ns)  # another host's device number
    worker = worker_ledger(server)
    worker.progress(key, 1, 2)
    assert h.poll(0) == [protocol.Progress(1, 1, 2)]
    assert h.poll(0) == []  # unchanged progress: nothing new
    assert worker.store(key, link.coordinator, Result(1, "done", None, {"txt": worker_view}, 2.5, "English"))
    events = h.poll(0.5)
    assert events == [Result(1, "done", None, {"txt": FileIdentity.of(st)}, 2.5, "English")]
    assert h.poll(0) == [] and h.in_flight == ()
    # Acknowledged: the same job dispatched again (a retry) is a new dispatch with a new key.
    assert h.send_jobs([job])
    (again, _), = wire.decode_task(published(server)[0]).jobs
    assert again == wire.job_key(link.coordinator, 1, 1, job.identity) != key


def test_a_restarted_daemon_picks_up_the_result_of_its_earlier_dispatch(tmp_path: Path, server: RedisServer,
                                                                        link: cluster_link.Link) -> None:
    first = handle(tmp_path, server, link)
    job = spec(tmp_path, 4)
    assert first.send_jobs([job])
    events = first.stop(5)
    assert events == [Exited(0, (4,))] and not first.alive and first.poll(0) == []
    (key, _), = wire.decode_task(published(server)[0]).jobs
    assert worker_ledger(server).store(key, link.coordinator, Result(4, "done"))  # finished while we were away

    second = handle(tmp_path, server, cluster_link.Link(config(tmp_path, server)))
    assert second.send_jobs([job])  # the daemon requeued it; same job, same content, same key
    (same, _), = wire.decode_task(published(server)[0]).jobs
    assert same == key
    assert second.poll(0) == [Result(4, "done")]


def test_request_stop_then_exited(tmp_path: Path, server: RedisServer, link: cluster_link.Link) -> None:
    h = handle(tmp_path, server, link)
    assert h.send_jobs([spec(tmp_path, 1), spec(tmp_path, 2)])
    h.request_stop()
    assert not h.send_jobs([spec(tmp_path, 3)])
    assert h.poll(0) == [Exited(0, (1, 2))]


def test_keepalive_while_jobs_wait(tmp_path: Path, server: RedisServer, link: cluster_link.Link) -> None:
    clock = Clock()
    h = handle(tmp_path, server, link, clock)
    assert h.send_jobs([spec(tmp_path, 1)])
    assert h.poll(0) == []
    clock.now += cluster.KEEPALIVE_S
    assert h.poll(0) == [protocol.Progress(1, 0, 0)]  # the watchdog follows the broker, not a worker


def test_a_job_nobody_takes_is_published_again_while_a_worker_lives(tmp_path: Path, server: RedisServer,
                                                                     link: cluster_link.Link) -> None:
    clock = Clock()
    h = handle(tmp_path, server, link, clock, visibility_timeout_s=30)
    assert h.send_jobs([spec(tmp_path, 1)])
    first = published(server)
    clock.now += 31
    h.poll(0)
    assert published(server) == []  # no worker alive: the waiting message is as good as a copy
    live_workers(server, 1)
    clock.now += cluster.WORKERS_EVERY_S
    h.poll(0)
    assert published(server) == first  # the same job, the same key: it cannot run twice
    worker_ledger(server).claim(wire.decode_task(first[0]).jobs[0][0])
    clock.now += 31
    h.poll(0)
    assert published(server) == []  # a worker holds it: nothing to do


def test_the_broker_away_and_back(tmp_path: Path, server: RedisServer, link: cluster_link.Link) -> None:
    h = handle(tmp_path, server, link)
    assert h.send_jobs([spec(tmp_path, 1)])
    (key, _), = wire.decode_task(published(server)[0]).jobs
    server.kill()
    assert h.poll(0) == [] and not h.ready
    started = time.monotonic()
    assert h.poll(0.3) == []  # waits its timeout (the loop must not spin), never raises
    assert 0.25 <= time.monotonic() - started < 5
    assert not h.send_jobs([spec(tmp_path, 2)])
    server.start()  # append-only file: the waiting job survived
    assert worker_ledger(server).store(key, link.coordinator, Result(1, "done"))
    deadline = time.monotonic() + 30
    events: list = []
    while not events and time.monotonic() < deadline:
        events = h.poll(0.2)  # reconnects after its back-off, then reads the result
    assert events == [Result(1, "done")] and h.ready  # no second Ready


def test_wrong_credentials_are_fatal(tmp_path: Path, server: RedisServer) -> None:
    bad = tmp_path / "wrong-password"
    bad.write_text("not it\n")
    bad.chmod(0o600)
    lk = cluster_link.Link(config(tmp_path, server, password_file=str(bad)))
    try:
        events = cluster.ClusterHandle(config(tmp_path, server), lk).poll(0)
        assert len(events) == 1 and isinstance(events[0], protocol.Fatal)
        assert "refused" in events[0].message and "not it" not in events[0].message
    finally:
        lk.close()


def test_an_unreadable_result_counts_as_a_failed_attempt(tmp_path: Path, server: RedisServer,
                                                         link: cluster_link.Link) -> None:
    h = handle(tmp_path, server, link)
    assert h.send_jobs([spec(tmp_path, 1)])
    (key, _), = wire.decode_task(published(server)[0]).jobs
    server.client().set(wire.Keys("scribed").result(key), "{not json")
    (result,) = h.poll(0)
    assert isinstance(result, Result) and result.outcome == "retry" and "unreadable" in (result.error or "")


def test_the_coordinator_id_is_kept_beside_the_journal(tmp_path: Path) -> None:
    cfg = parse_config({"service": {"state_dir": str(tmp_path / "state")}})
    first = cluster_link.coordinator_id(cfg)
    assert first == cluster_link.coordinator_id(cfg) and len(first) == 16
    assert (tmp_path / "state" / "cluster-id").stat().st_mode & 0o777 == 0o600


def test_the_factory_checks_settings_and_allows_the_broker_at_start(tmp_path: Path) -> None:
    # In a child: the network guard's allow-list is process-wide and set once.
    proc = run_python(
        f"""
        from scribed.config import parse_config
        from scribed.daemon.cluster import cluster_worker_factory
        from scribed.errors import ConfigError
        from scribed.system import netguard
        cfg = parse_config({{"service": {{"state_dir": {str(tmp_path / "state")!r}}},
                            "cluster": {{"broker": "redis://127.0.0.1:6399/0"}}}})
        factory = cluster_worker_factory(cfg)
        h = factory(cfg)
        print(type(h).__name__, netguard.allowed_endpoint().port)
        try:
            cluster_worker_factory(parse_config({{"cluster": {{"broker": "redis://:pw@127.0.0.1/0"}}}}))
        except ConfigError as exc:
            print("refused", "pw" not in str(exc))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ClusterHandle", "6399", "refused", "True"]
