"""Cluster mode, coordinator side: this daemon's connection to the broker.

Contract:
- A :class:`Link` holds the broker address, password, coordinator id and clients of one daemon
  run (ConfigError for a bad broker setting, at start); every call on it has a
  :data:`TIMEOUT_S` limit and raises the broker's own errors, sorted by :func:`broker_errors`
  (away or slow: the caller marks the broker down) and :func:`refusals` (wrong credentials or
  an ACL: fatal). It publishes tasks, reads and advances dispatch generations, waits for a
  worker's wake-up and counts live workers by the broker's clock.
- :func:`coordinator_id` is this daemon's id on the broker, kept 0600 beside its journal.
Celery, kombu and redis load only when used (a Link is made, or the errors are asked for).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from loguru import logger

from scribed import wire
from scribed.config import Config
from scribed.protocol import JobSpec
from scribed.system import broker

TIMEOUT_S = 1.0
WORKER_STALE_S = 30.0  # a worker whose heartbeat is older is not counted (it beats every few seconds)


class Link:
    """This daemon's connection to the broker, shared by the handles of one run: the address,
    the password, the coordinator id, the clients (ConfigError for a bad broker setting)."""

    def __init__(self, cfg: Config) -> None:
        self.broker = broker.address(cfg.cluster)
        secret = broker.password(cfg.cluster)
        self.keys = wire.Keys(cfg.cluster.queue)
        self.coordinator = coordinator_id(cfg)
        self.redis = broker.client(self.broker, secret, timeout_s=TIMEOUT_S, retries=0)
        self.app = broker.celery_app(cfg.cluster, self.broker, secret, timeout_s=TIMEOUT_S)
        if secret is None and not self.broker.loopback:
            logger.warning("broker {} has no password (cluster.password_file or ${})", self.broker.url,
                           broker.PASSWORD_ENV)

    def publish(self, group: Sequence[tuple[str, JobSpec]]) -> None:
        """One Celery task carrying ``group`` ((key, job) pairs), for one worker to take whole."""
        payload = wire.encode_task(self.coordinator, list(group))
        self.app.send_task(wire.TASK_NAME, args=[payload], queue=self.keys.queue, retry=False)

    def generations(self, job_ids: Sequence[int]) -> list[int]:
        """Each job's dispatch generation (0 until a result for it was acknowledged)."""
        return [int(g or 0) for g in self.redis.mget([self.keys.gen(self.coordinator, i) for i in job_ids])]

    def acknowledge(self, delivered: Sequence[tuple[int, str]]) -> None:
        """Results the daemon has journaled ((job id, key)): the next dispatch of each is a new one."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, key in delivered:
            gen = self.keys.gen(self.coordinator, job_id)
            pipe.incr(gen).expire(gen, wire.RETAIN_S).delete(self.keys.progress(key))
        pipe.execute()

    def wait_wake(self, seconds: float) -> None:
        """Block up to ``seconds`` for a worker's wake-up (a result stored)."""
        wake = self.keys.wake(self.coordinator)
        if self.redis.blpop([wake], timeout=seconds):
            self.redis.delete(wake)  # one wake-up covers all results so far

    def live_workers(self) -> int:
        """Workers whose heartbeat is recent by the broker's clock (hosts' clocks may disagree)."""
        now = float(self.redis.time()[0])
        return int(self.redis.zcount(self.keys.workers, now - WORKER_STALE_S, "+inf"))

    def close(self) -> None:
        self.redis.close()
        self.app.close()


def coordinator_id(cfg: Config) -> str:
    """This daemon's id on the broker, kept beside its journal (a new journal is a new coordinator,
    so its job numbers never meet the results of an old one)."""
    path = cfg.service.resolved_state_dir / "cluster-id"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(8) + "\n")
    return path.read_text(encoding="ascii").strip()


def broker_errors() -> tuple[type[BaseException], ...]:
    """What a broker that is away or slow raises (the broker is then marked down, never fatal)."""
    import kombu.exceptions
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            OSError)


def refusals() -> tuple[type[BaseException], ...]:
    """What wrong credentials or an ACL that forbids a command raise (fatal: exit 2)."""
    import redis.exceptions

    return (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
            redis.exceptions.NoPermissionError)
