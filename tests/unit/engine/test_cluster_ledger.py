"""Tests for scribed.engine.cluster_ledger: claims, first attempts and first-wins results on a real
redis-server (loopback, ACL user with a password)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_helpers import RedisServer
from scribed import wire
from scribed.engine.cluster_ledger import Ledger, lease_s
from scribed.protocol import Result

KEY = "0123456789abcdef-1-0-abcd"


@pytest.fixture
def server(tmp_path: Path, allow_loopback: None) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path).start()
    yield s
    s.stop()


def ledger(server: RedisServer, name: str, lease: float = 30.0) -> Ledger:
    return Ledger(server.client(), wire.Keys("q"), name, lease=lease, sleep=lambda s: None)


def test_lease_is_half_the_visibility_timeout_at_most() -> None:
    assert lease_s(6) == 3 and lease_s(43200) == 60 and lease_s(1) == 1


def test_one_claim_at_a_time_renewed_and_released_by_its_holder_only(server: RedisServer) -> None:
    a, b = ledger(server, "a"), ledger(server, "b")
    assert a.claim(KEY) and not b.claim(KEY)
    assert a.renew([KEY]) == 1 and b.renew([KEY]) == 0
    b.release([KEY])  # not b's: stays
    assert not b.claim(KEY)
    a.release([KEY])
    assert b.claim(KEY)


def test_a_claim_lapses_when_its_holder_stops_renewing(server: RedisServer) -> None:
    a, b = ledger(server, "a", lease=30.0), ledger(server, "b")
    assert a.claim(KEY)
    redis = server.client()
    redis.pexpire(wire.Keys("q").claim(KEY), 1)  # what 30 s without a renewal comes to
    deadline = time.monotonic() + 10
    while redis.exists(wire.Keys("q").claim(KEY)) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the server's expiry, with a deadline
    assert b.claim(KEY)
    assert a.renew([KEY]) == 0  # a's claim is gone: a learns it


def test_first_attempt_is_recorded_once(server: RedisServer) -> None:
    a, b = ledger(server, "a"), ledger(server, "b")
    assert a.first_attempt(KEY, {"txt": None}) is None
    assert b.first_attempt(KEY, {"txt": [5, 6]}) == {"txt": None}  # the first record, not b's


def test_the_first_result_wins_and_wakes_the_coordinator(server: RedisServer) -> None:
    a, b = ledger(server, "a"), ledger(server, "b")
    assert not a.done(KEY)
    assert a.store(KEY, "0123456789abcdef", Result(1, "done", None, {}, 3.0))
    assert not b.store(KEY, "0123456789abcdef", Result(1, "final", "a transcript is in the way"))
    redis = server.client()
    result, worker = wire.decode_result(redis.get(wire.Keys("q").result(KEY)))
    assert (result.outcome, worker) == ("done", "a") and a.done(KEY) and b.done(KEY)
    assert redis.lrange(wire.Keys("q").wake("0123456789abcdef"), 0, -1) == [KEY, KEY]
    assert 0 < redis.ttl(wire.Keys("q").result(KEY)) <= wire.RETAIN_S


def test_store_keeps_trying_while_the_broker_is_away(server: RedisServer) -> None:
    a = ledger(server, "a")
    tries: list[float] = []

    def back_after_two(delay: float) -> None:
        tries.append(delay)
        if len(tries) == 2:
            server.start()

    a._sleep = back_after_two
    server.stop()
    assert a.store(KEY, "0123456789abcdef", Result(1, "done"))
    assert len(tries) == 2 and tries[1] > tries[0]  # backed off
    assert a.done(KEY)


def test_store_gives_up_after_its_limit(server: RedisServer) -> None:
    a = ledger(server, "a")
    server.stop()
    assert a.store(KEY, "0123456789abcdef", Result(1, "done"), give_up_s=0.0) is False
    server.start()


def test_heartbeat_and_goodbye(server: RedisServer) -> None:
    a = ledger(server, "gpu1-worker")
    a.progress(KEY, 3, 10)
    a.beat({"host": "gpu1", "device": "cuda:0", "current": ["x.wav"]})
    redis = server.client()
    keys = wire.Keys("q")
    assert json.loads(redis.get(keys.progress(KEY))) == {"done": 3, "total": 10, "worker": "gpu1-worker"}
    entry = json.loads(redis.get(keys.worker("gpu1-worker")))
    assert entry["host"] == "gpu1" and entry["name"] == "gpu1-worker" and entry["current"] == ["x.wav"]
    assert redis.zscore(keys.workers, "gpu1-worker") == pytest.approx(float(redis.time()[0]), abs=5)
    a.goodbye()
    assert redis.zscore(keys.workers, "gpu1-worker") is None and redis.get(keys.worker("gpu1-worker")) is None
