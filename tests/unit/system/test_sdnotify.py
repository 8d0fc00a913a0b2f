"""Tests for scribed.system.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pychild import run_python

from scribed.system.sdnotify import Notifier


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket, like the service manager's, and its $NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_exact_datagrams(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1\n"
    assert notifier.ready("watching 2 folders")
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching 2 folders\n"
    assert notifier.status("transcribing board.m4a\n(3 queued)")
    assert sock.recv(4096) == b"STATUS=transcribing board.m4a (3 queued)\n"  # one field, one line
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1\n"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1\n"
    assert notifier.extend_timeout(1.5)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000\n"
    assert notifier.notify(errno=5, ready=True)
    assert sock.recv(4096) == b"ERRNO=5\nREADY=1\n"
    notifier.close()


def test_reloading_carries_the_monotonic_clock(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": address}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = sock.recv(4096).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_socket_name() -> None:
    name = f"scribed-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1\n"
    finally:
        sock.close()


def test_disabled_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval_s() is None
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_vanished_manager_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "gone"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.ready() is False  # no such socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        assert notifier.status("back")  # reconnects after the failure
        assert sock.recv(4096) == b"STATUS=back\n"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}, None),  # someone else's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/nothing", **env}).watchdog_interval_s() == expected


def test_unset_environment(monkeypatch: pytest.MonkeyPatch, manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert notifier.watchdog_interval_s() == 0.5
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1\n"


def test_thread_safe(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    threads, per_thread = 8, 50

    def drain() -> list[bytes]:  # the kernel queue is short: the manager must keep reading
        return [sock.recv(4096) for _ in range(threads * per_thread)]

    def send(t: int) -> list[bool]:
        return [notifier.status(f"thread {t} message {i}") for i in range(per_thread)]

    # Futures carry each thread's result or exception back here, so a failure in any thread
    # fails this test (an assert inside a plain Thread would only print a warning).
    with ThreadPoolExecutor(max_workers=threads + 1) as pool:
        reader = pool.submit(drain)
        senders = [pool.submit(send, t) for t in range(threads)]
        sent = [future.result(timeout=60) for future in senders]
        received = reader.result(timeout=60)
    notifier.close()
    assert all(all(results) for results in sent), sent
    expected = {f"STATUS=thread {t} message {i}\n".encode() for t in range(threads) for i in range(per_thread)}
    assert len(received) == threads * per_thread
    assert set(received) == expected


def test_works_under_the_network_guard(manager: tuple[socket.socket, str]) -> None:
    sock, address = manager
    proc = run_python(
        """
        from scribed.config import Config
        from scribed.system import harden
        from scribed.system.sdnotify import Notifier
        harden.harden_process(Config(), "daemon")  # network and process guards: AF_UNIX still works
        print(Notifier().ready("guarded"))
        """,
        NOTIFY_SOCKET=address,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert sock.recv(4096) == b"READY=1\nSTATUS=guarded\n"
    assert "network blocked" not in proc.stderr


def test_a_manager_that_stops_reading_never_stalls_the_caller(manager: tuple[socket.socket, str]) -> None:
    _server, path = manager  # bound, never read: its queue fills up
    notifier = Notifier({"NOTIFY_SOCKET": path})
    results = [notifier.status(f"message {i}") for i in range(200)]
    assert results[0] is True and results[-1] is False  # early ones delivered, later ones dropped
    # One send waits SEND_TIMEOUT_S; after that the socket is non-blocking, so drops are immediate
    # until the manager reads again (checked by the socket's mode, not by a stopwatch).
    assert notifier._sock is not None and notifier._sock.gettimeout() == 0
    while True:
        try:
            _server.recv(4096)
        except TimeoutError:
            break
        _server.settimeout(0.2)
    assert notifier.status("after") is True
