"""A drop folder other people can write to, end to end with two real users.

Setup (created here when running as root, else skipped): user A runs ``scribed run --once`` with
the unit's umask 0077; A's home is private (0700); user B shares a group with A and can write
into the group-writable inbox. B then does what a hostile or careless colleague would:
(a) plants a symlinked recording and a symlinked folder pointing into A's home;
(b) swaps a queued recording's folder for a symlink into A's home while the job is held in the
    worker (keep: before the transcript is written; archive/delete: after, before retention);
(c) hard-links a recording into a backup before scribed deletes it.
Nothing of A's may be read into the share, written, moved or deleted, and the backup survives.

The job is held deterministically: a ``sitecustomize`` on the daemon's PYTHONPATH wraps one
function (the worker's ``write_transcript``, or the daemon's ``apply_source_after``) so that the
process announces ``held`` and waits for the test's ``release`` file. Never the model being slow.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from e2e_helpers import ROOT, wait_for, wav

USER_A, USER_B, SHARED_GROUP = "scribed-e2e-a", "scribed-e2e-b", "scribed-e2e-share"
PRIVATE_NOTES = b"A's private notes: salary review on monday\n"

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="users and modes as on Linux"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the two users of the shared-folder setup"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("groupadd") is None,
                       reason="useradd/groupadd are not installed"),
]

GATE_SITECUSTOMIZE = '''
"""Test gate (tests/e2e/test_shared_folder.py): hold a process at one function of scribed.

$SCRIBED_TEST_GATE_AT is WHEN:MODULE.FUNCTION (WHEN: before or after the call). The process
writes GATE/held and waits for GATE/release. Callers must look the function up on its module at
call time (``render.write_transcript(...)``), as scribed does.
"""
import importlib.machinery, os, sys, time
from pathlib import Path

_GATE = os.environ.get("SCRIBED_TEST_GATE")
_WHEN, _, _TARGET = os.environ.get("SCRIBED_TEST_GATE_AT", "").partition(":")
_MODULE, _, _FUNCTION = _TARGET.rpartition(".")


def _hold():
    gate = Path(_GATE)
    (gate / "held").write_text(str(os.getpid()))
    deadline = time.monotonic() + 600
    while not (gate / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the test's release file, bounded


class _GateFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != _MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            call = getattr(module, _FUNCTION)

            def gated(*args, **kwargs):
                if _WHEN == "before":
                    _hold()
                result = call(*args, **kwargs)
                if _WHEN == "after":
                    _hold()
                return result

            setattr(module, _FUNCTION, gated)

        spec.loader.exec_module = exec_module
        return spec


if _GATE and _MODULE:
    sys.meta_path.insert(0, _GateFinder())
'''

WRITE = "scribed.engine.render.write_transcript"  # in the worker
RETAIN = "scribed.system.retention.apply_source_after"  # in the daemon, once the transcript is written


class Account(NamedTuple):
    """A throwaway local user made for the test."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class World:
    """What every test shares: the users, an interpreter both can run, the model, the gate."""

    base: Path
    a: Account
    b: Account
    shared_gid: int
    python: Path
    model: Path
    site: Path


def _run_root(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _drop_accounts() -> None:
    for user in (USER_A, USER_B):
        subprocess.run(["userdel", user], capture_output=True, timeout=60)
    subprocess.run(["groupdel", SHARED_GROUP], capture_output=True, timeout=60)


def _account(name: str) -> Account:
    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def _interpreter_for_everyone(base: Path) -> Path:
    """A Python the unprivileged users can execute, with this venv's packages (and scribed)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys.executable).resolve(), Path(f"/usr/bin/python{version}")]
    site_packages = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_relative_to(sys.prefix))
    for candidate in candidates:
        if not candidate.exists() or not all(os.stat(p).st_mode & 0o001 for p in [candidate, *candidate.parents]):
            continue  # somewhere on its path "others" cannot enter (e.g. /root/.pyenv)
        venv = base / "venv"
        subprocess.run([str(candidate), "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True,
                       timeout=120)
        own = next((venv / "lib").glob("python3*/site-packages"))
        (own / "scribed-test.pth").write_text(f"import site; site.addsitedir({str(site_packages)!r})\n")
        return venv / "bin" / "python"
    pytest.skip("no Python interpreter that unprivileged users can execute (this one lives in a private folder)")


@pytest.fixture(scope="module")
def world(tiny_model: Path) -> Iterator[World]:
    _drop_accounts()  # leftovers of an interrupted run
    base = Path(tempfile.mkdtemp(prefix="scribed-shared-", dir="/tmp"))
    base.chmod(0o755)
    try:
        _run_root("groupadd", SHARED_GROUP)
        for user in (USER_A, USER_B):
            _run_root("useradd", "--no-create-home", "--home-dir", str(base / user), "--shell", "/usr/sbin/nologin",
                      "--user-group", "--groups", SHARED_GROUP, user)
        python = _interpreter_for_everyone(base)
        model = base / "model"
        shutil.copytree(tiny_model, model)
        for path in [model, *model.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        site = base / "site"
        site.mkdir(mode=0o755)
        (site / "sitecustomize.py").write_text(GATE_SITECUSTOMIZE)
        w = World(base, _account(USER_A), _account(USER_B), grp.getgrnam(SHARED_GROUP).gr_gid, python, model, site)
        probe = _as(w, w.a, "import scribed.cli, torch, transformers; print('ok')")
        if probe.stdout.strip() != "ok":
            pytest.skip(f"user A cannot import scribed with {python}: {probe.stderr[-500:]}")
        yield w
    finally:
        shutil.rmtree(base, ignore_errors=True)
        _drop_accounts()


def _as(w: World, who: Account, code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as ``who`` (umask 002, member of the shared group)."""
    return subprocess.run([str(w.python), "-c", textwrap.dedent(code)], user=who.uid, group=who.gid,
                          extra_groups=[w.shared_gid], umask=0o002, cwd=cwd or "/", capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": "/"})


def _as_b(w: World, code: str) -> None:
    proc = _as(w, w.b, code)
    assert proc.returncode == 0, f"user B could not act: {proc.stderr}"


@dataclass(frozen=True)
class Share:
    """One test's folders: A's private home, B's home, the inbox both write to."""

    root: Path
    home_a: Path
    home_b: Path
    inbox: Path
    gate: Path
    config: Path
    staged: Path  # a recording (world-readable) for B to copy in


def _owned(path: Path, who: Account, mode: int, gid: int | None = None) -> Path:
    path.mkdir()
    os.chown(path, who.uid, who.gid if gid is None else gid)
    path.chmod(mode)
    return path


@pytest.fixture
def share(world: World, request: pytest.FixtureRequest) -> Iterator[Share]:
    root = Path(tempfile.mkdtemp(prefix="t-", dir=world.base))
    root.chmod(0o755)
    home_a = _owned(root / "home_a", world.a, 0o700)
    home_b = _owned(root / "home_b", world.b, 0o700)
    inbox = _owned(root / "inbox", world.a, 0o2770, gid=world.shared_gid)  # group-writable, setgid
    gate = _owned(root / "gate", world.a, 0o755)
    staged = wav(root / "staging" / "talk.wav", seconds=1.5)
    staged.chmod(0o644)
    # A's private things, at the very paths a swapped folder would lead to.
    _owned(home_a / "team", world.a, 0o700)
    for name, data in (("q3.wav", staged.read_bytes() + b"A"), ("q3.txt", PRIVATE_NOTES),
                       ("private.wav", staged.read_bytes())):
        target = home_a / ("private.wav" if name == "private.wav" else f"team/{name}")
        target.write_bytes(data)
        os.chown(target, world.a.uid, world.a.gid)
        target.chmod(0o600)
    yield Share(root, home_a, home_b, inbox, gate, home_a / "config.yaml", staged)


def _configure(w: World, s: Share, **policy: object) -> None:
    data = {
        "watch": {"folders": [str(s.inbox)], "settle_s": 0.5, "poll_interval_s": 0.3, "rescan_interval_s": 5},
        "model": {"id": str(w.model), "device": "cpu", "batch_size": 8},
        "service": {"state_dir": str(s.home_a / "state"), "stop_timeout_s": 60},
        "policy": {"archive_dir": str(s.home_a / "archive"), **policy},
    }
    s.config.write_text(yaml.safe_dump(data))
    os.chown(s.config, w.a.uid, w.a.gid)
    s.config.chmod(0o600)


def _daemon(w: World, s: Share, gate_at: str | None = None) -> subprocess.Popen[bytes]:
    """``scribed run --once`` as user A, with the unit's umask; output in ``s.root/daemon.log``."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(s.home_a), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(w.site), str(ROOT / "daemon")])}
    if gate_at:
        env |= {"SCRIBED_TEST_GATE": str(s.gate), "SCRIBED_TEST_GATE_AT": gate_at}
    log = open(s.root / "daemon.log", "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen([str(w.python), "-m", "scribed.cli", "run", "--once", "--config", str(s.config)],
                                user=w.a.uid, group=w.a.gid, extra_groups=[w.shared_gid], umask=0o077,
                                cwd=s.home_a, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _finish(s: Share, proc: subprocess.Popen[bytes], timeout: float = 600) -> str:
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    log = (s.root / "daemon.log").read_text(errors="replace")
    assert proc.returncode in (0, 1), log
    return log


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """name -> (sha256, mode) of every file below ``folder`` (as root, so A's private files too)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o7777)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _a_private(s: Share) -> dict[str, tuple[str, int]]:
    """A's own files (not what scribed keeps in A's home: its state, the archive, the config)."""
    return {k: v for k, v in _fingerprint(s.home_a).items()
            if not k.startswith(("state/", "archive/")) and k != "config.yaml"}


def test_links_planted_in_the_inbox_are_not_transcribed(world: World, share: Share) -> None:
    """(a) A symlinked recording and a symlinked folder into A's home: nothing of A's is read."""
    before = _a_private(share)
    _as_b(world, f"""
        import os, shutil
        shutil.copyfile({str(share.staged)!r}, {str(share.inbox / "legit.wav")!r})
        os.symlink({str(share.home_a / "private.wav")!r}, {str(share.inbox / "x.wav")!r})
        os.symlink({str(share.home_a / "team")!r}, {str(share.inbox / "sub")!r})
        """)
    _configure(world, share)
    log = _finish(share, _daemon(world, share))
    assert (share.inbox / "legit.txt").read_text() == "hello world\n", log  # the daemon did run and scan
    assert sorted(os.listdir(share.inbox)) == ["legit.txt", "legit.wav", "sub", "x.wav"], log
    assert _a_private(share) == before  # nothing of A's read into the share, nothing written there
    # The umask rule: B's recording is 0664, the unit's umask is 0077, so the transcript is 0600.
    assert (share.inbox / "legit.wav").stat().st_mode & 0o777 == 0o664
    assert (share.inbox / "legit.txt").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("action", "gate_at"), [
    ("keep", f"before:{WRITE}"),  # the transcript must not land in A's folder
    ("archive", f"before:{RETAIN}"),  # retention must not move A's file...
    ("delete", f"before:{RETAIN}"),  # ...nor delete it
    ("delete", f"after:{WRITE}"),  # swapped between the write and the worker's final identity check
])
def test_a_folder_swapped_for_a_link_mid_job_cannot_reach_a_private_file(
    world: World, share: Share, action: str, gate_at: str
) -> None:
    """(b) B swaps the queued recording's folder for a link into A's home while the job is held."""
    before = _a_private(share)
    _as_b(world, f"""
        import os, shutil
        os.mkdir({str(share.inbox / "team")!r})
        shutil.copyfile({str(share.staged)!r}, {str(share.inbox / "team" / "q3.wav")!r})
        """)
    _configure(world, share, source_after=action)
    proc = _daemon(world, share, gate_at=gate_at)
    try:
        wait_for(lambda: (share.gate / "held").exists() or proc.poll() is not None, timeout=600,
                 what="the job to reach the gate")
        assert proc.poll() is None, (share.root / "daemon.log").read_text(errors="replace")
        _as_b(world, f"""
            import os
            os.rename({str(share.inbox / "team")!r}, {str(share.inbox / "team.moved")!r})
            os.symlink({str(share.home_a / "team")!r}, {str(share.inbox / "team")!r})
            """)
    finally:
        (share.gate / "release").write_text("go")
    log = _finish(share, proc)
    assert _a_private(share) == before, log  # not deleted, not moved, not overwritten, same modes
    archived = _fingerprint(share.home_a / "archive") if (share.home_a / "archive").exists() else {}
    assert before["team/q3.wav"][0] not in {digest for digest, _mode in archived.values()}
    assert (share.inbox / "team").is_symlink()  # the swap really happened while the job was held


def test_a_hard_linked_backup_survives_delete(world: World, share: Share) -> None:
    """(c) ``source_after: delete`` on a recording B also keeps as a hard link (cp -al backup)."""
    backup = share.home_b / "backup" / "rec.wav"
    _as_b(world, f"""
        import os, shutil
        os.mkdir({str(backup.parent)!r})
        shutil.copyfile({str(share.staged)!r}, {str(share.inbox / "rec.wav")!r})
        os.link({str(share.inbox / "rec.wav")!r}, {str(backup)!r})
        """)
    original = hashlib.sha256(share.staged.read_bytes()).hexdigest()
    _configure(world, share, source_after="delete", secure_delete_passes=1)
    log = _finish(share, _daemon(world, share))
    assert (share.inbox / "rec.txt").read_text() == "hello world\n", log
    assert not (share.inbox / "rec.wav").exists(), log  # deleted from the inbox, as configured
    assert hashlib.sha256(backup.read_bytes()).hexdigest() == original  # the backup's copy is intact
    assert backup.stat().st_nlink == 1
    assert "other hard link" in log
