"""Tests for scribed.system.desktop against a real ``dbus-daemon`` session bus started by the test,
with a test-side notification service on it (tests/dbus_session.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from loguru import logger
from pychild import run_python

from dbus_session import DBUS_DAEMON, SessionBus, notification_service, session_bus
from scribed.config import Config, parse_config
from scribed.system import desktop
from scribed.system.desktop import DesktopNotifier

needs_dbus = pytest.mark.skipif(DBUS_DAEMON is None, reason="dbus-daemon not installed (Debian package dbus)")


@pytest.fixture()
def bus(tmp_path: Path) -> Iterator[SessionBus]:
    with session_bus(tmp_path / "run") as session:
        yield session


@pytest.fixture()
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG")
    yield lines
    logger.remove(sink)


@needs_dbus
def test_transcript_ready_arrives_with_the_file_name_only(bus: SessionBus) -> None:
    with notification_service(bus.address) as service:
        notifier = DesktopNotifier(bus.env)
        assert notifier.transcript_ready(Path("/home/ann/Clients secret/board meeting.m4a")) is True
        app, replaces, icon, summary, body, actions, hints, expire = service.next_call()
        assert (app, replaces, icon, summary, body) == ("scribed", 0, "text-x-generic", "Transcript ready",
                                                        "board meeting.m4a")
        assert actions == [] and expire == desktop.EXPIRE_MS
        assert hints == {"urgency": ("y", 1), "category": ("s", "transfer.complete")}
        assert notifier.notify("Second", "plain") is True
        assert service.next_call()[3:5] == ("Second", "plain")
        notifier.close()
    # One connection for both: its capabilities were asked once.
    assert service.members == ["GetCapabilities", "Notify", "Notify"]


@needs_dbus
def test_failure_names_the_file_and_a_short_reason(bus: SessionBus) -> None:
    with notification_service(bus.address) as service:
        notifier = DesktopNotifier(bus.env)
        reason = "not a recognised audio format\n  (ffmpeg said: " + "x" * 400 + ")"
        assert notifier.transcription_failed("/srv/share/team/broken.m4a", reason) is True
        _, _, icon, summary, body, _, hints, _ = service.next_call()
        name, detail = body.split("\n")
        assert (icon, summary, name) == ("dialog-error", "Transcription failed", "broken.m4a")
        assert detail.startswith("not a recognised audio format (ffmpeg said: xxx") and detail.endswith("…")
        assert len(detail) == desktop.REASON_MAX
        assert hints["category"] == ("s", "transfer.error")
        assert notifier.transcription_failed("/srv/share/team/other.wav") is True
        assert service.next_call()[4] == "other.wav"  # no reason: no second line
        notifier.close()


@needs_dbus
@pytest.mark.parametrize(("capabilities", "expected"), [
    (["body"], "Q&A <draft>.wav"),
    (["body", "body-markup"], "Q&amp;A &lt;draft&gt;.wav"),  # shown as typed, not as markup
])
def test_body_escaped_only_for_a_server_that_renders_markup(bus: SessionBus, capabilities: list[str],
                                                             expected: str) -> None:
    with notification_service(bus.address, capabilities=capabilities) as service:
        notifier = DesktopNotifier(bus.env)
        assert notifier.transcript_ready("/in/Q&A <draft>.wav")
        assert service.next_call()[4] == expected
        notifier.close()


@needs_dbus
def test_odd_file_names_are_shown_safely(bus: SessionBus) -> None:
    with notification_service(bus.address) as service:
        notifier = DesktopNotifier(bus.env)
        assert notifier.transcript_ready(Path(os.fsdecode(b"/in/caf\xe9.wav")))  # not UTF-8
        assert service.next_call()[4] == "caf\\xe9.wav"
        assert notifier.transcript_ready("/in/two\nlines\t.wav")
        assert service.next_call()[4] == "two lines .wav"
        assert notifier.notify("lone \udcff surrogate", "body")
        assert service.next_call()[3] == "lone \\udcff surrogate"
        notifier.close()


@pytest.mark.parametrize("env", [
    {},
    {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/scribed-test/bus"},
    {"DBUS_SESSION_BUS_ADDRESS": "tcp:host=127.0.0.1,port=9"},  # never tried: AF_UNIX only
    {"XDG_RUNTIME_DIR": "/nonexistent/scribed-test"},
])
def test_no_session_bus_is_silent(env: dict[str, str], logs: list[str]) -> None:
    notifier = DesktopNotifier(env)
    assert notifier.notify("Transcript ready", "a.wav") is False
    assert notifier.transcript_ready("a.wav") is False
    assert len(logs) == 2 and all(line.startswith("DEBUG desktop notification not shown") for line in logs), logs


def test_a_runtime_dir_without_a_bus_socket(tmp_path: Path) -> None:
    (tmp_path / "bus").write_text("not a socket")
    assert desktop.session_bus_address({"XDG_RUNTIME_DIR": str(tmp_path)}) is None
    assert desktop.session_bus_address({}) is None
    assert desktop.session_bus_address({"DBUS_SESSION_BUS_ADDRESS": " unix:path=/x "}) == "unix:path=/x"


@needs_dbus
def test_the_bus_found_through_the_runtime_dir(bus: SessionBus) -> None:
    runtime = str(bus.socket.parent)
    assert desktop.session_bus_address({"XDG_RUNTIME_DIR": runtime}) == f"unix:path={bus.socket}"
    with notification_service(bus.address) as service:
        notifier = DesktopNotifier({"XDG_RUNTIME_DIR": runtime})
        assert notifier.transcript_ready("/in/a.wav")
        assert service.next_call()[4] == "a.wav"
        notifier.close()


@needs_dbus
def test_a_bus_without_a_notification_service(bus: SessionBus, logs: list[str]) -> None:
    notifier = DesktopNotifier(bus.env)
    assert notifier.transcript_ready("/in/a.wav") is False
    assert len(logs) == 1 and logs[0].startswith("DEBUG desktop notification not shown"), logs
    assert "ServiceUnknown" in logs[0]
    with notification_service(bus.address) as service:  # the desktop's server starts later
        assert notifier.transcript_ready("/in/b.wav") is True
        assert service.next_call()[4] == "b.wav"
        notifier.close()


@needs_dbus
def test_a_hung_notification_server_does_not_hold_the_caller(bus: SessionBus, logs: list[str]) -> None:
    with notification_service(bus.address, answer=False) as service:
        notifier = DesktopNotifier(bus.env)
        # No reply ever comes: the call gives up at its deadline (CALL_TIMEOUT_S) instead of waiting.
        assert notifier.transcript_ready("/in/a.wav") is False
        assert service.members == ["GetCapabilities"]
        assert [line.split(":")[0] for line in logs] == ["DEBUG desktop notification not shown"]
        assert "TimeoutError" in logs[0]
        service.answer = True  # the server recovers: a new connection works
        assert notifier.transcript_ready("/in/b.wav") is True
        assert service.next_call()[4] == "b.wav"
        notifier.close()


@needs_dbus
def test_reconnects_once_after_the_bus_restarts(tmp_path: Path, logs: list[str]) -> None:
    with session_bus(tmp_path / "run") as first, notification_service(first.address) as service:
        notifier = DesktopNotifier(first.env)
        assert notifier.transcript_ready("/in/a.wav")
        assert service.next_call()[4] == "a.wav"
    assert notifier._conn is not None  # still holds the connection to the bus that went away
    # A new bus at the same address (e.g. the user logged out and in again).
    with session_bus(tmp_path / "run") as second, notification_service(second.address) as service:
        logs.clear()
        assert notifier.transcript_ready("/in/b.wav") is True  # stale connection: reopened once
        assert service.next_call()[4] == "b.wav"
        assert [line.split(" (")[0] for line in logs] == ["DEBUG session bus connection lost"], logs
        notifier.close()


@needs_dbus
def test_concurrent_callers_share_one_connection(bus: SessionBus) -> None:
    with notification_service(bus.address) as service:
        notifier = DesktopNotifier(bus.env)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda i: notifier.notify("n", f"file{i}.wav"), range(20)))
        assert results == [True] * 20
        assert sorted(service.next_call()[4] for _ in range(20)) == sorted(f"file{i}.wav" for i in range(20))
        notifier.close()
    assert service.members.count("GetCapabilities") == 1


@needs_dbus
def test_works_after_the_process_is_hardened(bus: SessionBus) -> None:
    with notification_service(bus.address) as service:
        proc = run_python(
            """
            from scribed.config import Config
            from scribed.system import harden
            from scribed.system.desktop import DesktopNotifier
            harden.harden_process(Config(), "daemon")  # network and process guards: AF_UNIX only
            print(DesktopNotifier().transcript_ready("/in/guarded.wav"))
            """,
            DBUS_SESSION_BUS_ADDRESS=bus.address,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "True", proc.stderr
        assert service.next_call()[3:5] == ("Transcript ready", "guarded.wav")
    assert "blocked" not in proc.stderr


def test_from_config() -> None:
    assert desktop.from_config(Config()) is None  # off by default
    cfg = parse_config({"watch": {"folders": ["/tmp"]}, "service": {"notify": "desktop"}})
    assert isinstance(desktop.from_config(cfg), DesktopNotifier)


def test_short_reason() -> None:
    assert desktop.short_reason("  a\n b  ") == "a b"
    assert desktop.short_reason("y" * desktop.REASON_MAX) == "y" * desktop.REASON_MAX
    assert len(desktop.short_reason("y" * 1000)) == desktop.REASON_MAX
