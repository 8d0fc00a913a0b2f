"""Cluster mode, coordinator side: a worker handle whose work is done by ``scribed worker`` hosts.

Contract:
- :class:`ClusterHandle` has the shape of :class:`scribed.daemon.worker.WorkerHandle` (``ready``,
  ``busy``, ``pid``, ``alive``, ``send_jobs``, ``request_stop``, ``poll``, ``stop``, ``kill``) and
  returns the same typed events, so the daemon is unchanged: it keeps watching, settling and
  journaling, and its journal stays the one record of "done". :func:`cluster_worker_factory`
  is the daemon's ``worker_factory`` when ``cluster.broker`` is set.
- ``send_jobs`` publishes a batch as Celery tasks (:data:`scribed.wire.TASK_NAME`) of at most
  ``cluster.prefetch`` jobs, which one worker transcribes together. Each job carries its key
  (:func:`scribed.wire.job_key`); publishing a job again (after a restart of this daemon, or when
  no worker has shown life for it for ``visibility_timeout_s``) cannot make it run twice: workers
  drop a copy whose key already has a result or a live claim.
- ``busy`` is empty while fewer jobs are in flight than the workers take (live workers ×
  prefetch × 2), so the daemon keeps dispatching; once that window is full it lists them all.
  ``ready``: the broker answers. A worker that dies is not this side's business (the broker
  gives its jobs to another); :class:`~scribed.daemon.worker.Exited` comes only after
  :meth:`request_stop` or :meth:`stop` and names the jobs in flight, which the daemon requeues;
  its next start publishes them again under the same keys and picks up their results.
- :meth:`poll` returns each job's first result once (a ``Result`` whose outputs' identities are
  as this host sees those files), ``Progress`` as workers report it, and a keep-alive
  ``Progress`` every :data:`KEEPALIVE_S` while jobs are in flight and the broker answers (the
  systemd watchdog follows the broker, not a local process). It blocks at most ``timeout``;
  every broker call has a :data:`~scribed.daemon.cluster_link.TIMEOUT_S` limit and failures
  only mark the broker down.
  Wrong credentials (or an ACL that forbids a command) are ``Fatal``: the daemon exits 2.
- A delivered result is acknowledged (the job's dispatch generation advanced) at the next call,
  after the daemon has journaled it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loguru import logger

from scribed import protocol, wire
from scribed.config import Config
from scribed.daemon.cluster_link import TIMEOUT_S, Link, broker_errors, refusals
from scribed.daemon.journal_db import shown
from scribed.daemon.worker import Event, Exited
from scribed.protocol import JobSpec, Result
from scribed.system import broker

KEEPALIVE_S = 60.0
WORKERS_EVERY_S = 5.0
RECONNECT_S = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class _Flight:
    key: str
    spec: JobSpec
    seen_at: float  # last publish, or last sign that a worker holds it
    progress: tuple[int, int] = (0, 0)


def cluster_worker_factory(cfg: Config) -> Callable[[Config], ClusterHandle]:
    """The daemon's ``worker_factory`` for ``cfg`` with ``cluster.broker`` set: checks the broker
    settings and allows the broker through the network guard now, at start (ConfigError: exit 2)."""
    link = Link(cfg)
    broker.allow(link.broker)

    def factory(new: Config) -> ClusterHandle:
        if new.cluster.broker != cfg.cluster.broker or new.cluster.queue != cfg.cluster.queue:
            logger.warning("cluster.broker/queue changed: still using {} until the daemon restarts", link.broker.url)
        return ClusterHandle(new, link)

    return factory


class ClusterHandle:
    """The daemon's view of the cluster's workers (see the module contract)."""

    def __init__(self, cfg: Config, link: Link, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.link, self.clock = cfg, link, clock
        self.keys, self.coordinator = link.keys, link.coordinator
        self.flights: dict[int, _Flight] = {}
        self.exited = False
        self._ready = self._announced = self._stopping = False
        self._acks: list[tuple[int, str]] = []  # (job id, key) of results delivered, to acknowledge
        self._errors, self._refused = broker_errors(), refusals()
        self._started = clock()
        self._next_try, self._tries, self._down_logged = -math.inf, 0, False
        self._workers, self._workers_at = 0, -math.inf
        self._keepalive_at = clock()

    # -- the WorkerHandle surface ------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return os.getpid()  # no process of its own: the daemon's status shows this one

    @property
    def alive(self) -> bool:
        return not self.exited

    @property
    def ready(self) -> bool:
        return self._ready and not self.exited

    @property
    def capacity(self) -> int:
        return max(1, self._workers) * self.cfg.cluster.prefetch * 2

    @property
    def busy(self) -> tuple[int, ...]:
        return tuple(self.flights) if len(self.flights) >= self.capacity else ()

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Every job published and not answered yet (``busy`` lists them only when the window is full)."""
        return tuple(self.flights)

    def send_jobs(self, jobs: Sequence[JobSpec]) -> bool:
        """Publish ``jobs``; False (nothing in flight from them) if the broker cannot take them."""
        if not self.ready or self._stopping:
            return False
        try:
            self._flush_acks()
            gens = self.link.generations([s.job_id for s in jobs])
            now = self.clock()
            flights = [_Flight(wire.job_key(self.coordinator, s.job_id, g, s.identity), s, now)
                       for s, g in zip(jobs, gens, strict=True)]
            size = self.cfg.cluster.prefetch
            for start in range(0, len(flights), size):
                self.link.publish([(f.key, f.spec) for f in flights[start:start + size]])
        except self._errors as exc:
            self._lost(exc)
            return False
        self.flights.update((f.spec.job_id, f) for f in flights)
        return True

    def request_stop(self) -> None:
        self._stopping = True

    def poll(self, timeout: float) -> list[Event]:
        if self.exited:
            return []
        if self._stopping:
            return [self._exit()]
        deadline = self.clock() + timeout
        events: list[Event] = []
        try:
            if not self._ready:
                events += self._connect()
            if self._ready:
                self._flush_acks()
                events += self._collect()
                if not events and deadline > self.clock():
                    self._wait(deadline)
                    events += self._collect()
                self._refresh_workers()
                self._republish_stale()
                events += self._keepalive()
        except self._refused as exc:
            events.append(protocol.Fatal(f"the broker {self.link.broker.url} refused scribed: {exc}"))
        except self._errors as exc:
            self._lost(exc)
        if not self._ready and (rest := deadline - self.clock()) > 0:
            time.sleep(rest)  # nothing to block on while the broker is away; the loop must not spin
        return events

    def stop(self, timeout: float) -> list[Event]:
        """Results already there, then Exited naming the jobs still in flight (they stay queued at
        the broker; the daemon requeues them and picks up their results after its restart)."""
        if self.exited:
            return []
        events: list[Event] = []
        if self._ready:
            try:
                self._flush_acks()
                events = self._collect()
            except self._errors as exc:
                logger.debug("broker unreachable while stopping: {}", exc)
        return [*events, self._exit()]

    def kill(self) -> None:
        self.exited = True

    # -- broker state ------------------------------------------------------------------------------
    def _connect(self) -> list[Event]:
        now = self.clock()
        if now < self._next_try:
            return []
        try:
            self.link.redis.ping()
        except self._refused:
            raise
        except self._errors as exc:
            self._tries += 1
            self._next_try = now + RECONNECT_S[min(self._tries, len(RECONNECT_S)) - 1]
            if not self._down_logged:
                logger.warning("broker {} unreachable ({}); retrying", self.link.broker.url, exc)
                self._down_logged = True
            return []
        self._ready, self._tries, self._down_logged = True, 0, False
        self._refresh_workers(force=True)
        logger.info("broker {} reachable (queue {!r}, {} worker(s) alive, {} job(s) in flight)",
                    self.link.broker.url, self.keys.queue, self._workers, len(self.flights))
        if self._announced:
            return []
        self._announced = True
        device = f"cluster queue {self.keys.queue!r} at {self.link.broker.url}"
        return [protocol.Ready(self.cfg.model.id, device, round(self.clock() - self._started, 3), self.pid)]

    def _lost(self, exc: BaseException) -> None:
        if self._ready:
            logger.warning("lost the broker {} ({}); the {} job(s) in flight stay with the workers; retrying",
                           self.link.broker.url, exc, len(self.flights))
            self._down_logged = True
        self._ready = False
        self._next_try = self.clock() + RECONNECT_S[0]

    def _exit(self) -> Exited:
        unfinished = tuple(self.flights)
        self.flights.clear()
        self.exited = True
        return Exited(0, unfinished)

    # -- results and progress -------------------------------------------------------------------------
    def _flush_acks(self) -> None:
        if self._acks:
            self.link.acknowledge(self._acks)
            self._acks.clear()

    def _collect(self) -> list[Event]:
        flights = list(self.flights.values())
        if not flights:
            return []
        k = self.keys
        names = [n for f in flights for n in (k.result(f.key), k.progress(f.key), k.claim(f.key))]
        values = self.link.redis.mget(names)
        now = self.clock()
        events: list[Event] = []
        for i, flight in enumerate(flights):
            result, progress, claim = values[3 * i:3 * i + 3]
            if result is not None:
                events.append(self._finished(flight, result))
                continue
            if claim is not None or progress is not None:
                flight.seen_at = now
            seen = _progress(progress)
            if seen is not None and seen != flight.progress:
                flight.progress = seen
                events.append(protocol.Progress(flight.spec.job_id, *seen))
        return events

    def _finished(self, flight: _Flight, text: str) -> Result:
        del self.flights[flight.spec.job_id]
        self._acks.append((flight.spec.job_id, flight.key))
        return _result(flight.spec, text)

    def _wait(self, deadline: float) -> None:
        rest = min(deadline - self.clock(), TIMEOUT_S * 0.8)
        if rest > 0.01:
            self.link.wait_wake(rest)

    def _refresh_workers(self, *, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._workers_at >= WORKERS_EVERY_S:
            self._workers_at, self._workers = now, self.link.live_workers()

    def _republish_stale(self) -> None:
        """Publish again a job no worker has shown life for (a message lost, or dropped as a copy
        while its holder lived, which then died). Only while some worker is alive: until one
        is, the message waiting at the broker is as good as a copy."""
        limit = self.cfg.cluster.visibility_timeout_s
        now = self.clock()
        stale = [f for f in self.flights.values() if now - f.seen_at > limit] if self._workers else []
        for flight in stale:
            logger.info("no worker has taken {} for {:.0f} s; publishing it again", shown(flight.spec.path),
                        now - flight.seen_at)
            self.link.publish([(flight.key, flight.spec)])
            flight.seen_at = now

    def _keepalive(self) -> list[Event]:
        now = self.clock()
        if not self.flights or now - self._keepalive_at < KEEPALIVE_S:
            return []
        self._keepalive_at = now
        flight = next(iter(self.flights.values()))
        return [protocol.Progress(flight.spec.job_id, *flight.progress)]


def _result(spec: JobSpec, text: str) -> Result:
    """The stored result for ``spec``, its outputs as this host sees them; an unreadable one is a
    failed attempt (never "done": the journal only records what a worker vouched for)."""
    try:
        result, worker = wire.decode_result(text)
    except wire.WireError as exc:
        logger.error("unreadable result for {} from the broker ({}); counted as a failed attempt",
                     shown(spec.path), exc)
        return Result(spec.job_id, "retry", f"unreadable result from the broker: {exc}")
    logger.debug("{} {} on {}", result.outcome, shown(spec.path), worker)
    return replace(result, job_id=spec.job_id, outputs=_local_view(spec, result))


def _progress(text: str | None) -> tuple[int, int] | None:
    try:
        data: Any = json.loads(text) if text else None
        return (int(data["done"]), int(data["total"])) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _local_view(spec: JobSpec, result: Result) -> dict[str, Any]:
    """The outputs' identities as this host sees the same files (device numbers differ between
    hosts); an output this host cannot see (yet) keeps the worker's view."""
    local = {}
    for fmt, ident in result.outputs.items():
        path = spec.outputs.get(fmt)
        if path is None:
            continue  # not a format this job asked for
        try:
            st = os.lstat(path)
        except OSError:
            local[fmt] = ident
            continue
        local[fmt] = wire.local_identity(ident, st) or ident
    return local
