"""Shared fixtures: real data paths, the trained tiny model, and session-wide guards.

Guards (autouse):
- network: an audit hook refuses every non-AF_UNIX socket connect/bind/sendto/getaddrinfo made in
  the test process and fails the test that tried — this is how the suite proves scribed opens
  no socket. Tests that must talk to loopback use the ``allow_loopback`` fixture.
- leaks: a test must not leave threads or child processes behind (bounded wait, then fail).
- signals: SIGINT/SIGTERM/SIGHUP handlers are put back after each test, so code that sets them
  in-process (the worker ignores SIGINT) cannot leave later child processes deaf to Ctrl-C
  (an ignored signal is inherited across exec).
- hardening: ``scribed transcribe`` hardens its own process irreversibly (no child process from
  then on, :mod:`scribed.system.harden`); called in the pytest process (``cli.main``) that would
  stop every later test from starting one, so there the "cli" role is recorded
  (``cli_hardening`` fixture), not applied. Its real effect is tested in a child interpreter
  (tests/integration/test_transcribe.py, tests/unit/system/test_harden.py).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SPEECH = SHARED / "speech"
TOKENIZER = SHARED / "models" / "qwen3-asr-0.6b-nonweights"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# -- network guard ------------------------------------------------------------------------------
_NET_ATTEMPTS: list[str] = []
_ALLOW = threading.local()
_WATCHED = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"}


def _audit(event: str, args: tuple) -> None:  # type: ignore[type-arg]
    if event not in _WATCHED:
        return
    if event == "socket.getaddrinfo":
        host = args[0]
        family = None
    else:
        sock = args[0]
        family = getattr(sock, "family", None)
        host = args[1] if len(args) > 1 else None
    if family == socket.AF_UNIX or family == getattr(socket, "AF_NETLINK", -1):
        return
    if getattr(_ALLOW, "loopback", False) and _is_loopback(host):
        return
    detail = f"{event} {host!r}"
    _NET_ATTEMPTS.append(detail)
    raise OSError(f"test network guard: {detail} refused (scribed must not use the network)")


def _is_loopback(host: object) -> bool:
    if isinstance(host, tuple):
        host = host[0]
    if isinstance(host, bytes):
        host = host.decode()
    return isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost"))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _no_network_attempts():
    start = len(_NET_ATTEMPTS)
    yield
    attempts = _NET_ATTEMPTS[start:]
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def allow_loopback():
    _ALLOW.loopback = True
    yield
    _ALLOW.loopback = False


# -- leak guard ---------------------------------------------------------------------------------
_BENIGN_THREADS = ("pydevd", "ThreadPoolExecutor", "Dummy", "asyncio", "QueueFeederThread")


@pytest.fixture(autouse=True)
def _no_leaks():
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()
                   and not t.name.startswith(_BENIGN_THREADS)]
        children = multiprocessing.active_children()
        if not threads and not children:
            return
        if time.monotonic() > deadline:
            for child in children:
                child.kill()
            pytest.fail(f"leaked threads {[t.name for t in threads]} / processes {children}")
        time.sleep(0.05)  # polling a condition with a deadline, not synchronising on time


_GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def cli_hardening(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Roles ``harden_process`` was asked for as "cli" in this process (recorded, not applied)."""
    from scribed.system import harden

    calls: list[str] = []
    real = harden.harden_process

    def record(cfg: object, role: str) -> None:
        if role != "cli":
            return real(cfg, role)  # type: ignore[arg-type]
        calls.append(role)
        return None

    monkeypatch.setattr(harden, "harden_process", record)
    return calls


@pytest.fixture(autouse=True)
def _signals_restored():
    before = {sig: signal.getsignal(sig) for sig in _GUARDED_SIGNALS}
    yield
    for sig, handler in before.items():
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)


# -- data ---------------------------------------------------------------------------------------


def speech_manifest() -> list[dict]:
    if not (SPEECH / "manifest.jsonl").exists():
        return []
    return [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not SPEECH.is_dir():
        pytest.skip("shared speech data (../shared/data/speech) not present")
    return SPEECH


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip("Qwen3-ASR tokenizer files (../shared/data/models) not present")
    return TOKENIZER


def load_clip(path: Path) -> np.ndarray:
    from scribed.media.audio import decode_audio

    return decode_audio(path).samples


@pytest.fixture(scope="session")
def tiny_model(tokenizer_dir: Path) -> Path:
    """A trained tiny Qwen3-ASR checkpoint (real architecture), built once and cached on disk."""
    import transformers

    from fixtures.tinymodel import FIXTURE_VERSION, build_trained_model

    cache_root = Path(os.environ.get("SCRIBED_TEST_CACHE", Path.home() / ".cache" / "scribed-tests"))
    out = cache_root / f"tiny-asr-v{FIXTURE_VERSION}-tf{transformers.__version__}"
    marker = out / "scribed-fixture.json"
    if not marker.exists():
        clips = []
        for entry in speech_manifest():
            path = SHARED / entry["file"]
            if path.exists() and entry["duration_s"] < 16:
                clips.append(load_clip(path))
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        build_trained_model(tmp, tokenizer_dir, speech_clips=clips or None)
        if out.exists():  # another run finished first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(out)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that open real loopback sockets in this process (a fake Hub, a Redis broker) run first.

    An in-process transcription with ``policy.block_network: true`` installs scribed's own network
    guard in the test process, and that guard is irreversible by design; a test that needs a
    loopback socket here must therefore run before any such test, whatever order pytest chose.
    """
    first = [item for item in items if "allow_loopback" in getattr(item, "fixturenames", ())]
    items[:] = first + [item for item in items if item not in first]
