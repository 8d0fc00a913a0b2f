"""File primitives for folders other people can write to: the one definition of each.

Contract:
- Folders are opened as directory fds by :func:`open_dir`, which follows no symlink below a
  trusted root (a folder the owner configured); everything else works relative to such an fd,
  so a sub-folder swapped for a symlink mid-job can never lead outside the roots.
- :func:`write_file` is the one atomic write: a hidden temporary in the same folder
  (:func:`~scribed.system.names.temp_name`), fsynced, then given its name with link() semantics
  (:func:`place_noreplace`, also the one no-replace move); an existing file is replaced only
  when it is a regular file that is ``replaceable`` (same identity) or ``overwrite`` is set. A
  symlink at the name is never followed nor replaced.
- Secure deletion, built on these, is :mod:`scribed.system.shred`.
- :func:`fsync_dir` and :func:`runtime_dir` (the ``$XDG_RUNTIME_DIR`` fallback) live here only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path

from scribed.errors import OutputTaken, TranscriptTaken
from scribed.identity import FileIdentity
from scribed.system.names import NAME_MAX, temp_name

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
NOFOLLOW_DIR = DIR_FLAGS | os.O_NOFOLLOW
# link() is refused here on file systems without hard links (vfat, exfat), and EPERM also when
# fs.protected_hardlinks forbids linking another user's file: both fall back to rename.
_NO_LINK = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS})
_umask_lock = threading.Lock()


# -- folders -----------------------------------------------------------------------------------
def runtime_dir() -> Path | None:
    """The user's private runtime folder: ``$XDG_RUNTIME_DIR`` if it is an absolute, existing
    folder, else ``/run/user/<uid>`` if that exists, else None."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if value and os.path.isabs(value) and os.path.isdir(value):
        return Path(value)
    fallback = Path(f"/run/user/{os.getuid()}")
    return fallback if fallback.is_dir() else None


def fsync_dir(folder: Path | int) -> None:
    """Make a rename/link/unlink in ``folder`` (a path or an open directory fd) durable.

    Best effort: some file systems refuse to fsync a directory.
    """
    with contextlib.suppress(OSError):
        if isinstance(folder, int):
            os.fsync(folder)
            return
        fd = os.open(folder, DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_dir(path: Path, *, root: Path | None = None, create: bool = False, mode: int = 0o777) -> int:
    """Open folder ``path`` and return its fd (the caller closes it), following no symlink below ``root``.

    ``root`` is a folder the owner configured (a watched folder, ``output.dir``, the archive) and
    is opened normally: it may itself be a link its owner made. Each component of ``path`` below
    it is opened relative to its parent's fd with ``O_NOFOLLOW``, so one swapped for a symlink
    raises OSError (ELOOP or ENOTDIR) instead of leading elsewhere. Without ``root`` only the
    last component is opened that way. ``create`` makes missing components (``mode`` minus the
    umask; ``root`` with its parents too). ValueError if ``path`` is not inside ``root``.
    """
    path = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root)) if root is not None else path.parent
    if path == base:  # only the root itself (or "/")
        if create:
            base.mkdir(mode=mode, parents=True, exist_ok=True)
        return os.open(base, DIR_FLAGS)
    if not path.is_relative_to(base):
        raise ValueError(f"{str(path)!r} is not inside {str(base)!r}")
    if create:
        base.mkdir(mode=mode, parents=True, exist_ok=True)
    fd = os.open(base, DIR_FLAGS)
    try:
        for part in path.relative_to(base).parts:
            try:
                child = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # a concurrent mkdir is fine
                    os.mkdir(part, mode, dir_fd=fd)
                child = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd`` (never follows a link), or None if nothing is there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# -- placing files -----------------------------------------------------------------------------
def place_noreplace(src_fd: int, src: str, dst_fd: int, dst: str, *, expect: FileIdentity | None = None) -> bool:
    """Give the file named ``src`` (in folder ``src_fd``) the name ``dst`` (in ``dst_fd``), never
    replacing anything: FileExistsError if ``dst`` exists. Same file system only (EXDEV).

    ``expect``: the identity the file must have; if ``src`` turns out to be another file (swapped
    by someone after the caller checked it), nothing is moved and False is returned. Uses
    link()+unlink(), which the kernel refuses atomically when ``dst`` exists; where link() is not
    possible, checks that ``dst`` is free, then renames (a window only a concurrent creator of
    ``dst`` can hit; vfat and exfat, the usual reason, have no symlinks at all).
    """
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return _rename_noreplace(src_fd, src, dst_fd, dst, expect)
    placed = lstat_at(dst_fd, dst)
    if expect is not None and (placed is None or not same_inode(expect, placed)):
        with contextlib.suppress(OSError):
            os.unlink(dst, dir_fd=dst_fd)  # our own new link to the wrong file
        return False
    still = lstat_at(src_fd, src)
    if still is not None and placed is not None and same_inode(FileIdentity.of(placed), still):
        os.unlink(src, dir_fd=src_fd)
    return True


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str, expect: FileIdentity | None) -> bool:
    if lstat_at(dst_fd, dst) is not None:
        raise FileExistsError(errno.EEXIST, "file exists", dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    placed = lstat_at(dst_fd, dst)
    if expect is not None and (placed is None or not same_inode(expect, placed)):
        if lstat_at(src_fd, src) is None:
            os.rename(dst, src, src_dir_fd=dst_fd, dst_dir_fd=src_fd)  # put the stranger back
        return False
    return True


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written (it may write less at once)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def same_inode(identity: FileIdentity, st: os.stat_result) -> bool:
    """Whether ``st`` is the inode ``identity`` names (device and inode; content may differ)."""
    return (identity.dev, identity.ino) == (st.st_dev, st.st_ino)


def write_at(dir_fd: int, name: str, data: bytes, mode: int, *, replaceable: FileIdentity | None = None,
             overwrite: bool = False, shown: Path | None = None) -> FileIdentity:
    """Atomically create or replace ``name`` in folder ``dir_fd`` with ``data``; see :func:`write_file`."""
    shown = shown if shown is not None else Path(name)
    if len(os.fsencode(name)) > NAME_MAX:
        raise OutputTaken(shown, f"the name is longer than {NAME_MAX} bytes")
    tmp = temp_name(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    placed = False
    try:
        write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
        _place(dir_fd, tmp, name, FileIdentity.of(os.fstat(fd)), replaceable, overwrite, shown)
        placed = True
        identity = FileIdentity.of(os.fstat(fd))
    finally:
        os.close(fd)
        if not placed:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
    fsync_dir(dir_fd)
    return identity


def _place(dir_fd: int, tmp: str, name: str, ours: FileIdentity, replaceable: FileIdentity | None,
           overwrite: bool, shown: Path) -> None:
    for _ in range(8):  # the name may come and go under us; give up rather than spin
        try:
            if place_noreplace(dir_fd, tmp, dir_fd, name, expect=ours):
                return
            raise OutputTaken(shown, "the temporary file was replaced while it was written")
        except FileExistsError:
            pass
        st = lstat_at(dir_fd, name)
        if st is None:
            continue  # removed meanwhile: try to take the free name again
        if stat.S_ISLNK(st.st_mode):
            raise OutputTaken(shown, "a symbolic link is in the way (never followed nor replaced)")
        if not stat.S_ISREG(st.st_mode):
            raise OutputTaken(shown, "something that is not a regular file is in the way")
        if not overwrite and (replaceable is None or not replaceable.same_file(st)):
            raise TranscriptTaken(shown, "a file scribed did not write is in the way (output.overwrite replaces it)")
        # rename() replaces the directory entry; it never writes into the old file (or its links).
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        placed = lstat_at(dir_fd, name)
        if placed is None or not same_inode(ours, placed):
            raise OutputTaken(shown, "the temporary file was replaced while it was written")
        return
    raise OutputTaken(shown, "the name keeps changing under scribed")


def write_file(path: Path, data: bytes, mode: int, *, root: Path | None = None, replaceable: FileIdentity | None = None,
               overwrite: bool = False) -> FileIdentity:
    """Write ``data`` to ``path`` atomically and durably; returns the identity of the file placed.

    Readers see nothing or the whole file. The folder is opened with :func:`open_dir` (created if
    missing; no symlink followed below ``root``); ``mode`` is applied exactly (callers apply the
    umask rule). An existing ``path`` is replaced only if it is a regular file and ``replaceable``
    names it (same dev, inode, size, mtime: a file scribed wrote and nobody changed since) or
    ``overwrite`` is set; a symlink is never followed nor replaced. Otherwise
    :class:`~scribed.errors.OutputTaken` is raised and nothing changes.
    """
    path = Path(path)
    try:
        dir_fd = open_dir(path.parent, root=root, create=True)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise OutputTaken(path, "a folder on the way is a symbolic link or not a folder (never followed)") from None
    try:
        return write_at(dir_fd, path.name, data, mode, replaceable=replaceable, overwrite=overwrite, shown=path)
    finally:
        os.close(dir_fd)


def current_umask() -> int:
    """This process's umask, read without changing it where Linux allows (/proc, since 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # the fallback sets a stricter mask for an instant, never a looser one
        old = os.umask(0o077)
        os.umask(old)
    return old
