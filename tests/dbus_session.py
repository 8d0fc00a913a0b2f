"""For the notification tests: a real ``dbus-daemon`` session bus and a notification service on it.

:class:`SessionBus` runs ``dbus-daemon --nofork --print-address`` with a private config: it
listens on a socket path in the test's folder and has no service directories, so no notification
daemon installed on the machine is ever activated. :class:`NotificationService` is the test's
stand-in for a desktop's notification server: a jeepney connection that owns
``org.freedesktop.Notifications`` and records each ``Notify`` call, served by one thread whose
loop wakes at least every 0.1 s to check its stop flag, and is joined by :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import queue
import select
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jeepney import HeaderFields, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

DBUS_DAEMON = shutil.which("dbus-daemon") or ("/usr/bin/dbus-daemon" if Path("/usr/bin/dbus-daemon").exists() else None)
NAME = "org.freedesktop.Notifications"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class SessionBus:
    """A running ``dbus-daemon`` listening on ``folder/bus``; :meth:`stop` ends it."""

    def __init__(self, folder: Path) -> None:
        assert DBUS_DAEMON is not None
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "bus"
        config = folder / "bus.conf"
        config.write_text(_CONFIG.format(socket=self.socket))
        self.proc = subprocess.Popen([DBUS_DAEMON, "--nofork", "--print-address", "--config-file", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        readable, _, _ = select.select([self.proc.stdout], [], [], 30)  # bounded wait for the address
        line = self.proc.stdout.readline().strip() if readable else ""  # type: ignore[union-attr]
        if not line.startswith("unix:"):
            self.stop()
            raise RuntimeError(f"dbus-daemon did not start: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.address = line

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class NotificationService:
    """Owns ``org.freedesktop.Notifications`` on ``address`` and records ``Notify`` calls.

    ``capabilities`` is what GetCapabilities answers; with ``answer=False`` calls are recorded
    but never replied to (a hung notification server).
    """

    def __init__(self, address: str, capabilities: Sequence[str] = ("body",), *, answer: bool = True) -> None:
        self.capabilities = list(capabilities)
        self.answer = answer
        self.calls: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.members: list[str] = []
        self._conn = open_dbus_connection(address)
        reply = self._conn.send_and_get_reply(message_bus.RequestName(NAME, 4), timeout=10)  # 4: do not queue
        if reply.body != (1,):  # 1: primary owner
            self._conn.close()
            raise RuntimeError(f"could not own {NAME}: {reply.body}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-notification-service", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        served = 0
        while not self._stop.is_set():
            try:
                msg = self._conn.receive(timeout=0.1)  # wakes to check the stop flag
            except TimeoutError:
                continue
            except OSError:
                return  # the bus went away
            if msg.header.message_type is not MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            self.members.append(member)
            if member == "Notify":
                self.calls.put(msg.body)
                served += 1
                reply = new_method_return(msg, "u", (served,))
            elif member == "GetCapabilities":
                reply = new_method_return(msg, "as", (self.capabilities,))
            else:
                reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod")
            if self.answer:
                with contextlib.suppress(OSError):
                    self._conn.send(reply)

    def next_call(self, timeout: float = 30) -> tuple[Any, ...]:
        """The next recorded Notify call's arguments (bounded wait)."""
        try:
            return self.calls.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no Notify call within {timeout} s (calls seen: {self.members})") from None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the notification service thread did not stop"
        self._conn.close()


@contextlib.contextmanager
def session_bus(folder: Path) -> Iterator[SessionBus]:
    """A :class:`SessionBus` in ``folder`` for the block, stopped after it; skips the test
    without dbus-daemon."""
    if DBUS_DAEMON is None:
        import pytest

        pytest.skip("dbus-daemon not installed (Debian package dbus)")
    bus = SessionBus(folder)
    try:
        yield bus
    finally:
        bus.stop()


@contextlib.contextmanager
def notification_service(address: str, **options: Any) -> Iterator[NotificationService]:
    service = NotificationService(address, **options)
    try:
        yield service
    finally:
        service.stop()
