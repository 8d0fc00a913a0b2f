"""Tests for scribed.system.harden: one call hardens a process (core dumps, offline, network guard,
private temp dir) and from then on refuses to start child processes, which would escape the
in-process network guard.

Every test hardens a fresh child interpreter (the guards are irreversible) and tries what a
compromised decoder or an over-eager library would: curl, os.system, a child Python opening a
socket, posix_spawn, exec, multiprocessing. Each attempt is checked by its effect (a marker file
the child would have created, a connection a listener would have seen), not only by the error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pychild import run_python

HARDEN = """
import json, os, socket, subprocess, sys
from pathlib import Path
from scribed.config import parse_config
from scribed.system import harden, netguard
cfg = parse_config({{"watch": {{"folders": [{inbox!r}]}}, "policy": {policy}}})
"""


def _hardened(tmp_path: Path, body: str, policy: dict | None = None, **env: str):
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    code = HARDEN.format(inbox=str(inbox), policy=repr(policy or {})) + body
    return run_python(code, cwd=tmp_path, **env)


def test_disable_core_dumps() -> None:
    proc = run_python(
        """
        import ctypes, resource
        from scribed.system import harden
        harden.disable_core_dumps()
        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        print(resource.getrlimit(resource.RLIMIT_CORE), dumpable)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(0, 0) 0"


def test_harden_process_daemon(tmp_path: Path) -> None:
    proc = _hardened(tmp_path, """
import ctypes, resource
before = subprocess.run([sys.executable, "-c", "pass"]).returncode  # allowed before hardening
harden.harden_process(cfg, "daemon")
harden.harden_process(cfg, "daemon")  # idempotent
print(json.dumps({
    "before": before, "core": resource.getrlimit(resource.RLIMIT_CORE),
    "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), "guard": netguard.network_guard_active(),
    "process_guard": harden.process_guard_active(),
    "offline": {k: os.environ.get(k) for k in netguard.OFFLINE_ENV},
    "tmpdir_changed": os.environ.get("TMPDIR") != "untouched",
}))
""", TMPDIR="untouched")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] == 0
    assert out["core"] == [0, 0] and out["dumpable"] == 0
    assert out["guard"] and out["process_guard"]
    assert set(out["offline"].values()) == {"1"}
    assert out["tmpdir_changed"] is False  # the temp-dir env is the worker's business


def test_harden_process_without_network_guard(tmp_path: Path) -> None:
    proc = _hardened(tmp_path, """
harden.harden_process(cfg, "worker")
print(netguard.network_guard_active(), harden.process_guard_active())
""", policy={"block_network": False})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_worker_gets_a_private_temp_dir(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    stale = runtime / "scribed"
    stale.mkdir(mode=0o700)
    (stale / "scribed-0123abcd.pcm").write_bytes(b"audio left by a crash")
    proc = _hardened(tmp_path, """
harden.harden_process(cfg, "worker")
print(json.dumps({v: os.environ.get(v) for v in harden.TEMP_ENV}))
""", policy={"intermediates": "tmpfs"}, XDG_RUNTIME_DIR=str(runtime))
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout).values()) == {str(stale)}
    assert list(stale.iterdir()) == []  # the stale temporary was wiped
    assert stale.stat().st_mode & 0o777 == 0o700

    proc = _hardened(tmp_path, """
harden.harden_process(cfg, "worker")
print(os.environ["TMPDIR"])
""", XDG_RUNTIME_DIR=str(runtime))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(runtime)  # memory mode: the private runtime dir, not /tmp


def test_cli_is_hardened_but_leaves_the_workers_temporaries(tmp_path: Path) -> None:
    """``scribed transcribe`` (role "cli"): the guards and the private temp folder as a worker's,
    but what is in that folder stays: it may be a running daemon's worker's."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    private = runtime / "scribed"
    private.mkdir(mode=0o700)
    live = private / "scribed-0123abcd.pcm"
    live.write_bytes(b"audio of a worker running now")
    proc = _hardened(tmp_path, """
import ctypes
harden.harden_process(cfg, "cli")
try:
    subprocess.run([sys.executable, "-c", "pass"])
    child = "started"
except PermissionError:
    child = "blocked"
print(json.dumps({"tmp": {v: os.environ.get(v) for v in harden.TEMP_ENV}, "child": child,
                  "guard": netguard.network_guard_active(), "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)}))
""", policy={"intermediates": "tmpfs"}, XDG_RUNTIME_DIR=str(runtime))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["tmp"].values()) == {str(private)}
    assert out["child"] == "blocked" and out["guard"] and out["dumpable"] == 0
    assert live.read_bytes() == b"audio of a worker running now"


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    proc = _hardened(tmp_path, """
try:
    harden.harden_process(cfg, "helper")
except ValueError as exc:
    print("refused", harden.process_guard_active())
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "refused False"


ATTEMPTS = """
import multiprocessing, shutil
marker = Path("marker")
# A child Python would run without the network guard: it marks that it ran, then phones home.
child_py = "open('marker', 'w').write('ran'); import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"
curl = shutil.which("curl")

def attempt(name, fn):
    try:
        fn()
    except harden.ProcessCreationBlocked as exc:
        out[name] = "blocked" if isinstance(exc, PermissionError) else "wrong type"
    except Exception as exc:
        out[name] = f"other: {exc!r}"
    else:
        out[name] = "ran"

out = {}
harden.harden_process(cfg, "worker")
attempt("child_python", lambda: subprocess.run([sys.executable, "-c", child_py], timeout=20))
attempt("curl", lambda: subprocess.run([curl or "curl", "-s", "http://127.0.0.1:9/"], timeout=20))
attempt("os_system", lambda: os.system("touch marker"))
attempt("posix_spawn", lambda: os.waitpid(os.posix_spawn("/bin/sh", ["sh", "-c", "touch marker"], dict(os.environ)), 0))
attempt("spawnv", lambda: os.waitpid(os.spawnv(os.P_NOWAIT, "/bin/sh", ["sh", "-c", "touch marker"]), 0))
attempt("multiprocessing", lambda: multiprocessing.get_context("spawn").Process(target=print).start())
out["spawnv_marker"] = marker.exists()
pid = os.fork()  # a plain fork stays allowed: the child is this process, hooks and all...
if pid == 0:
    try:
        os.execv("/bin/sh", ["sh", "-c", "touch marker"])  # ...and cannot exec
    finally:
        os._exit(7)
out["fork_exec_status"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
with harden.allow_process_creation():
    out["allowed"] = subprocess.run(["/bin/sh", "-c", "exit 3"]).returncode
attempt("after_allowed", lambda: subprocess.run(["/bin/sh", "-c", "exit 0"]))
out["marker"] = marker.exists()
print(json.dumps(out))
"""


def test_no_child_process_after_hardening(tmp_path: Path) -> None:
    proc = _hardened(tmp_path, ATTEMPTS)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for name in ("child_python", "curl", "os_system", "posix_spawn", "multiprocessing", "after_allowed"):
        assert out[name] == "blocked", (name, out[name], proc.stderr)
    assert out["fork_exec_status"] == 7  # the exec in the forked child was refused
    assert out["allowed"] == 3  # inside allow_process_creation() a process runs normally
    assert out["marker"] is False and out["spawnv_marker"] is False
    assert not (tmp_path / "marker").exists()
    assert "process creation blocked: subprocess.Popen" in proc.stderr
    assert "process creation blocked: os.system 'touch'" in proc.stderr
    assert "process creation blocked: fork_exec" in proc.stderr  # multiprocessing's spawn
    assert "touch marker" not in proc.stderr.replace("'touch'", "")  # the program, never its arguments


def test_the_same_attempts_succeed_without_hardening(tmp_path: Path) -> None:
    """The control: without harden_process the very same attempts do start processes."""
    proc = run_python("""
        import os
        os.system("touch marker")
        print(os.path.exists("marker"))
        """, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_library_probes_are_refused_quietly(tmp_path: Path) -> None:
    proc = _hardened(tmp_path, """
import ctypes.util
harden.harden_process(cfg, "worker")
print(ctypes.util.find_library("surely-no-such-library-xyz"))
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"
    blocked = [line for line in proc.stderr.splitlines() if "process creation blocked" in line]
    assert blocked and all("| DEBUG " in line for line in blocked), proc.stderr  # refused, but quietly
    assert "WARNING" not in proc.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_alone_would_have_run(tmp_path: Path) -> None:
    """Control for the curl attempt: curl exists and starts when the process is not hardened."""
    proc = run_python("""
        import shutil, subprocess
        print(subprocess.run([shutil.which("curl"), "--version"], capture_output=True).returncode)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_the_real_decoding_stack_works_in_a_hardened_worker(tmp_path: Path) -> None:
    """soundfile, PyAV and numpy load and decode with process creation refused."""
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "tone.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(16000) / 5)).astype("float32"), 16000)
    proc = _hardened(tmp_path, f"""
harden.harden_process(cfg, "worker")
from scribed.media import audio
samples = audio.decode_audio(Path({str(wav)!r}))
print(len(samples.samples) > 15000)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "True"
    assert "process creation blocked" not in proc.stderr, proc.stderr


def test_the_engine_modules_load_in_a_hardened_worker_without_starting_anything(tmp_path: Path) -> None:
    """The engine's C-library lookups (malloc_trim, madvise, prctl) use the process's own symbols:
    importing them after hardening asks for no process (find_library would have run ldconfig)."""
    proc = _hardened(tmp_path, """
harden.harden_process(cfg, "worker")
from scribed.engine import prepack, qwen3
print(qwen3._LIBC is not None, prepack._LIBC is not None)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["True", "True"]
    assert "process creation blocked" not in proc.stderr, proc.stderr
