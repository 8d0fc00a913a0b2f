"""``service.notify: desktop`` end to end: `scribed run` (hardened, as users run it) sends
"Transcript ready" and "Transcription failed" to a notification service on a real session bus
(``dbus-daemon`` started by the test, see tests/dbus_session.py), naming the file only."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import Env, wait_for

from dbus_session import SessionBus, notification_service, session_bus


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[SessionBus]:
    with session_bus(tmp_path / "run") as session:
        yield session


def test_the_daemon_notifies_when_a_transcript_is_ready_or_a_recording_failed(
        tiny_model: Path, tmp_path: Path, bus: SessionBus) -> None:
    env = Env(tmp_path, tiny_model, service={"notify": "desktop"})
    env.extra_env.update(bus.env)
    with notification_service(bus.address) as service:
        try:
            daemon = env.start()
            secret = env.inbox / "Client X confidential"
            secret.mkdir()
            env.drop("standup.wav", folder=secret)
            ready = service.next_call(timeout=300)
            app, _, _, summary, body, _, _, _ = ready
            assert (app, summary, body) == ("scribed", "Transcript ready", "standup.wav")
            assert env.states()["standup.wav"] == "done"
            transcript = (secret / "standup.txt").read_text().strip()

            staged = tmp_path / "staging" / "broken.m4a"
            staged.write_bytes(os.urandom(3000))
            os.rename(staged, env.inbox / "broken.m4a")
            failed = service.next_call(timeout=300)
            _, _, icon, summary, body, _, _, _ = failed
            assert (icon, summary) == ("dialog-error", "Transcription failed")
            name, reason = body.split("\n")
            assert name == "broken.m4a" and "not a recognised audio" in reason
            wait_for(lambda: env.states().get("broken.m4a") == "failed", what="broken.m4a failed")

            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
        finally:
            env.stop_all()
    assert transcript  # the privacy check below means something
    shown = repr([ready, failed])
    assert "confidential" not in shown and transcript not in shown
    assert service.calls.empty()  # one notification per finished recording
    assert "network blocked" not in env.log()
