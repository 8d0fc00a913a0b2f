"""Which file system a path is on (network file systems are watched by polling).

Contract: :func:`filesystem_type` answers from the mount table (``/proc/self/mounts``, or text in
the same format), by the longest mount point that contains the path, the later of two mounts on
one point winning; "unknown" when the table cannot be read. :func:`is_network_filesystem` says
whether inotify can be trusted there (it cannot on NFS, SMB, FUSE network mounts...).
:func:`existing_ancestor` is the nearest existing folder of a path that may not exist yet.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
    """True for the file systems in :data:`NETWORK_FILESYSTEMS` and any nfs*/smb*/cifs* variant."""
    fstype = filesystem_type(path, mounts_text=mounts_text)
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith(("nfs", "smb", "cifs"))


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``/`` at worst)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


