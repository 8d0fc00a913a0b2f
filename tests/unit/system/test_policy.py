"""Tests for scribed.policy: the network guard, core dumps, secure deletion, the private temp dir,
file-system detection and what happens to a recording after transcription.

The network guard is process-wide and irreversible, so it is only ever installed in a child
process (never in the pytest process). Everything else runs on real files in tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scribed.errors import ConfigError, ScribedError
from scribed.system import files, fstype, netguard
from scribed.system.files import secure_delete
from scribed.system.retention import apply_source_after
from scribed.system.tempdir import PrivateTempDir

REPO_ROOT = Path(__file__).resolve().parents[3]
DAEMON_DIR = REPO_ROOT / "daemon"
PYTHONPATH = os.pathsep.join(filter(None, [str(DAEMON_DIR), os.environ.get("PYTHONPATH")]))


def _run_python(code: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with scribed importable."""
    full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def test_privacy_modules_do_not_import_torch() -> None:
    proc = _run_python(
        """
        import sys
        import scribed.system.netguard, scribed.system.retention, scribed.system.sdnotify, scribed.system.unit
        print("torch" in sys.modules, "transformers" in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------------- network guard

GUARD_SCRIPT = """
import json, os, socket, sys, urllib.request
from scribed.system import files, fstype, harden, netguard, retention, tempdir
from scribed.errors import NetworkBlockedError

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen()
listener.setblocking(False)
port = listener.getsockname()[1]
early = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # created before the guard

seen = []
netguard.install_network_guard(seen.append)
netguard.install_network_guard(seen.append)  # idempotent: still one hook, one callback

def attempt(fn):
    try:
        fn()
    except Exception as exc:
        reason = getattr(exc, "reason", None)  # urllib wraps OSErrors in URLError
        return {"type": type(exc).__name__, "blocked": isinstance(exc, NetworkBlockedError)
                or isinstance(reason, NetworkBlockedError), "oserror": isinstance(exc, OSError)}
    return {"type": None, "blocked": False, "oserror": False}

out = {
    "connect_early": attempt(lambda: early.connect(("127.0.0.1", port))),
    "new_inet": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
    "new_inet6": attempt(lambda: socket.socket(socket.AF_INET6)),
    "create_connection": attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=1)),
    "urlopen": attempt(lambda: urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)),
    "getaddrinfo": attempt(lambda: socket.getaddrinfo("localhost", 80)),
}
try:
    listener.accept()
    out["listener_got_connection"] = True
except BlockingIOError:
    out["listener_got_connection"] = False
a, b = socket.socketpair()
a.sendall(b"still works")
out["socketpair"] = b.recv(64).decode()
with urllib.request.urlopen("file://" + os.path.abspath(netguard.__file__)) as local:  # not network
    out["file_url"] = local.read(9) == open(netguard.__file__, "rb").read(9)
out["callbacks"] = seen
out["env"] = {k: os.environ.get(k) for k in netguard.OFFLINE_ENV}
out["report"] = netguard.network_self_test().detail
print(json.dumps(out))
"""


def test_network_guard_blocks_everything_but_unix_sockets() -> None:
    proc = _run_python(GUARD_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for name in ("connect_early", "new_inet", "new_inet6", "create_connection", "urlopen", "getaddrinfo"):
        assert out[name]["blocked"], (name, out[name])
    # Libraries see an OSError, i.e. an ordinary network failure.
    assert out["connect_early"]["oserror"] and out["getaddrinfo"]["oserror"]
    assert out["listener_got_connection"] is False
    assert out["socketpair"] == "still works"
    assert out["file_url"] is True
    # One callback per attempt even though install was called twice.
    assert len(out["callbacks"]) == 6, out["callbacks"]
    assert any("127.0.0.1" in detail and "connect" in detail for detail in out["callbacks"])
    assert any("urllib request to http://127.0.0.1" in detail for detail in out["callbacks"])
    assert proc.stderr.count("network blocked: ") == 6, proc.stderr
    assert out["env"] == netguard.OFFLINE_ENV
    assert out["report"].startswith("network: blocked in-process; ")


def test_network_guard_sees_sockets_built_from_a_file_descriptor() -> None:
    proc = _run_python(
        """
        import socket
        from scribed.system import files, fstype, harden, netguard, retention, tempdir
        from scribed.errors import NetworkBlockedError
        fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
        netguard.install_network_guard()
        sock = socket.socket(fileno=fd)  # family unknown at creation, so checked on use
        try:
            sock.sendto(b"x", ("127.0.0.1", 9))
        except NetworkBlockedError:
            print("blocked")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "blocked"


def test_network_guard_keeps_urllib3_ipv6_probe_quiet() -> None:
    if importlib.util.find_spec("urllib3") is None:  # not imported here: its probe would bind
        pytest.skip("urllib3 not installed")
    proc = _run_python(
        """
        from scribed.system import files, fstype, harden, netguard, retention, tempdir
        seen = []
        netguard.install_network_guard(seen.append)
        import urllib3
        print(len(seen))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert "network blocked: " not in proc.stderr


def test_network_self_test_without_guard() -> None:
    # In a fresh process: other tests in this session install the (irreversible) guard.
    code = ("from scribed.system import netguard; r = netguard.network_self_test();"
            "print(r.guard_active, r.reachable, r.detail, sep='|')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": PYTHONPATH}, check=False)
    guard, reachable, detail = proc.stdout.strip().split("|")
    assert guard == "False"
    assert detail.startswith("network: NOT blocked in-process; ")
    assert reachable == str("no route off this machine" not in detail)


def test_network_self_test_in_an_empty_network_namespace() -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    code = "from scribed.system import netguard; r = netguard.network_self_test(); print(r.reachable, r.detail)"
    proc = subprocess.run(
        [unshare, "-rn", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False network: NOT blocked in-process; no route off this machine"


def test_disable_core_dumps() -> None:
    proc = _run_python(
        """
        import ctypes, resource
        from scribed.system import files, fstype, harden, netguard, retention, tempdir
        harden.disable_core_dumps()
        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        print(resource.getrlimit(resource.RLIMIT_CORE), dumpable)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(0, 0) 0"


# ---------------------------------------------------------------------------------- secure delete

SECRET = b"board meeting: the merger closes on friday. " * 3000  # ~130 kB, more than one page


def test_overwrite_replaces_every_byte_seen_through_a_hard_link(tmp_path: Path) -> None:
    victim, link = tmp_path / "victim.wav", tmp_path / "link.wav"
    victim.write_bytes(SECRET)
    os.link(victim, link)
    fd = os.open(victim, os.O_WRONLY)
    try:
        files.overwrite_fd(fd, len(SECRET), passes=1)
        after_random = link.read_bytes()
        files.overwrite_fd(fd, len(SECRET), passes=2)  # pass 1 random, pass 2 zeros
        after_zeros = link.read_bytes()
    finally:
        os.close(fd)
    assert len(after_random) == len(SECRET)
    assert b"merger" not in after_random
    assert sum(a == b for a, b in zip(after_random, SECRET, strict=True)) < len(SECRET) // 50
    assert after_zeros == bytes(len(SECRET))


def test_secure_delete_wipes_the_inode_and_removes_the_path(tmp_path: Path) -> None:
    victim, link = tmp_path / "victim.wav", tmp_path / "link.wav"
    victim.write_bytes(SECRET)
    os.link(victim, link)
    inode = link.stat().st_ino
    secure_delete(victim, passes=2)
    assert not victim.exists()
    assert link.stat().st_ino == inode
    assert b"merger" not in link.read_bytes()
    assert link.stat().st_size == 0


def test_secure_delete_zero_passes_is_a_plain_unlink(tmp_path: Path) -> None:
    victim, link = tmp_path / "victim.wav", tmp_path / "link.wav"
    victim.write_bytes(SECRET)
    os.link(victim, link)
    secure_delete(victim, passes=0)
    assert not victim.exists()
    assert link.read_bytes() == SECRET


def test_secure_delete_edge_cases(tmp_path: Path) -> None:
    secure_delete(tmp_path / "missing.wav", passes=3)  # no error

    target = tmp_path / "other.txt"
    target.write_bytes(b"not ours to wipe")
    symlink = tmp_path / "symlink.wav"
    symlink.symlink_to(target)
    secure_delete(symlink, passes=1)
    assert not symlink.exists() and not symlink.is_symlink()
    assert target.read_bytes() == b"not ours to wipe"

    readonly = tmp_path / "readonly.wav"
    readonly.write_bytes(SECRET)
    readonly.chmod(0o400)
    secure_delete(readonly, passes=1)
    assert not readonly.exists()

    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        secure_delete(tmp_path / "folder", passes=1)


# ------------------------------------------------------------------------------- private temp dir


def test_private_temp_dir_modes_and_files(tmp_path: Path) -> None:
    base = tmp_path / "private"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    tmp = PrivateTempDir(base, watched=[tmp_path / "inbox"], passes=1)
    assert tmp.path == base
    assert base.stat().st_mode & 0o777 == 0o700  # tightened even though it existed

    fd, path = tmp.create(".wav")
    try:
        os.write(fd, SECRET)
    finally:
        os.close(fd)
    assert path.parent == base and path.name.startswith("scribed-") and path.suffix == ".wav"
    assert path.stat().st_mode & 0o777 == 0o600
    fd2, path2 = tmp.create(".wav")
    os.close(fd2)
    assert path2 != path

    tmp.remove(path)
    assert not path.exists()
    with pytest.raises(ValueError):
        tmp.remove(tmp_path / "elsewhere.wav")
    with pytest.raises(ValueError):
        tmp.create("/../escape")


def test_private_temp_dir_refuses_watched_folders(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'"):
        PrivateTempDir(inbox / "tmp", watched=[inbox], passes=1)
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'"):
        PrivateTempDir(inbox, watched=[inbox], passes=1)
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'"):
        PrivateTempDir(tmp_path, watched=[inbox], passes=1)  # would contain the inbox
    assert not (inbox / "tmp").exists()


def test_private_temp_dir_wipe_stale_only_touches_its_own_files(tmp_path: Path) -> None:
    tmp = PrivateTempDir(tmp_path / "private", watched=[], passes=1)
    leftovers = []
    for _ in range(3):
        fd, path = tmp.create(".pcm")
        os.write(fd, SECRET)
        os.close(fd)
        leftovers.append(path)
    foreign = tmp.path / "notes.txt"
    foreign.write_text("someone else's file")
    assert tmp.wipe_stale() == 3
    assert not any(p.exists() for p in leftovers)
    assert foreign.read_text() == "someone else's file"
    assert tmp.wipe_stale() == 0


def test_private_temp_dir_default_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    tmp = PrivateTempDir(None, watched=[], passes=0)
    assert tmp.path == tmp_path / "scribed"
    assert tmp.path.stat().st_mode & 0o777 == 0o700

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    if Path(f"/run/user/{os.getuid()}").is_dir():
        pytest.skip("/run/user/<uid> exists here, so there is a fallback")
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'.*XDG_RUNTIME_DIR"):
        PrivateTempDir(None, watched=[], passes=0)


# ----------------------------------------------------------------------------------- file systems

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


# ---------------------------------------------------------------------------- source after done


@pytest.fixture()
def recording(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(watch root, recording in a subfolder, its transcript)."""
    root = tmp_path / "inbox"
    (root / "board").mkdir(parents=True)
    source = root / "board" / "q3 meeting.wav"
    source.write_bytes(SECRET)
    transcript = source.with_suffix(".txt")
    transcript.write_text("Chair: the merger closes on Friday.\n")
    return root, source, transcript


def test_keep_touches_nothing(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    transcript.unlink()  # keep does not even need a transcript
    assert apply_source_after(source, transcript, "keep", archive_dir=None, watch_root=root, passes=1) is None
    assert source.read_bytes() == SECRET


@pytest.mark.parametrize("action", ["delete", "archive"])
@pytest.mark.parametrize("problem", ["missing", "empty", "directory", "same-file"])
def test_no_transcript_no_removal(
    recording: tuple[Path, Path, Path], tmp_path: Path, action: str, problem: str
) -> None:
    root, source, transcript = recording
    if problem == "missing":
        transcript.unlink()
    elif problem == "empty":
        transcript.write_text("")
    elif problem == "directory":
        transcript.unlink()
        transcript.mkdir()
    else:
        transcript = source
    archive = tmp_path / "archive"
    with pytest.raises(ScribedError):
        apply_source_after(source, transcript, action, archive_dir=archive, watch_root=root, passes=1)
    assert source.read_bytes() == SECRET
    assert not archive.exists()


def test_delete_wipes_the_recording(recording: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, source, transcript = recording
    link = tmp_path / "link.wav"
    os.link(source, link)
    assert apply_source_after(source, transcript, "delete", archive_dir=None, watch_root=root, passes=1) is None
    assert not source.exists()
    assert b"merger" not in link.read_bytes()
    assert transcript.exists()


def test_archive_keeps_the_tree_and_never_overwrites(recording: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, source, transcript = recording
    archive = tmp_path / "archive"
    first = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
    assert first == archive / "board" / "q3 meeting.wav"
    assert first.read_bytes() == SECRET and not source.exists()

    source.write_bytes(b"second recording with the same name")
    second = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
    assert second == archive / "board" / "q3 meeting (2).wav"
    assert second.read_bytes() == b"second recording with the same name"
    assert first.read_bytes() == SECRET

    source.write_bytes(b"third")
    third = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
    assert third == archive / "board" / "q3 meeting (3).wav"


def test_archive_needs_an_archive_dir(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    with pytest.raises(ScribedError, match="archive_dir"):
        apply_source_after(source, transcript, "archive", archive_dir=None, watch_root=root, passes=1)
    assert source.exists()


def test_archive_across_file_systems(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == source.stat().st_dev:
        pytest.skip("needs /dev/shm on a different file system than tmp_path")
    archive = shm / f"scribed-test-archive-{os.getpid()}"
    try:
        moved = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
        assert moved == archive / "board" / "q3 meeting.wav"
        assert moved.read_bytes() == SECRET
        assert not source.exists()
        assert [p.name for p in moved.parent.iterdir()] == ["q3 meeting.wav"]  # no partial file left
    finally:
        shutil.rmtree(archive, ignore_errors=True)
