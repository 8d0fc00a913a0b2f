"""Secure deletion in folders other people can write to: overwrite, then unlink, by identity.

Contract:
- :func:`secure_delete_at` overwrites a file before unlinking it, but never a recording with
  other hard links (that would destroy the other copy): it unlinks it and logs that a copy
  survives, or refuses (``policy.hardlinked``, :data:`HARDLINKED`); scribed's own temporaries
  are always overwritten. A file replaced or linked while it is being deleted is left alone
  (ScribedError); a FIFO swapped in cannot make it hang (opened non-blocking).
- :func:`wipe_stale_temporaries` walks iteratively through directory fds, with a depth limit,
  never following links and never raising on a hostile tree.
- Folders are opened and names looked up only through :mod:`scribed.system.files`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from loguru import logger

from scribed.errors import ScribedError
from scribed.identity import FileIdentity
from scribed.system import files
from scribed.system.names import is_scribed_temp

HARDLINKED = ("unlink", "refuse")  # policy.hardlinked: what to do with a file that has other links
_CHUNK = 1 << 20


def overwrite_fd(fd: int, size: int, passes: int) -> None:
    """Overwrite bytes [0, size) of ``fd`` ``passes`` times: random on odd passes, zeros on even.

    Each pass is fsynced, so it reaches the device before the next one starts.
    """
    for n in range(1, passes + 1):
        block = os.urandom(_CHUNK) if n % 2 else bytes(_CHUNK)
        os.lseek(fd, 0, os.SEEK_SET)
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(left, _CHUNK)])
        os.fsync(fd)


def secure_delete_at(dir_fd: int, name: str, passes: int, *, expect: FileIdentity | None = None,
                     hardlinked: str = "unlink") -> bool:
    """Overwrite ``name`` (in folder ``dir_fd``) ``passes`` times, truncate, fsync, then unlink it.

    Returns False if nothing was there. ``passes=0`` is a plain unlink; a symlink or other
    non-regular file is unlinked without writing through it; a directory raises IsADirectoryError.
    ``expect``: ScribedError (nothing touched) unless the file is that one. A file with other hard
    links is not overwritten (a backup made with ``cp -al`` would be emptied): with
    ``hardlinked="unlink"`` only this name is removed and a warning says another copy survives,
    with ``"refuse"`` ScribedError is raised and nothing is touched. ``"overwrite"`` is for
    scribed's own temporaries only: their text must not survive through a link someone made.
    """
    st = files.lstat_at(dir_fd, name)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "secure delete: is a directory", name)
    if expect is not None and not expect.same_file(st):
        raise ScribedError(f"not deleting {name!r}: it is not the file scribed checked (changed or replaced)")
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and hardlinked != "overwrite":
        if hardlinked == "refuse":
            raise ScribedError(f"not deleting {name!r}: it has {st.st_nlink - 1} other hard link(s)"
                               " and policy.hardlinked is 'refuse'")
        logger.warning("{!r} has {} other hard link(s): removed this name without overwriting, another copy"
                       " survives", name, st.st_nlink - 1)
    elif stat.S_ISREG(st.st_mode) and passes > 0:
        _overwrite_at(dir_fd, name, st, passes, links_allowed=hardlinked == "overwrite")
    now = files.lstat_at(dir_fd, name)
    if now is None:
        return True
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise ScribedError(f"not deleting {name!r}: it was replaced while it was being deleted")
    os.unlink(name, dir_fd=dir_fd)
    files.fsync_dir(dir_fd)
    return True


def _overwrite_at(dir_fd: int, name: str, st: os.stat_result, passes: int, *, links_allowed: bool) -> None:
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO swapped in cannot hang us
    try:
        fd = os.open(name, os.O_WRONLY | flags, dir_fd=dir_fd)
    except PermissionError:
        if st.st_uid != os.getuid():
            raise
        fd = os.open(name, os.O_RDONLY | flags, dir_fd=dir_fd)  # a read-only recording we own
        try:
            if files.same_inode(FileIdentity.of(st), os.fstat(fd)):
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        fd = os.open(name, os.O_WRONLY | flags, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if not files.same_inode(FileIdentity.of(st), now) or (now.st_nlink > 1 and not links_allowed):
            raise ScribedError(f"not overwriting {name!r}: it was replaced or linked while it was being deleted")
        overwrite_fd(fd, now.st_size, passes)
        os.ftruncate(fd, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def secure_delete(path: Path, passes: int, *, hardlinked: str = "overwrite") -> bool:
    """:func:`secure_delete_at` by path, for scribed's own files (default: overwritten even when
    linked elsewhere); the folder itself must not be a symlink. False if missing."""
    path = Path(path)
    try:
        dir_fd = files.open_dir(path.parent)
    except FileNotFoundError:
        return False
    try:
        return secure_delete_at(dir_fd, path.name, passes, hardlinked=hardlinked)
    finally:
        os.close(dir_fd)


def wipe_stale_temporaries(folders: Iterable[Path], passes: int, *, max_depth: int = 64) -> int:
    """Securely delete scribed's temporaries (:func:`is_scribed_temp`) left by a crash; returns how many.

    Walks each folder iteratively through directory fds (at most ``max_depth + 1`` open at once),
    never follows a symlink, does not descend below ``max_depth`` levels (logged once per folder)
    and never raises: an unreadable, vanishing or hostile sub-tree is logged and skipped, so no
    tree can stop the daemon from starting.
    """
    count = 0
    for folder in folders:
        try:
            count += _wipe_tree(Path(folder), passes, max_depth)
        except Exception as exc:  # the contract: a hostile tree never stops start-up
            logger.warning("stale-temporary wipe of {} stopped: {}", folder, exc)
    if count:
        logger.info("wiped {} stale temporary file(s)", count)
    return count


def _wipe_tree(folder: Path, passes: int, max_depth: int) -> int:
    try:
        top = os.open(folder, files.DIR_FLAGS)
    except OSError as exc:
        logger.debug("not wiping {}: {}", folder, exc.strerror)
        return 0
    count, deep = 0, False
    stack: list[tuple[int, list[str]]] = []  # (folder fd, sub-folders still to visit)
    fd: int | None = top
    while fd is not None or stack:
        if fd is not None:
            found, subdirs = _wipe_one(fd, passes)
            count += found
            if len(stack) < max_depth:
                stack.append((fd, subdirs))
            else:
                deep = deep or bool(subdirs)
                os.close(fd)
        fd = None
        parent, pending = stack[-1]
        if not pending:
            os.close(parent)
            stack.pop()
            continue
        with contextlib.suppress(OSError):  # vanished, swapped for a link, unreadable: skip it
            fd = os.open(pending.pop(), files.NOFOLLOW_DIR, dir_fd=parent)
    if deep:
        logger.warning("stale-temporary wipe: not descending more than {} levels below {}", max_depth, folder)
    return count


def _wipe_one(dir_fd: int, passes: int) -> tuple[int, list[str]]:
    """Wipe the temporaries directly in ``dir_fd``; returns (how many, its real sub-folders)."""
    count, subdirs = 0, []
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    elif is_scribed_temp(entry.name) and secure_delete_at(dir_fd, entry.name, passes,
                                                                          hardlinked="overwrite"):
                        count += 1
                        logger.info("wiped stale temporary {}", entry.name)
                except (OSError, ScribedError) as exc:
                    logger.warning("cannot wipe stale temporary {!r}: {}", entry.name, exc)
    except OSError as exc:
        logger.debug("cannot list a folder during the stale-temporary wipe: {}", exc.strerror)
    return count, subdirs
