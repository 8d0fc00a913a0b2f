"""Tests for scribed.engine.cluster_worker: the worker's handling of messages, run in this process
with the real tiny model and a real redis-server (the Celery worker around it runs in
tests/integration/test_cluster.py). Messages are what the coordinator publishes
(:func:`scribed.wire.encode_task`) and cross JSON as they would cross the broker."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from e2e_helpers import sha, wav

from cluster_helpers import RedisServer, cluster_section
from scribed import wire
from scribed.config import Config, parse_config
from scribed.engine import cluster_jobs, runner
from scribed.engine.cluster_ledger import Ledger
from scribed.engine.cluster_worker import Lease, Runtime, task_body, worker_command
from scribed.engine.pipeline import Pipeline
from scribed.identity import FileIdentity
from scribed.protocol import JobSpec

COORD = "00000000c0ffee00"


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path) -> Pipeline:
    return runner.open_pipeline(parse_config({"model": {"id": str(tiny_model), "device": "cpu"},
                                              "policy": {"block_network": False}}))  # no guard in pytest


class Env:
    def __init__(self, tmp: Path, server: RedisServer, pipeline: Pipeline, **model: object) -> None:
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.server = server
        self.cfg: Config = parse_config({"watch": {"folders": [str(self.inbox)]},
                                         "model": {"idle_unload_min": 30, **model},
                                         "cluster": cluster_section(server)})
        self.keys = wire.Keys("scribed")
        self.ledger = Ledger(server.client(), self.keys, "scribed-1@here", lease=30)
        self.runtime = Runtime(self.cfg, pipeline, self.ledger, cluster_jobs.PathMap(self.cfg))

    def job(self, job_id: int, name: str | None = None) -> tuple[str, JobSpec]:
        path = wav(self.inbox / (name or f"rec{job_id}.wav"), seconds=1.0, seed=job_id)
        ident = FileIdentity.of(os.lstat(path), sha(path))
        spec = JobSpec(job_id, path, self.inbox, ident, {"txt": path.with_suffix(".txt")},
                       path.with_suffix(".failed.txt"))
        return wire.job_key(COORD, job_id, 0, ident), spec

    def send(self, *jobs: tuple[str, JobSpec]) -> None:
        self.runtime.handle(json.loads(json.dumps(wire.encode_task(COORD, list(jobs)))))

    def result(self, key: str) -> tuple[str, dict]:
        text = self.server.client().get(self.keys.result(key))
        assert text is not None, f"no result for {key}"
        result, worker = wire.decode_result(text)
        return result.outcome, {"error": result.error, "outputs": result.outputs, "worker": worker}


@pytest.fixture
def env(tmp_path: Path, allow_loopback: None, pipeline: Pipeline) -> Iterator[Env]:
    server = RedisServer(tmp_path / "redis").start()
    yield Env(tmp_path, server, pipeline)
    server.stop()


def stamp(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_ino, st.st_mtime_ns


def test_a_message_is_transcribed_together_and_answered(env: Env) -> None:
    a, b = env.job(1), env.job(2)
    env.send(a, b)
    for key, spec in (a, b):
        outcome, info = env.result(key)
        assert outcome == "done" and info["worker"] == "scribed-1@here"
        assert info["outputs"]["txt"].same_file(os.lstat(spec.outputs["txt"]))
    wake = env.server.client().lrange(env.keys.wake(COORD), 0, -1)
    assert wake == [a[0], b[0]]
    assert env.runtime.held == () and env.runtime.state == "ready"


def test_a_copy_of_a_finished_message_is_dropped(env: Env) -> None:
    job = env.job(1)
    env.send(job)
    first = stamp(job[1].outputs["txt"])
    env.send(job)  # the coordinator published it again (its restart), or the broker redelivered it
    assert stamp(job[1].outputs["txt"]) == first


def test_a_job_another_live_worker_holds_is_left_to_it(env: Env) -> None:
    key, spec = env.job(1)
    other = Ledger(env.server.client(), env.keys, "scribed-2@elsewhere", lease=30)
    assert other.claim(key)
    env.send((key, spec))
    assert not spec.outputs["txt"].exists() and not env.ledger.done(key)


def test_a_job_given_again_after_its_worker_died_is_not_written_twice(env: Env) -> None:
    key, spec = env.job(1)
    env.send((key, spec))
    written = stamp(spec.outputs["txt"])
    redis = env.server.client()
    redis.delete(env.keys.result(key))  # the first worker died after writing, before storing its result
    env.send((key, spec))
    outcome, info = env.result(key)
    assert outcome == "done" and info["outputs"]["txt"].same_file(os.lstat(spec.outputs["txt"]))
    assert stamp(spec.outputs["txt"]) == written


def test_a_first_attempt_that_wrote_nothing_is_simply_run_again(env: Env) -> None:
    key, spec = env.job(1)
    assert env.ledger.first_attempt(key, cluster_jobs.outputs_state({"txt": env.inbox / "rec1.txt"})) is None
    env.send((key, spec))  # a redelivery: the first attempt died before it wrote
    assert env.result(key)[0] == "done" and spec.outputs["txt"].exists()


def test_refused_and_unreadable_jobs_are_answered(env: Env, tmp_path: Path) -> None:
    outside = tmp_path / "private.wav"
    wav(outside, seconds=0.5)
    key, spec = env.job(1)
    env.send((key, replace(spec, path=outside, root=tmp_path)))
    outcome, info = env.result(key)
    assert outcome == "final" and "refused" in info["error"] and not outside.with_suffix(".txt").exists()
    key2, spec2 = env.job(2)
    payload = wire.encode_task(COORD, [(key2, spec2)])
    payload["jobs"][0]["options"]["telemetry"] = "on"  # a newer coordinator's option
    env.runtime.handle(payload)
    outcome, info = env.result(key2)
    assert outcome == "final" and "unreadable job" in info["error"]
    env.runtime.handle({"v": 1, "nonsense": True})  # not ours at all: dropped without an answer


def test_a_changed_recording_is_reported_changed(env: Env) -> None:
    key, spec = env.job(1)
    wav(spec.path, seconds=1.5, seed=9)  # rewritten after it was queued
    env.send((key, spec))
    assert env.result(key)[0] == "changed" and not spec.outputs["txt"].exists()


def test_the_lease_renews_claims_and_beats(env: Env) -> None:
    key, _ = env.job(1)
    assert env.ledger.claim(key)
    env.runtime.held = (key,)
    redis = env.server.client()
    redis.pexpire(env.keys.claim(key), 2000)
    lease = Lease(env.runtime, every_s=60)
    lease.tick()
    assert redis.pttl(env.keys.claim(key)) > 2000  # renewed to the full lease
    entry = json.loads(redis.get(env.keys.worker("scribed-1@here")))
    assert entry["model"] == env.cfg.model.id and entry["state"] == "starting" and entry["pid"] == os.getpid()


def test_an_idle_model_is_unloaded_and_reloaded_for_the_next_job(env: Env, pipeline: Pipeline) -> None:
    env.runtime.cfg = replace(env.cfg, model=replace(env.cfg.model, idle_unload_min=1e-6))
    env.runtime.last_work -= 1.0
    env.runtime.unload_if_idle()
    assert not pipeline.engine.loaded
    key, spec = env.job(1)
    env.send((key, spec))
    assert pipeline.engine.loaded and env.result(key)[0] == "done"


def test_a_message_taken_while_the_broker_is_away_goes_back_to_the_queue(env: Env) -> None:
    from celery.exceptions import Reject

    key, spec = env.job(1)
    env.server.stop()
    with pytest.raises(Reject) as caught:
        task_body(env.runtime)(wire.encode_task(COORD, [(key, spec)]))
    assert caught.value.requeue and not spec.outputs["txt"].exists()
    env.server.start()


def test_worker_command_needs_a_broker() -> None:
    assert worker_command(parse_config({})) == 2
