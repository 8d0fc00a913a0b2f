"""The private temporary folder (0700) for intermediates in ``tmpfs`` mode.

Contract: :class:`PrivateTempDir` is a real folder (not a symlink) owned by this user, mode
0700, outside (and not containing) every watched folder and not on a network file system; by
default ``$XDG_RUNTIME_DIR/scribed`` (:func:`scribed.system.files.runtime_dir`). Only
``scribed-*`` files it created live there; they are securely deleted after use and after a crash.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from scribed.errors import ConfigError
from scribed.system import files, shred
from scribed.system.fstype import existing_ancestor, filesystem_type, is_network_filesystem

TEMP_PREFIX = "scribed-"


def _temp_dir_error(problem: str) -> ConfigError:
    return ConfigError([f"At 'policy.temp_dir': {problem}"])


def _default_temp_base() -> Path:
    runtime = files.runtime_dir()
    if runtime is None:
        raise _temp_dir_error(
            f"expected a path: $XDG_RUNTIME_DIR is not set and /run/user/{os.getuid()} does not exist, so there is"
            " no private tmpfs to default to"
        )
    return runtime / "scribed"


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
        fstype = filesystem_type(existing_ancestor(resolved))
        if is_network_filesystem(existing_ancestor(resolved)):
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
        shred.secure_delete(path, self.passes)

    def wipe_stale(self) -> int:
        """Securely delete every ``scribed-*`` file left by a crash; returns how many."""
        count = 0
        dir_fd = files.open_dir(self.path)
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
                        shred.secure_delete_at(dir_fd, entry.name, self.passes, hardlinked="overwrite")
                        count += 1
        finally:
            os.close(dir_fd)
        if count:
            logger.info("wiped {} stale temporary file(s) from {}", count, self.path)
        return count


