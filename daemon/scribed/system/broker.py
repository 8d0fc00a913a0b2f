"""Cluster mode's connection to the broker: address, password, TLS, the network allow-list, and
the Celery settings both sides must agree on.

Contract:
- :func:`address` reads ``cluster.broker`` (``redis://HOST[:PORT][/DB]``, ``rediss://`` for TLS;
  a user name for a Redis ACL user may be given, a password never, nor query options). The
  password comes from ``cluster.password_file`` (refused when every user may read it) or
  ``$SCRIBED_BROKER_PASSWORD`` (:func:`password`); it is passed to the client libraries as a
  value and never appears in a URL, a log line or ``scribed status``. Problems are
  :class:`~scribed.errors.ConfigError` (exit 2).
- :func:`allow` puts exactly the broker's host and port on the in-process network guard's
  allow-list (:func:`scribed.system.netguard.allow_endpoint`): every cluster process calls it
  once, at start, before it connects.
- :func:`client` is a redis-py client with short timeouts (the coordinator's loop must never
  block for long); :func:`celery_app` a Celery app with JSON-only messages, late acks, the
  configured visibility timeout and remote control off (a broker must not steer the workers).
- Importing this module loads neither redis nor celery; the functions that need them do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scribed.errors import ConfigError, ScribedError
from scribed.system import netguard

if TYPE_CHECKING:
    import celery
    import redis

    from scribed.config import ClusterConfig

PASSWORD_ENV = "SCRIBED_BROKER_PASSWORD"
DEFAULT_PORT = 6379
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Broker:
    """Where the broker is. ``url`` has no password: it is safe to log and show."""

    url: str
    host: str
    port: int
    db: int
    username: str | None
    tls: bool
    ca_file: Path | None = None

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK or self.host.startswith("127.")


def _problem(message: str) -> ConfigError:
    return ConfigError([message])


def address(cfg: ClusterConfig) -> Broker:
    """The broker of ``cfg`` (``cluster.broker`` must be set)."""
    if not cfg.broker:
        raise _problem("At 'cluster.broker': expected a redis:// or rediss:// URL (cluster mode is off)")
    parts = urlsplit(cfg.broker)
    where = "At 'cluster.broker': "
    if parts.password is not None:
        raise _problem(where + "the password must not be in the URL (it would show in logs and check-config); "
                       f"put it in cluster.password_file or ${PASSWORD_ENV}")
    if parts.query or parts.fragment:
        raise _problem(where + "expected no query options (TLS is chosen by rediss://, its CA by cluster.tls_ca_file)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise _problem(where + "expected a port number") from None
    db_text = parts.path.strip("/") or "0"
    if not parts.hostname or not db_text.isdigit():
        raise _problem(where + "expected redis://HOST[:PORT][/DB]")
    tls = parts.scheme == "rediss"
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    user = f"{parts.username}@" if parts.username else ""
    url = f"{parts.scheme}://{user}{shown_host}:{port}/{int(db_text)}"
    return Broker(url, host, port, int(db_text), parts.username or None, tls, cfg.tls_ca_file if tls else None)


def password(cfg: ClusterConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The broker password: ``cluster.password_file`` (first line), else ``$SCRIBED_BROKER_PASSWORD``."""
    env = os.environ if env is None else env
    if cfg.password_file is None:
        return env.get(PASSWORD_ENV) or None
    where = f"At 'cluster.password_file': {str(cfg.password_file)!r} "
    try:
        fd = os.open(cfg.password_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _problem(where + f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, encoding="utf-8") as fh:
        if stat.S_IMODE(os.fstat(fh.fileno()).st_mode) & 0o004:
            raise _problem(where + "is readable by every user; make it private (chmod o-r, better 600)")
        lines = fh.read().splitlines()
    if not lines or not lines[0]:
        raise _problem(where + "is empty; expected the password on its first line")
    return lines[0]


def allow(broker: Broker) -> netguard.Endpoint:
    """Let this process reach the broker, and nothing else, through the network guard."""
    try:
        return netguard.allow_endpoint(broker.host, broker.port)
    except OSError as exc:  # exit 1, not 2: the name may resolve once the network is up, systemd retries
        raise ScribedError(f"cannot resolve the broker host {broker.host!r}: {exc}") from None


def _tls_options(broker: Broker) -> dict[str, Any]:
    import ssl

    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if broker.ca_file is not None:
        options["ssl_ca_certs"] = str(broker.ca_file)
    return options


def client(broker: Broker, secret: str | None, *, timeout_s: float, retries: int = 3) -> redis.Redis:
    """A redis-py client for scribed's own keys (results, claims, progress, worker heartbeats);
    ``retries`` reconnects per call (0: fail at once, for a loop that must not block)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    tls = {"ssl": True, **_tls_options(broker)} if broker.tls else {}
    return redis.Redis(host=broker.host, port=broker.port, db=broker.db, username=broker.username, password=secret,
                       socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True,
                       retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries), health_check_interval=30, **tls)


def celery_app(cfg: ClusterConfig, broker: Broker, secret: str | None, *, timeout_s: float) -> celery.Celery:
    """The Celery app of one side (coordinator or worker), configured identically on both."""
    from celery import Celery

    vt = float(cfg.visibility_timeout_s)
    app = Celery("scribed", set_as_current=False)
    app.conf.update(
        broker_url=broker.url, broker_password=secret, broker_use_ssl=_tls_options(broker) if broker.tls else None,
        broker_connection_timeout=timeout_s, broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None, broker_channel_error_retry=True,
        broker_transport_options={
            "visibility_timeout": vt,  # an unacknowledged job goes back to the queue after this long
            "unacked_restore_interval": max(1.0, min(10.0, vt / 4)),  # how often workers look for such jobs
            "unacked_restore_throttle": 1, "unacked_mutex_expire": max(10, int(min(vt, 300))),
            "socket_timeout": max(timeout_s, 5.0), "socket_connect_timeout": timeout_s,
        },
        task_serializer="json", accept_content=["json"], result_serializer="json", result_accept_content=["json"],
        result_backend=None, task_ignore_result=True, task_default_queue=cfg.queue, task_create_missing_queues=True,
        task_acks_late=True, task_reject_on_worker_lost=True, task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1, worker_concurrency=1, worker_pool="solo",
        worker_enable_remote_control=False, worker_send_task_events=False, task_send_sent_event=False,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False, worker_disable_rate_limits=True,
    )
    return app
