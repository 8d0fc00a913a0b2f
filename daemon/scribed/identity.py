"""A recording's identity: which file (device, inode) with which content (size, mtime, hash).

Contract: decisions about a file in a watched folder are made by identity, never by name alone.
:meth:`FileIdentity.same_file` compares the cheap part (device, inode, size, mtime); the hash,
when present, proves the content. Shared by the daemon and the worker; standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class FileIdentity:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    sha256: str | None = None

    @classmethod
    def of(cls, st: os.stat_result, sha256: str | None = None) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha256)

    def same_file(self, other: FileIdentity | os.stat_result) -> bool:
        """Same device, inode, size and mtime (the hash is not compared: it may not be known)."""
        if isinstance(other, os.stat_result):
            other = FileIdentity.of(other)
        return (self.dev, self.ino, self.size, self.mtime_ns) == (other.dev, other.ino, other.size, other.mtime_ns)

    def with_hash(self, sha256: str) -> FileIdentity:
        return replace(self, sha256=sha256)
