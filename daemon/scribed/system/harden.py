"""Process hardening: one call at the start of every scribed process that touches recordings.

Contract: :func:`harden_process` (``role`` "daemon", "worker" or "cli": ``scribed transcribe``,
which reads recordings in its own process), idempotent and irreversible:
- no core dumps and not dumpable (no ptrace by the same user): a core or a debugger would
  expose audio and transcripts;
- the Hugging Face stack forced offline (:data:`~scribed.system.netguard.OFFLINE_ENV`) and the
  in-process network guard installed when ``policy.block_network``;
- the worker's (and the cli's) temporary files directed to a private folder (``TMPDIR`` and
  friends): the 0700 :class:`~scribed.system.tempdir.PrivateTempDir` in ``tmpfs`` mode, else the
  user's runtime dir; only the worker wipes what a crashed run left there (a ``scribed
  transcribe`` beside a running daemon must not delete its worker's files);
- from then on, creating a process is refused with :class:`ProcessCreationBlocked` (a
  PermissionError) and logged: the audit events ``subprocess.Popen``, ``os.system``,
  ``os.exec``, ``os.posix_spawn`` and ``os.spawn``, and multiprocessing's spawn (which raises no
  event; its ``_posixsubprocess.fork_exec`` is wrapped). A child would run without the network
  guard, so none may start, except inside :func:`allow_process_creation` in the calling thread
  (the daemon's sanctioned worker start). ``os.fork`` without exec stays allowed: the child is a
  copy of this process with every hook still installed, and its exec is refused in turn.
Limits: native code (ctypes, C extensions calling fork/exec or socket directly) is not seen by
audit hooks; the systemd unit (``PrivateNetwork=``, ``RestrictAddressFamilies=``) covers it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from loguru import logger

from scribed.system import files, netguard

if TYPE_CHECKING:
    from scribed.config import Config

ROLES = ("daemon", "worker", "cli")
TEMP_ENV = ("TMPDIR", "TEMP", "TMP", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_PR_SET_DUMPABLE = 4
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"})
# ctypes.util.find_library probes ldconfig/gcc/ld through subprocess and copes with an OSError:
# refused quietly (DEBUG) so that a library looking for a shared object is not reported as an attack.
_QUIET_CALLERS = (os.path.join("ctypes", "util.py"),)

_permit = threading.local()
_state_lock = threading.Lock()
_guard_installed = False


class ProcessCreationBlocked(PermissionError):
    """Starting a process was refused by scribed's process guard (see :func:`harden_process`)."""


def disable_core_dumps() -> None:
    """No core file and no ptrace-by-same-user for this process (best effort; Linux only).

    The dumpable flag is reset by exec, so a spawned worker must call this itself.
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        logger.debug("cannot set RLIMIT_CORE to 0: {}", exc)
    if sys.platform.startswith("linux"):
        try:
            from scribed.system.libc import libc

            if libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_DUMPABLE, 0) failed: errno {}", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            logger.debug("prctl unavailable: {}", exc)


@contextlib.contextmanager
def allow_process_creation() -> Iterator[None]:
    """Let the calling thread start processes inside this block (e.g. the worker's ``start()``)."""
    _permit.depth = getattr(_permit, "depth", 0) + 1
    try:
        yield
    finally:
        _permit.depth -= 1


def process_guard_active() -> bool:
    return _guard_installed


def _program(event: str, args: tuple[Any, ...]) -> str:
    """The program a process-creation event would run (never its arguments: they may be private)."""
    first = args[0] if args else None
    if event == "subprocess.Popen" and first is None and args[1:2]:
        first = args[1]
    if isinstance(first, list | tuple):
        first = first[0] if first else None
    if event == "os.system" and isinstance(first, bytes | str):
        first = os.fsdecode(first).split(" ", 1)[0]
    if event == "os.spawn" and len(args) > 1:
        first = args[1]
    return os.fsdecode(first) if isinstance(first, bytes | str | os.PathLike) else "?"


def _refuse(event: str, program: str) -> None:
    quiet = False
    frame: Any = sys._getframe(1)
    while frame is not None and not quiet:
        quiet = frame.f_code.co_filename.endswith(_QUIET_CALLERS)
        frame = frame.f_back
    where = netguard.caller_outside(__file__)
    detail = f"{event} {program!r} (from {where[0]}:{where[2]})"
    logger.log("DEBUG" if quiet else "WARNING", "process creation blocked: {}", detail)
    raise ProcessCreationBlocked(errno.EPERM, f"process creation blocked by scribed: {detail}")


def _process_hook(event: str, args: tuple[Any, ...]) -> None:
    if event in _PROCESS_EVENTS and not getattr(_permit, "depth", 0):
        _refuse(event, _program(event, args))


def _guard_fork_exec(original: Callable[..., int]) -> Callable[..., int]:
    def fork_exec(*args: Any, **kwargs: Any) -> int:
        if not getattr(_permit, "depth", 0):
            _refuse("fork_exec", _program("fork_exec", args))
        return original(*args, **kwargs)

    fork_exec.__wrapped__ = original  # type: ignore[attr-defined]
    return fork_exec


def install_process_guard() -> None:
    """Refuse process creation from now on, outside :func:`allow_process_creation` (idempotent)."""
    global _guard_installed
    with _state_lock:
        if _guard_installed:
            return
        import _posixsubprocess  # multiprocessing and subprocess both look it up at call time

        _posixsubprocess.fork_exec = _guard_fork_exec(_posixsubprocess.fork_exec)
        sys.addaudithook(_process_hook)
        _guard_installed = True
    logger.debug("process guard installed (no child processes from here on)")


def private_temp_env(cfg: Config, *, wipe: bool = True) -> str:
    """Point temporary-file variables at a private folder; returns it (see the module contract).
    ``wipe``: first delete what a crashed process left there (the worker's start)."""
    if cfg.policy.intermediates == "tmpfs":
        from scribed.system.tempdir import PrivateTempDir

        temp = PrivateTempDir(cfg.policy.temp_dir, cfg.watch.folders, cfg.policy.secure_delete_passes)
        if wipe:
            temp.wipe_stale()
        target = str(temp.path)
    else:
        # memory: nothing of ours is written; libraries that insist on a temp file still get a
        # private folder rather than the shared /tmp where one exists.
        runtime = files.runtime_dir()
        target = str(runtime) if runtime else os.environ.get("TMPDIR") or "/tmp"
    for var in TEMP_ENV:
        os.environ[var] = target
    return target


def harden_process(cfg: Config, role: str) -> None:
    """Harden this process as ``role`` ("daemon" or "worker"): see the module contract."""
    if role not in ROLES:
        raise ValueError(f"unknown process role {role!r} (expected one of {', '.join(ROLES)})")
    disable_core_dumps()
    os.environ.update(netguard.OFFLINE_ENV)
    if cfg.policy.block_network:
        netguard.install_network_guard()
    if role in ("worker", "cli"):
        private_temp_env(cfg, wipe=role == "worker")
    install_process_guard()
    logger.debug("{} hardened (network guard {})", role, "on" if cfg.policy.block_network else "off")
