"""Desktop notifications (``service.notify: desktop``) over the session D-Bus, with jeepney.

Contract:
- :class:`DesktopNotifier` calls ``org.freedesktop.Notifications.Notify`` on the session bus
  named by ``$DBUS_SESSION_BUS_ADDRESS`` (else ``$XDG_RUNTIME_DIR/bus``, where systemd's user
  manager puts it). Only ``unix:`` addresses are spoken, so the one socket it opens is AF_UNIX:
  it works after :func:`~scribed.system.harden.harden_process` (network guard, no child
  processes) and inside the unit (``RestrictAddressFamilies=AF_UNIX``). An abstract-socket bus is
  out of reach under the unit's ``PrivateNetwork=`` (abstract names live in the network
  namespace); that is one more case of "no bus".
- It never raises and never stalls the daemon's loop: a whole :meth:`DesktopNotifier.notify`
  call (connect, authenticate, Hello, capabilities, Notify, and one reconnect) shares one
  deadline of :data:`CALL_TIMEOUT_S`, sends included. No bus, no notification service, a
  timeout or a broken connection is one DEBUG line and False.
- The connection is opened on first use and reused; a failure on a reused connection closes it
  and opens a new one once. Thread-safe (one lock); no thread and no process of its own.
- Privacy: a notification is shown on screen and may be kept in the desktop's history, so
  :meth:`~DesktopNotifier.transcript_ready` and :meth:`~DesktopNotifier.transcription_failed`
  name the recording by its file name only (never its folder) and never carry transcript text;
  callers of :meth:`~DesktopNotifier.notify` must not pass transcript text either. Logged lines
  never contain the summary or body.
"""

from __future__ import annotations

import html
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jeepney import DBusAddress, HeaderFields, Message, MessageType, new_method_call
from jeepney.bus import get_connectable_addresses
from jeepney.io.blocking import DBusConnection, prep_socket
from loguru import logger

if TYPE_CHECKING:
    from scribed.config import Config

CALL_TIMEOUT_S = 0.8  # the most one notify() may take, whatever the bus does
EXPIRE_MS = 10_000  # how long the desktop shows a notification (servers may cap it)
APP_NAME = "scribed"
ICON_READY = "text-x-generic"  # freedesktop icon names: a text document is ready...
ICON_FAILED = "dialog-error"  # ...or something went wrong
REASON_MAX = 160  # characters of a failure reason in a notification

NOTIFICATIONS = DBusAddress("/org/freedesktop/Notifications", bus_name="org.freedesktop.Notifications",
                            interface="org.freedesktop.Notifications")


def session_bus_address(env: Mapping[str, str]) -> str | None:
    """The session bus address in ``env``; None if there is none to try."""
    address = env.get("DBUS_SESSION_BUS_ADDRESS", "").strip()
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime:  # sd-bus' default when the variable is unset
        try:
            if stat.S_ISSOCK(os.stat(os.path.join(runtime, "bus")).st_mode):
                return "unix:path=" + os.path.join(runtime, "bus")
        except OSError:
            pass
    return None


def display_name(recording: Path | str) -> str:
    """The recording's file name for people: undecodable bytes as ``\\xNN``, no control characters."""
    name = os.fsencode(Path(recording).name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else " " for c in name)


def short_reason(reason: str) -> str:
    """A failure reason on one line of at most :data:`REASON_MAX` characters."""
    line = " ".join(reason.split())
    return line if len(line) <= REASON_MAX else line[: REASON_MAX - 1] + "…"


class _Connection(DBusConnection):
    """jeepney's blocking connection with every wait and send capped by ``deadline``
    (its constructor says Hello() and waits for the reply with no timeout of its own)."""

    def __init__(self, sock: Any, deadline: float) -> None:
        self.deadline = deadline
        super().__init__(sock)

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("D-Bus call timed out")
        return left

    def send(self, message: Message, serial: int | None = None) -> None:
        self.sock.settimeout(self._left())  # a bus that stops reading must not block sendall()
        super().send(message, serial)

    send_message = send  # jeepney's send_and_get_reply() calls this name

    def receive(self, *, timeout: float | None = None) -> Message:
        left = self._left()
        return super().receive(timeout=left if timeout is None else min(timeout, left))


class _Refused(Exception):
    """The bus answered with a D-Bus error (e.g. no notification service): the connection is fine."""


class DesktopNotifier:
    """Desktop notifications on the session bus (see the module contract); ``env`` defaults to
    ``os.environ``, read once here."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._address = session_bus_address(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._markup: bool | None = None  # the server renders markup in bodies; None: not asked yet

    def transcript_ready(self, recording: Path | str) -> bool:
        """"Transcript ready" naming ``recording`` by its file name only."""
        return self.notify("Transcript ready", display_name(recording), icon=ICON_READY, category="transfer.complete")

    def transcription_failed(self, recording: Path | str, reason: str = "") -> bool:
        """"Transcription failed": the file name and, on a second line, a short reason."""
        body = display_name(recording) + (f"\n{short_reason(reason)}" if reason.strip() else "")
        return self.notify("Transcription failed", body, icon=ICON_FAILED, category="transfer.error")

    def notify(self, summary: str, body: str, *, icon: str = ICON_READY, category: str = "",
               expire_ms: int = EXPIRE_MS) -> bool:
        """Show one notification; True if the notification service accepted it. Never raises.

        ``body`` is plain text (escaped here when the server renders markup). Never pass
        transcript text (see the module contract).
        """
        deadline = time.monotonic() + CALL_TIMEOUT_S
        if self._address is None:
            logger.debug("desktop notification not shown: no session bus (DBUS_SESSION_BUS_ADDRESS unset)")
            return False
        hints: dict[str, tuple[str, Any]] = {"urgency": ("y", 1)}
        if category:
            hints["category"] = ("s", category)
        with self._lock:
            for attempt in range(2):
                fresh = self._conn is None
                try:
                    conn = self._connect(deadline)
                    if self._markup is None:
                        caps = _call(conn, new_method_call(NOTIFICATIONS, "GetCapabilities"))[0]
                        self._markup = "body-markup" in caps
                    text = html.escape(_clean(body), quote=False) if self._markup else _clean(body)
                    args = (APP_NAME, 0, icon, _clean(summary), text, [], hints, expire_ms)
                    _call(conn, new_method_call(NOTIFICATIONS, "Notify", "susssasa{sv}i", args))
                    return True
                except _Refused as exc:
                    logger.debug("desktop notification not shown: {}", exc)
                    return False
                except Exception as exc:  # a notification must never take the daemon down
                    self._close_locked()
                    if fresh or attempt:
                        logger.debug("desktop notification not shown: session bus {}: {!r}", self._address, exc)
                        return False
                    logger.debug("session bus connection lost ({!r}); reconnecting", exc)
        return False

    def close(self) -> None:
        """Close the connection (a later notify opens a new one)."""
        with self._lock:
            self._close_locked()

    def _connect(self, deadline: float) -> _Connection:
        if self._conn is not None:
            self._conn.deadline = deadline
            return self._conn
        assert self._address is not None
        sock_address = next(get_connectable_addresses(self._address))  # unix: only, else RuntimeError
        sock = prep_socket(sock_address, timeout=max(deadline - time.monotonic(), 0.001))
        try:
            conn = _Connection(sock, deadline)
        except BaseException:
            sock.close()
            raise
        self._conn = conn
        return conn

    def _close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError as exc:
                logger.debug("closing the session bus connection: {!r}", exc)
            self._conn = None
            self._markup = None


def _call(conn: _Connection, message: Message) -> tuple[Any, ...]:
    """Send a method call and return its reply's body; :class:`_Refused` for an error reply."""
    reply = conn.send_and_get_reply(message)
    if reply.header.message_type is MessageType.error:
        name = reply.header.fields.get(HeaderFields.error_name, "?")
        raise _Refused(f"{message.header.fields.get(HeaderFields.member)} refused by the session bus: {name}")
    return reply.body


def _clean(text: str) -> str:
    """Valid UTF-8 for the wire (lone surrogates from undecodable names become escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def from_config(cfg: Config) -> DesktopNotifier | None:
    """The daemon's notifier: None unless ``service.notify`` is ``desktop``."""
    return DesktopNotifier() if cfg.service.notify == "desktop" else None
