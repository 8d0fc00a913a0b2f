"""systemd's sd_notify protocol over an AF_UNIX datagram socket, without libsystemd.

Contract: :class:`Notifier` sends ``KEY=value`` lines to ``$NOTIFY_SOCKET`` (a path, or an
abstract name written with a leading ``@``). It never raises: outside systemd it is disabled and
every call is a no-op returning False, and a failed send is logged at DEBUG and returns False.
It is thread-safe (one lock around the socket), so the watchdog thread and the main loop can share
one instance. Only the main process should notify (the unit sets ``NotifyAccess=main``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Mapping

from loguru import logger

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str) -> str | None:
    """The socket address for ``$NOTIFY_SOCKET``; None if it is not a form we speak."""
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (VM notification), which a user service never gets


SEND_TIMEOUT_S = 0.5


class Notifier:
    """Talks to the service manager; a disabled no-op when not started by systemd.

    ``env`` defaults to ``os.environ``. With ``unset_environment=True`` the notification
    variables are removed from ``os.environ`` after reading, so child processes (the worker)
    cannot notify by mistake.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, unset_environment: bool = False) -> None:
        source = os.environ if env is None else env
        raw = source.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            logger.debug("unsupported NOTIFY_SOCKET {!r}; notifications disabled", raw)
        self._watchdog_usec = source.get("WATCHDOG_USEC", "")
        self._watchdog_pid = source.get("WATCHDOG_PID", "")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        if unset_environment:
            for key in _ENV_KEYS:
                os.environ.pop(key, None)

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` names a socket we can send to."""
        return self._address is not None

    def notify(self, **fields: object) -> bool:
        """Send one datagram of ``KEY=value`` lines (keys upper-cased, in the given order).

        ``True``/``False`` become ``1``/``0``; newlines in values become spaces (a newline would
        start a new field). Returns True if the datagram was sent.
        """
        if self._address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            lines.append(f"{key.upper()}={text.replace(chr(10), ' ')}")
        payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # Bounded: a manager that is not reading must never stall the daemon's loop
                    # for long; a dropped notification is harmless (the next carries the state).
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._address)
                self._sock.settimeout(SEND_TIMEOUT_S)
                return True
            except (TimeoutError, BlockingIOError):
                # The manager's queue is full: stop waiting on it until a send gets through again.
                logger.debug("sd_notify {} dropped: the service manager is not reading", ",".join(fields))
                self._sock.settimeout(0)
                return False
            except OSError as exc:
                logger.debug("sd_notify {} failed: {}", ",".join(fields), exc)
                self._close_locked()  # the manager may have been restarted: reconnect next time
                return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup finished (optionally with a STATUS= line)."""
        return self.notify(READY=1, STATUS=status) if status is not None else self.notify(READY=1)

    def status(self, text: str) -> bool:
        """STATUS=text: one line shown by ``systemctl --user status``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service is alive (send every :meth:`watchdog_interval_s`)."""
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify(STOPPING=1, STATUS=status) if status is not None else self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload); send READY=1 after."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: ask for more time to start or stop (e.g. finishing a long file)."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, round(seconds * 1_000_000)))

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half of WatchdogSec=), or None if no watchdog is set.

        None as well when ``$WATCHDOG_PID`` names another process (the watchdog is not ours).
        """
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket (a later notify opens a new one)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
