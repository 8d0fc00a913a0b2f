"""Cluster mode, worker side: the broker keys that make each job run once, however often its
message is delivered.

Contract (:class:`Ledger`, one per worker process; keys from :class:`scribed.wire.Keys`):
- :meth:`Ledger.done`: a result is stored for the key (whoever stored it): drop the copy.
- :meth:`Ledger.claim`: take the key for :data:`LEASE_S` (``SET NX PX``); False while another
  worker holds it. The holder renews its claims (:meth:`Ledger.renew`, compare-and-expire)
  until it has stored their results; a dead holder's claim lapses, so the job can run again.
- :meth:`Ledger.first_attempt`: records the state of a job's outputs when its first attempt
  starts and returns None; on a later attempt it returns that record instead (the re-run rule of
  :mod:`scribed.engine.cluster_jobs`).
- :meth:`Ledger.store`: the first result for a key wins (``SET NX``) and wakes the coordinator;
  a later one is discarded. It keeps trying through a broker outage (up to ``give_up_s``): the
  transcript is written, the coordinator must hear so.
- :meth:`Ledger.beat`: this worker's entry for ``scribed status`` and the coordinator's count of
  live workers (scored with the broker's clock, not this host's).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from loguru import logger

from scribed import wire
from scribed.protocol import Result

LEASE_S = 60.0  # the longest a dead worker's claim keeps its jobs from running elsewhere
BEAT_TTL_S = 60
_RENEW = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]); n = n + 1 end
end
return n
"""
_RELEASE = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def lease_s(visibility_timeout_s: float) -> float:
    """A claim's lifetime: at most half the visibility timeout, so a redelivered job's claim has
    lapsed when it arrives, and at most :data:`LEASE_S`."""
    return max(1.0, min(LEASE_S, visibility_timeout_s / 2))


class Ledger:
    def __init__(self, client: Any, keys: wire.Keys, name: str, *, lease: float = LEASE_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.redis, self.keys, self.name, self.lease = client, keys, name, lease
        self._sleep = sleep
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def done(self, key: str) -> bool:
        return bool(self.redis.exists(self.keys.result(key)))

    def claim(self, key: str) -> bool:
        return bool(self.redis.set(self.keys.claim(key), self.name, nx=True, px=int(self.lease * 1000)))

    def renew(self, keys: Sequence[str]) -> int:
        """Extend this worker's claims on ``keys``; returns how many are still ours."""
        if not keys:
            return 0
        return int(self._renew(keys=[self.keys.claim(k) for k in keys], args=[self.name, int(self.lease * 1000)]))

    def release(self, keys: Sequence[str]) -> None:
        if keys:
            self._release(keys=[self.keys.claim(k) for k in keys], args=[self.name])

    def first_attempt(self, key: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """None if this is the key's first attempt (``state`` is recorded); else the first's record."""
        name = self.keys.attempt(key)
        if self.redis.set(name, json.dumps(state), nx=True, ex=wire.RETAIN_S):
            return None
        try:
            prior = json.loads(self.redis.get(name) or "{}")
        except ValueError:
            prior = {}
        return prior if isinstance(prior, dict) else {}

    def progress(self, key: str, done: int, total: int) -> None:
        self.redis.set(self.keys.progress(key), json.dumps({"done": done, "total": total, "worker": self.name}),
                       ex=86400)

    def store(self, key: str, coordinator: str, result: Result, *, give_up_s: float = 600.0) -> bool:
        """Store ``result`` unless one is there already; True if this one is the result."""
        from redis.exceptions import RedisError

        text = wire.encode_result(result, self.name)
        deadline = time.monotonic() + give_up_s
        delay = 0.2
        while True:
            try:
                stored = bool(self.redis.set(self.keys.result(key), text, nx=True, ex=wire.RETAIN_S))
                break
            except (RedisError, OSError) as exc:  # the broker is away: the transcript is written, keep trying
                if time.monotonic() > deadline:
                    logger.error("could not store the result of {} at the broker ({}); the job is handed out "
                                 "again and its transcript found", key, exc)
                    return False
                logger.warning("broker unreachable while storing a result ({}); retrying in {:.1f} s", exc, delay)
                self._sleep(delay)  # a retry backoff, not a synchronisation
                delay = min(delay * 2, 5.0)
        wake = self.keys.wake(coordinator)
        with contextlib.suppress(RedisError, OSError):  # only a wake-up: the coordinator also polls results
            self.redis.pipeline(transaction=False).rpush(wake, key).ltrim(wake, -16, -1).expire(wake, 86400).execute()
        return stored

    def beat(self, info: dict[str, Any]) -> None:
        now = float(self.redis.time()[0])
        entry = json.dumps({**info, "name": self.name, "seen": now})
        self.redis.pipeline(transaction=False).zadd(self.keys.workers, {self.name: now}) \
            .set(self.keys.worker(self.name), entry, ex=BEAT_TTL_S) \
            .zremrangebyscore(self.keys.workers, "-inf", now - 86400).execute()

    def goodbye(self) -> None:
        self.redis.pipeline(transaction=False).zrem(self.keys.workers, self.name) \
            .delete(self.keys.worker(self.name)).execute()
