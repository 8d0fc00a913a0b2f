"""Tests for scribed.system.fstype: which file system a path is on (network ones are polled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribed.system import fstype

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
server:/export /mnt/nfs nfs4 rw,vers=4.2 0 0
//nas/Board\\040Meetings /mnt/board\\040meetings cifs rw 0 0
tmpfs /mnt/nfs/scratch tmpfs rw 0 0
/dev/sdb1 /data ext4 rw 0 0
tmpfs /data tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/alice/Meetings", "ext4"),
        ("/mnt/nfs/recordings/a.wav", "nfs4"),
        ("/mnt/nfs/scratch/x", "tmpfs"),  # longest prefix wins
        ("/mnt/board meetings/q3.m4a", "cifs"),  # \040 is a space
        ("/mnt/nfsother", "ext4"),  # prefix by component, not by string
        ("/data/x", "tmpfs"),  # the later mount on the same point hides the earlier one
    ],
)
def test_filesystem_type_from_mount_table(path: str, expected: str) -> None:
    assert fstype.filesystem_type(Path(path), mounts_text=MOUNTS) == expected


def test_network_filesystems() -> None:
    assert fstype.is_network_filesystem(Path("/mnt/nfs/a"), mounts_text=MOUNTS)
    assert fstype.is_network_filesystem(Path("/mnt/board meetings"), mounts_text=MOUNTS)
    assert not fstype.is_network_filesystem(Path("/mnt/nfs/scratch"), mounts_text=MOUNTS)
    assert {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p", "ceph", "fuse.rclone"} <= fstype.NETWORK_FILESYSTEMS


def test_filesystem_type_of_real_mounts(tmp_path: Path) -> None:
    assert fstype.filesystem_type(Path("/proc/self")) == "proc"
    assert fstype.filesystem_type(tmp_path) not in ("unknown", "proc")
    assert not fstype.is_network_filesystem(tmp_path)


def test_existing_ancestor(tmp_path: Path) -> None:
    assert fstype.existing_ancestor(tmp_path / "not" / "yet") == tmp_path
    assert fstype.existing_ancestor(tmp_path) == tmp_path
    assert fstype.existing_ancestor(Path("/no-such-folder-here/x")) == Path("/")
