"""Privacy primitives: the in-process network guard, core-dump suppression and secure deletion.

Contracts (the daemon and the worker each call what applies to them: the audit hook and the
dumpable flag do not survive exec, so every process that touches audio must call them itself):

- :func:`install_network_guard` refuses, process-wide and irreversibly, every socket that is not
  ``AF_UNIX`` and every name lookup, raising :class:`~scribed.errors.NetworkBlockedError` (an
  ``OSError``, so libraries treat it as "no network"). It sees Python-level sockets only; native
  code calling libc directly is stopped by the systemd unit (``PrivateNetwork=``,
  ``RestrictAddressFamilies=``), not here.
- :func:`secure_delete` overwrites a file's bytes before unlinking it. This is best effort: on
  copy-on-write file systems (btrfs, ZFS), SSDs with wear levelling or with snapshots, old blocks
  may survive; full-disk encryption is the real protection for data at rest.
- :func:`apply_source_after` never removes a recording unless its transcript is a non-empty file.
- :class:`PrivateTempDir` is the only place temporary audio may be written, and only holds files
  it created itself (``scribed-*``), so wiping it can never delete anything else.

Never imports torch; everything here is standard library plus loguru.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import resource
import secrets
import shutil
import socket
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from scribed.errors import ConfigError, NetworkBlockedError, ScribedError

# The Hugging Face stack reads these before touching the Hub: forced, never just defaulted.
OFFLINE_ENV = dict.fromkeys(
    ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_DATASETS_OFFLINE"), "1"
)
SOURCE_ACTIONS = ("keep", "archive", "delete")
TEMP_PREFIX = "scribed-"
_CHUNK = 1 << 20

# --- network guard ----------------------------------------------------------------------------

_guard_lock = threading.Lock()
_guard_installed = False
_callbacks: list[Callable[[str], None]] = []
_reporting = threading.local()  # set while we log, so a blocked call inside a log sink cannot recurse

_ALLOWED_FAMILIES = frozenset({int(socket.AF_UNIX)})
# Frames in the standard library (socket, urllib, http.client) or this module are skipped when
# naming the caller: the useful hint is the first third-party or scribed frame.
_STDLIB_DIR = os.path.dirname(socket.__file__) + os.sep
# Known import-time capability probes that catch the error themselves: refused quietly (DEBUG, no
# callback), so a harmless probe does not look like an attempt to phone home on every start.
_QUIET_PROBES = frozenset({("urllib3/util/connection.py", "_has_ipv6")})


def _family(family: Any) -> str:
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"family {family}"


def _refuse(detail: str) -> None:
    """Log and report one blocked attempt (unless a known probe), then raise NetworkBlockedError."""
    if not getattr(_reporting, "active", False):
        _reporting.active = True
        try:
            frame = sys._getframe(2)
            while frame is not None and frame.f_code.co_filename.startswith((_STDLIB_DIR, __file__)):
                frame = frame.f_back
            where = ("?", "?", 0) if frame is None else (
                "/".join(Path(frame.f_code.co_filename).parts[-3:]), frame.f_code.co_name, frame.f_lineno
            )
            detail = f"{detail} (from {where[0]}:{where[2]})"
            if where[:2] in _QUIET_PROBES:
                logger.debug("network blocked (probe): {}", detail)
            else:
                logger.warning("network blocked: {}", detail)
                for callback in list(_callbacks):
                    try:
                        callback(detail)
                    except Exception as exc:  # a broken callback must not un-block the network
                        logger.debug("network guard callback failed: {!r}", exc)
        finally:
            _reporting.active = False
    raise NetworkBlockedError(errno.ENETUNREACH, f"network access blocked by scribed: {detail}")


def _on_new(args: tuple[Any, ...]) -> None:
    # -1 means "family from fileno=": unknown here, so checked again at connect/bind/send.
    if args[1] != -1 and args[1] not in _ALLOWED_FAMILIES:
        _refuse(f"socket({_family(args[1])})")


def _on_use(event: str) -> Callable[[tuple[Any, ...]], None]:
    def check(args: tuple[Any, ...]) -> None:
        family = getattr(args[0], "family", None)
        if family not in _ALLOWED_FAMILIES:  # the address says where a library tried to go
            _refuse(f"{event} {_family(family)} {args[1]!r}")

    return check


def _on_lookup(event: str) -> Callable[[tuple[Any, ...]], None]:
    return lambda args: _refuse(f"{event} {args[0]!r}")  # DNS queries leave the machine too


def _on_url(args: tuple[Any, ...]) -> None:
    parts = urlsplit(str(args[0]))
    if parts.scheme not in ("file", "data", ""):  # only scheme://host: a query may be private
        _refuse(f"urllib request to {parts.scheme}://{parts.hostname}")


_HANDLERS: dict[str, Callable[[tuple[Any, ...]], None]] = {
    "socket.__new__": _on_new,
    **{f"socket.{e}": _on_use(e) for e in ("connect", "bind", "sendto", "sendmsg")},
    **{f"socket.{e}": _on_lookup(e) for e in ("getaddrinfo", "gethostbyname", "gethostbyaddr", "getnameinfo")},
    "urllib.Request": _on_url,
    "http.client.connect": lambda args: _refuse(f"http connection to {args[1]}:{args[2]}"),
}


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audited event in the process (opens, imports...): one dict lookup when idle.
    handler = _HANDLERS.get(event)
    if handler is not None:
        handler(args)


def install_network_guard(on_block: Callable[[str], None] | None = None) -> None:
    """Block all non-AF_UNIX networking in this process from now on (idempotent, irreversible).

    Every refused attempt is logged as ``network blocked: ...`` at WARNING and passed to each
    ``on_block`` callback registered so far (a later call only adds its callback). Also forces the
    Hugging Face libraries offline through their environment variables.
    """
    global _guard_installed
    os.environ.update(OFFLINE_ENV)
    with _guard_lock:
        if on_block is not None and on_block not in _callbacks:
            _callbacks.append(on_block)
        if not _guard_installed:
            sys.addaudithook(_audit_hook)
            _guard_installed = True
            logger.debug("network guard installed (only AF_UNIX sockets allowed)")


def network_guard_active() -> bool:
    return _guard_installed


@dataclass(frozen=True)
class NetworkReport:
    """What :func:`network_self_test` found. ``reachable``: a route leaves this machine."""

    guard_active: bool
    reachable: bool
    detail: str


_RTF_UP, _RTF_REJECT, _RTF_LOCAL = 0x0001, 0x0200, 0x80000000
# (file, header lines, iface column, flags column); ipv6_route also lists our own addresses
# (RTF_LOCAL) and multicast (ff00::/8), which lead nowhere.
_ROUTE_TABLES = (("/proc/net/route", 1, 0, 3), ("/proc/net/ipv6_route", 0, 9, 8))


def _off_host_routes() -> set[str] | None:
    """Interfaces with a usable route off this host (in our network namespace); None: unknown."""
    ifaces: set[str] = set()
    for table, header, iface, flags_at in _ROUTE_TABLES:
        try:
            with open(table, encoding="ascii") as fh:
                rows = [line.split() for line in fh.readlines()[header:]]
            for row in rows:
                flags = int(row[flags_at], 16)
                usable = flags & _RTF_UP and not flags & (_RTF_REJECT | _RTF_LOCAL)
                multicast = table.endswith("ipv6_route") and row[0].startswith("ff")
                if row[iface] != "lo" and usable and not multicast:
                    ifaces.add(row[iface])
        except FileNotFoundError:
            if table.endswith("ipv6_route"):
                continue  # no IPv6 in this kernel
            return None
        except (OSError, ValueError, IndexError):
            return None
    return ifaces


def network_self_test() -> NetworkReport:
    """Report the guard state and whether any route leaves this machine. Sends no packet."""
    guard = network_guard_active()
    ifaces = _off_host_routes()
    if ifaces is None:
        reachable, where = True, "routes unknown (cannot read /proc/net/route)"
    elif ifaces:
        reachable, where = True, f"routes off this machine via {', '.join(sorted(ifaces))}"
    else:
        reachable, where = False, "no route off this machine"
    state = "blocked in-process" if guard else "NOT blocked in-process"
    return NetworkReport(guard_active=guard, reachable=reachable, detail=f"network: {state}; {where}")


# --- process hardening ------------------------------------------------------------------------

_PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """No core file and no ptrace-by-same-user for this process (best effort; Linux only).

    A core dump or a debugger attached to the worker would expose audio and transcripts. The
    dumpable flag is reset by exec, so a spawned worker must call this itself.
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        logger.debug("cannot set RLIMIT_CORE to 0: {}", exc)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_DUMPABLE, 0) failed: errno {}", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            logger.debug("prctl unavailable: {}", exc)


# --- secure deletion --------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def overwrite_fd(fd: int, size: int, passes: int) -> None:
    """Overwrite bytes [0, size) of ``fd`` ``passes`` times: random on odd passes, zeros on even.

    Each pass is fsynced, so it reaches the device before the next one starts.
    """
    for n in range(1, passes + 1):
        block = os.urandom(_CHUNK) if n % 2 else bytes(_CHUNK)
        os.lseek(fd, 0, os.SEEK_SET)
        left = size
        while left > 0:
            written = os.write(fd, block[: min(left, _CHUNK)])
            left -= written
        os.fsync(fd)


def secure_delete(path: Path, passes: int) -> None:
    """Overwrite ``path`` ``passes`` times, truncate it to 0, fsync, then unlink it.

    ``passes=0`` is a plain unlink. A missing file is not an error. A symlink or a non-regular
    file (FIFO, socket) is unlinked without writing through it; a directory raises
    ``IsADirectoryError``. Other hard links to the file see the overwritten, then empty, content.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "secure_delete: is a directory", str(path))
    if passes > 0 and stat.S_ISREG(st.st_mode):
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(path, flags)
            except PermissionError:
                if st.st_uid != os.getuid():
                    raise
                os.chmod(path, 0o600, follow_symlinks=False)  # a read-only recording we own
                fd = os.open(path, flags)
        except FileNotFoundError:
            return
        try:
            overwrite_fd(fd, os.fstat(fd).st_size, passes)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


# --- file systems -----------------------------------------------------------------------------

NETWORK_FILESYSTEMS: frozenset[str] = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "coda", "ceph", "fuse.ceph",
        "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs", "orangefs", "pvfs2", "ocfs2",
        "gfs2", "davfs", "fuse.davfs2", "sshfs", "fuse.sshfs", "fuse.rclone", "fuse.s3fs",
        "fuse.gcsfuse", "fuse.goofys", "fuse.juicefs", "fuse.curlftpfs", "fuse.mfs",
    }
)  # fmt: skip
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape_mount(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as \\040 \\011 \\012 \\134."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: Path, *, mounts_text: str | None = None) -> str:
    """The type of the mount holding ``path`` (longest mount-point prefix), or "unknown".

    Reads /proc/self/mounts unless ``mounts_text`` (the same format) is given.
    """
    target = Path(os.path.abspath(path)).resolve()
    if mounts_text is None:
        try:
            with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as fh:
                mounts_text = fh.read()
        except OSError:
            return "unknown"
    best, best_len = "unknown", -1
    for fields in (line.split() for line in mounts_text.splitlines()):
        if len(fields) >= 3:
            mount = Path(_unescape_mount(fields[1]))
            # ">=": a later mount on the same point hides the earlier one.
            if len(mount.parts) >= best_len and target.is_relative_to(mount):
                best, best_len = fields[2], len(mount.parts)
    return best


def is_network_filesystem(path: Path, *, mounts_text: str | None = None) -> bool:
    fstype = filesystem_type(path, mounts_text=mounts_text)
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith(("nfs", "smb", "cifs"))


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- the private temp dir ---------------------------------------------------------------------


def _temp_dir_error(problem: str) -> ConfigError:
    return ConfigError([f"At 'policy.temp_dir': {problem}"])


def _default_temp_base() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime) / "scribed"
    fallback = Path(f"/run/user/{os.getuid()}")
    if fallback.is_dir():
        return fallback / "scribed"
    raise _temp_dir_error(
        f"expected a path: $XDG_RUNTIME_DIR is not set and {fallback} does not exist, so there is no"
        " private tmpfs to default to"
    )


class PrivateTempDir:
    """A 0700 folder for temporary audio; only ``scribed-*`` files created here live in it."""

    def __init__(self, base: Path | None, watched: Sequence[Path], passes: int) -> None:
        path = Path(os.path.abspath(base.expanduser())) if base is not None else _default_temp_base()
        resolved = path.resolve()
        for folder in (Path(f).expanduser().resolve() for f in watched):
            if resolved.is_relative_to(folder) or folder.is_relative_to(resolved):
                raise _temp_dir_error(
                    f"expected a folder outside (and not containing) the watched folder {str(folder)!r},"
                    f" got {str(path)!r}"
                )
        fstype = filesystem_type(_existing_ancestor(resolved))
        if is_network_filesystem(_existing_ancestor(resolved)):
            raise _temp_dir_error(f"expected a local folder, got {str(path)!r} on a {fstype} network mount")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(path)
        except OSError as exc:
            raise _temp_dir_error(f"expected a folder we can create, got {str(path)!r}: {exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise _temp_dir_error(f"expected a real directory (not a symlink), got {str(path)!r}")
        if st.st_uid != os.getuid():
            raise _temp_dir_error(f"expected a folder owned by uid {os.getuid()}, got {str(path)!r} (uid {st.st_uid})")
        os.chmod(path, 0o700)
        if fstype not in ("tmpfs", "ramfs"):
            logger.warning("temp dir {} is on {}, not tmpfs: temporary audio will touch the disk", path, fstype)
        self.path = path
        self.passes = passes

    def create(self, suffix: str = "") -> tuple[int, Path]:
        """A new empty file (O_EXCL, mode 0600); returns its open read-write fd and its path."""
        if "/" in suffix or "\0" in suffix:
            raise ValueError(f"invalid temp file suffix {suffix!r}")
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        while True:
            name = self.path / f"{TEMP_PREFIX}{secrets.token_hex(8)}{suffix}"
            try:
                return os.open(name, flags, 0o600), name
            except FileExistsError:
                continue

    def remove(self, path: Path) -> None:
        """Securely delete one file created by :meth:`create` (refuses paths outside the dir)."""
        path = Path(path)
        if path.parent.resolve() != self.path.resolve():
            raise ValueError(f"{str(path)!r} is not inside the private temp dir {str(self.path)!r}")
        secure_delete(path, self.passes)

    def wipe_stale(self) -> int:
        """Securely delete every ``scribed-*`` file left by a crash; returns how many."""
        count = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
                    secure_delete(Path(entry.path), self.passes)
                    count += 1
        if count:
            logger.info("wiped {} stale temporary file(s) from {}", count, self.path)
        return count


# --- what happens to a recording after its transcript is written ------------------------------


def _unique(dest: Path) -> Path:
    """``dest`` or the first free ``name (N).ext``."""
    candidate, n = dest, 2
    while os.path.lexists(candidate):
        candidate = dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
        n += 1
    return candidate


def _place_without_overwrite(src: Path, dest: Path) -> Path:
    """Give ``src`` the name ``dest`` (or ``dest (N)``), never replacing a file; same fs only."""
    while True:
        final = _unique(dest)
        try:
            os.link(src, final)  # fails instead of overwriting, unlike rename
        except FileExistsError:
            continue  # somebody took the name between the check and the link
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.rename(src, final)  # no hard links here (vfat, exfat): check-then-rename
            return final
        os.unlink(src)
        return final


def _copy_across(source: Path, dest: Path, passes: int) -> Path:
    """Copy to the archive file system, fsync, verify the size, then securely delete the source."""
    size = os.stat(source).st_size
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb", closefd=True) as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
            copied = os.fstat(out.fileno()).st_size
        if copied != size:
            raise ScribedError(f"archiving {str(source)!r}: copied {copied} of {size} bytes")
        shutil.copystat(source, partial)
        final = _place_without_overwrite(partial, dest)
    except BaseException:
        secure_delete(partial, passes)  # a partial copy of the recording is still the recording
        raise
    _fsync_dir(final.parent)
    secure_delete(source, passes)
    return final


def apply_source_after(
    source: Path,
    transcript: Path,
    action: str,
    *,
    archive_dir: Path | None,
    watch_root: Path,
    passes: int,
) -> Path | None:
    """Keep, archive or securely delete ``source`` once ``transcript`` has been written.

    ``keep`` returns None and touches nothing. For ``archive`` and ``delete`` the transcript must be
    a regular, non-empty file (and not the recording itself), else ScribedError is raised and
    nothing is touched. ``archive`` moves the recording to ``archive_dir / source.relative_to
    (watch_root)``, adding `` (2)``... rather than overwriting, and returns the new path; across
    file systems it copies, fsyncs, verifies the size and then securely deletes the original.
    ``delete`` securely deletes the recording and returns None.
    """
    if action not in SOURCE_ACTIONS:
        raise ValueError(f"unknown policy.source_after action {action!r}")
    if action == "keep":
        return None
    source, transcript = Path(source), Path(transcript)
    try:
        tst = os.lstat(transcript)
        sst = os.lstat(source)
    except OSError as exc:
        raise ScribedError(f"not removing {str(source)!r}: {exc.strerror}: {exc.filename!r}") from None
    if not stat.S_ISREG(tst.st_mode) or tst.st_size == 0:
        raise ScribedError(f"not removing {str(source)!r}: transcript {str(transcript)!r} is not a non-empty file")
    if not stat.S_ISREG(sst.st_mode) or (tst.st_dev, tst.st_ino) == (sst.st_dev, sst.st_ino):
        raise ScribedError(f"not removing {str(source)!r}: not a regular file distinct from its transcript")
    if action == "delete":
        secure_delete(source, passes)
        logger.info("deleted recording {} (transcript written)", source)
        return None
    if archive_dir is None:
        raise ScribedError(f"not archiving {str(source)!r}: policy.archive_dir is not set")
    try:
        relative = source.absolute().relative_to(Path(watch_root).absolute())
    except ValueError:
        try:
            relative = source.resolve().relative_to(Path(watch_root).resolve())
        except ValueError:
            raise ScribedError(f"not archiving {str(source)!r}: not inside {str(watch_root)!r}") from None
    dest = Path(archive_dir).expanduser() / relative
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        final = _place_without_overwrite(source, dest)
        _fsync_dir(final.parent)
        _fsync_dir(source.parent)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        final = _copy_across(source, dest, passes)
    logger.info("archived recording {} -> {}", source, final)
    return final
