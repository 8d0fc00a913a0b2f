"""Tests for scribed.system.unit and systemd/scribed.service.

``systemctl`` and ``journalctl`` are external programs, so they are replaced by fake scripts on
PATH that record their argv; everything else (rendering, config loading, file writing) is real.
The rendered unit is checked with the real ``systemd-analyze verify`` and ``security --offline``
when systemd-analyze is installed (Debian/Ubuntu package: systemd).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scribed.config import ServiceConfig
from scribed.system.unit import UNIT_NAME, linger_enabled, quote_arg, render_unit, service_command, unit_template

REPO_UNIT = Path(__file__).resolve().parents[3] / "systemd" / UNIT_NAME
MAX_EXPOSURE = 2.5

FAKE_TOOL = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SYSTEMD_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
if "show" in args and os.environ.get("FAKE_NO_MANAGER"):
    print("Failed to connect to bus: No medium found", file=sys.stderr)
    sys.exit(1)
if "is-active" in args:
    sys.exit(0 if os.environ.get("FAKE_ACTIVE") else 3)
if "status" in args:
    print("scribed.service - fake status")
    sys.exit(3)
sys.exit(0)
"""


class Env:
    """A fake home with fake systemctl/journalctl/scribed on PATH and a config file."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        for tool in ("systemctl", "journalctl"):
            self._script(tool, FAKE_TOOL.format(python=sys.executable))
        self.scribed = self._script("scribed", "#!/bin/sh\nexit 0\n")
        self.home = root / "home"
        self.home.mkdir()
        self.user_dir = self.home / ".config" / "systemd" / "user"
        self.inbox = self.home / "Board Meetings" / "inbox"  # a space, on purpose
        self.archive = self.home / "archive%1"  # a systemd specifier character, on purpose
        self.config = self.home / "scribed.yaml"
        self.config.write_text(
            f"watch:\n  folders: ['{self.inbox}', '{self.home / 'interviews'}']\n"
            f"policy:\n  source_after: archive\n  archive_dir: '{self.archive}'\n"
        )
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("XDG_STATE_HOME", str(self.home / ".local" / "state"))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(self.home / ".config"))
        monkeypatch.setenv("FAKE_SYSTEMD_LOG", str(self.log))
        monkeypatch.delenv("FAKE_NO_MANAGER", raising=False)
        monkeypatch.delenv("FAKE_ACTIVE", raising=False)

    def _script(self, name: str, text: str) -> Path:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(tmp_path, monkeypatch)


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


# ------------------------------------------------------------------------------ the unit template


def test_every_directive_is_explained() -> None:
    lines = REPO_UNIT.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[i - 1].startswith("#"), f"line {i + 1} has no comment above it: {line}"


def test_template_settings() -> None:
    text = unit_template()
    assert text == REPO_UNIT.read_text()
    d = _directives(text)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "120",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "KillMode": "mixed",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "UMask": "0077",
        "LimitCORE": "0",
        "NoNewPrivileges": "yes",
        "PrivateNetwork": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_NETLINK",
        "ProtectSystem": "strict",
        "PrivateUsers": "yes",
        "WantedBy": "default.target",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert float(d["TimeoutStopSec"][0]) > ServiceConfig().stop_timeout_s
    assert d["ExecStart"] == ["%h/.local/bin/scribed run"]
    assert "@system-service" in d["SystemCallFilter"][0]
    # Settings that would cut the worker off from the GPU, the JIT or the model cache.
    for forbidden in ("MemoryDenyWriteExecute", "PrivateDevices", "DevicePolicy", "DeviceAllow",
                      "ProtectClock", "ProcSubset", "StateDirectory"):
        assert forbidden not in d, forbidden
    assert d["ProtectHome"] == ["read-only"]
    denied = " ".join(d["SystemCallFilter"][1:])
    for needed in ("@resources", "@memlock", "ioctl", "mprotect", "mmap"):
        assert needed not in denied


def test_render_replaces_exec_start_and_write_paths() -> None:
    template = unit_template()
    text = render_unit(template, ["/opt/my apps/scribed", "run", "--config", "/cfg/50%.yaml"],
                       [Path("/home/a/Board Meetings"), Path("/home/a/state")])
    d = _directives(text)
    assert d["ExecStart"] == ['"/opt/my apps/scribed" run --config /cfg/50%%.yaml']
    assert d["ReadWritePaths"] == ['"-/home/a/Board Meetings"', "-/home/a/state"]
    assert len(text.splitlines()) == len(template.splitlines()) + 1  # one default line became two
    assert quote_arg("$HOME") == "$$HOME"
    assert quote_arg('say "hi"') == '"say \\"hi\\""'


# ------------------------------------------------------------------------------ service_command


def test_install(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    rc = service_command("install", env.config, user_dir=env.user_dir)
    out = capsys.readouterr().out
    assert rc == 0
    unit = (env.user_dir / UNIT_NAME).read_text()
    d = _directives(unit)
    assert d["ExecStart"] == [f"{env.scribed.resolve()} run --config {env.config}"]
    assert d["ReadWritePaths"] == [
        f'"-{env.inbox}"',
        f"-{env.home / 'interviews'}",
        f"-{env.home / 'archive%%1'}",
        f"-{env.home / '.local' / 'state' / 'scribed'}",
    ]
    for folder in (env.inbox, env.home / "interviews", env.archive, env.home / ".local/state/scribed"):
        assert folder.is_dir(), folder  # ProtectSystem=strict: the service could not create them
    assert env.calls() == [
        ["systemctl", "--user", "show", "--property=Version"],
        ["systemctl", "--user", "is-active", "--quiet", UNIT_NAME],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT_NAME],
    ]
    assert "loginctl enable-linger" in out


def test_reinstall_restarts_a_running_service(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ACTIVE", "1")
    assert service_command("install", env.config, user_dir=env.user_dir) == 0
    assert env.calls()[-1] == ["systemctl", "--user", "restart", UNIT_NAME]


def test_install_honours_xdg_config_home(env: Env) -> None:
    assert service_command("install", env.config) == 0
    assert (env.home / ".config" / "systemd" / "user" / UNIT_NAME).is_file()


def test_uninstall(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert service_command("install", env.config, user_dir=env.user_dir) == 0
    env.log.unlink()
    assert service_command("uninstall", None, user_dir=env.user_dir) == 0
    assert not (env.user_dir / UNIT_NAME).exists()
    assert env.calls() == [
        ["systemctl", "--user", "show", "--property=Version"],
        ["systemctl", "--user", "disable", "--now", UNIT_NAME],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert "removed" in capsys.readouterr().out


def test_status(env: Env, capfd: pytest.CaptureFixture[str]) -> None:
    assert service_command("status", None, user_dir=env.user_dir) == 3  # systemctl's "not running"
    assert env.calls()[1:] == [
        ["systemctl", "--user", "status", "--no-pager", UNIT_NAME],
        ["journalctl", "--user", "-u", UNIT_NAME, "-n", "20", "--no-pager"],
    ]
    assert "fake status" in capfd.readouterr().out


def test_dry_run_changes_nothing(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert service_command("install", env.config, user_dir=env.user_dir, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "ExecStart=" in out and "enable --now" in out
    assert not env.user_dir.exists() and not env.inbox.exists()
    assert env.calls() == []


def _scribed_lines(err: str) -> list[str]:
    lines = err.splitlines()
    assert lines and all(line.startswith("scribed: ") for line in lines), lines
    return lines


def test_systemd_absent(env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (env.bin / "systemctl").unlink()
    monkeypatch.setenv("PATH", str(env.bin))
    for action in ("install", "uninstall", "status"):
        assert service_command(action, env.config, user_dir=env.user_dir) == 2
        lines = _scribed_lines(capsys.readouterr().err)
        assert lines == ["scribed: systemd is not available here (no `systemctl` on PATH)"]
    assert not env.user_dir.exists()


def test_unit_prints_what_install_writes_without_a_user_manager(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_NO_MANAGER", "1")
    assert service_command("unit", env.config, user_dir=env.user_dir) == 0
    printed = capsys.readouterr().out
    assert env.calls() == [] and not env.user_dir.exists()  # nothing asked, nothing written or created
    monkeypatch.delenv("FAKE_NO_MANAGER")
    assert service_command("install", env.config, user_dir=env.user_dir) == 0
    assert printed == (env.user_dir / UNIT_NAME).read_text()


def test_unit_lists_per_folder_output_and_archive_folders(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.config.write_text(
        f"watch:\n  folders:\n    - '{env.inbox}'\n"
        f"    - {{path: '{env.home / 'legal'}', dir: '{env.home / 'legal-out'}', source_after: archive,"
        f" archive_dir: '{env.home / 'legal-archive'}'}}\n"
    )
    assert service_command("unit", env.config) == 0
    paths = _directives(capsys.readouterr().out)["ReadWritePaths"]
    assert paths == [f'"-{env.inbox}"', f"-{env.home / 'legal'}", f"-{env.home / 'legal-out'}",
                     f"-{env.home / 'legal-archive'}", f"-{env.home / '.local' / 'state' / 'scribed'}"]


def test_a_cluster_coordinators_unit_may_reach_the_network(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """With cluster.broker the daemon is a coordinator and must reach its broker: the unit says
    so itself (no hand-written override); without it, no network at all."""
    assert service_command("unit", env.config) == 0
    single = _directives(capsys.readouterr().out)
    assert single["PrivateNetwork"] == ["yes"] and single["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK"]
    env.config.write_text(env.config.read_text() + "\ncluster:\n  broker: redis://scribed@10.0.0.5:6379/0\n")
    assert service_command("unit", env.config) == 0
    text = capsys.readouterr().out
    coordinator = _directives(text)
    assert coordinator["PrivateNetwork"] == ["no"]
    assert coordinator["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK AF_INET AF_INET6"]
    assert "must reach the broker" in text
    assert {k: v for k, v in coordinator.items() if k not in ("PrivateNetwork", "RestrictAddressFamilies")} == {
        k: v for k, v in single.items() if k not in ("PrivateNetwork", "RestrictAddressFamilies")}


def test_unit_warns_about_folders_the_private_tmp_hides(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.config.write_text("watch:\n  folders: [/tmp/scribed-inbox-of-a-test]\n")
    assert service_command("unit", env.config) == 0
    lines = _scribed_lines(capsys.readouterr().err)  # (the test's fake home is under /tmp too)
    assert lines[0] == ("scribed: warning: the service cannot see /tmp/scribed-inbox-of-a-test: "
                        "PrivateTmp=yes hides /tmp and /var/tmp")


def test_no_user_manager(env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_NO_MANAGER", "1")
    assert service_command("install", env.config, user_dir=env.user_dir) == 2
    (line,) = _scribed_lines(capsys.readouterr().err)
    assert line.startswith("scribed: cannot talk to a systemd user manager")
    assert env.calls() == [["systemctl", "--user", "show", "--property=Version"]]


def test_bad_config_and_bad_action(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.config.write_text("watch:\n  folderz: [/x]\n")
    assert service_command("install", env.config, user_dir=env.user_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("scribed: 1 configuration problem(s)") and "did you mean 'folders'" in err
    assert not (env.user_dir / UNIT_NAME).exists()
    assert service_command("unit", env.config) == 2
    assert "did you mean 'folders'" in capsys.readouterr().err
    assert service_command("restart-everything", None, user_dir=env.user_dir) == 2
    assert _scribed_lines(capsys.readouterr().err) == [
        "scribed: unknown service action 'restart-everything' (expected install, uninstall, status, unit)"]


# ---------------------------------------------------------------------- the real systemd-analyze


def _analyze(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    runtime = env.root / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # --user needs a runtime dir; %h must resolve to the fake home that holds the placeholder.
    analyze_env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(env.home),
                   "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"}
    return subprocess.run([analyze, *args], capture_output=True, text=True, timeout=60,
                          env=analyze_env, cwd=env.root, check=False)


def test_rendered_unit_passes_systemd_analyze_verify(env: Env) -> None:
    assert service_command("install", env.config, user_dir=env.user_dir) == 0
    proc = _analyze(env, "verify", "--user", str(env.user_dir / UNIT_NAME))
    assert proc.returncode == 0, proc.stderr
    assert "scribed.service" not in proc.stderr, proc.stderr  # no warnings about our unit


def test_a_coordinators_rendered_unit_passes_systemd_analyze_verify(env: Env) -> None:
    env.config.write_text(env.config.read_text() + "\ncluster:\n  broker: redis://scribed@10.0.0.5:6379/0\n")
    assert service_command("install", env.config, user_dir=env.user_dir) == 0
    assert "PrivateNetwork=no" in (env.user_dir / UNIT_NAME).read_text()
    proc = _analyze(env, "verify", "--user", str(env.user_dir / UNIT_NAME))
    assert proc.returncode == 0, proc.stderr
    assert "scribed.service" not in proc.stderr, proc.stderr


def test_template_passes_systemd_analyze_verify(env: Env) -> None:
    placeholder = env.home / ".local" / "bin" / "scribed"  # where ExecStart=%h/... points
    placeholder.parent.mkdir(parents=True)
    shutil.copy(env.scribed, placeholder)
    unit = env.root / "template" / UNIT_NAME
    unit.parent.mkdir()
    shutil.copy(REPO_UNIT, unit)
    proc = _analyze(env, "verify", "--user", str(unit))
    assert proc.returncode == 0, proc.stderr
    assert "scribed.service" not in proc.stderr, proc.stderr


def test_security_exposure(env: Env) -> None:
    assert service_command("install", env.config, user_dir=env.user_dir) == 0
    proc = _analyze(env, "security", "--offline=true", "--user", str(env.user_dir / UNIT_NAME))
    if "offline" in proc.stderr and proc.returncode != 0:
        pytest.skip(f"systemd-analyze security --offline unsupported: {proc.stderr.strip()}")
    match = re.search(r"Overall exposure level for scribed\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


# ------------------------------------------------------------------------------ linger


@pytest.mark.parametrize(("answer", "expected"), [("Linger=yes", True), ("Linger=no", False)])
def test_linger_asks_logind(env: Env, answer: str, expected: bool) -> None:
    tool = env.bin / "loginctl"
    tool.write_text(f"#!/bin/sh\n[ \"$1 $2 $3\" = 'show-user alice --property=Linger' ] && echo {answer}\n")
    tool.chmod(0o755)
    assert linger_enabled("alice", str(tool)) is expected


def test_linger_without_logind_reads_the_marker_or_says_unknown(env: Env) -> None:
    tool = env.bin / "loginctl"
    tool.write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    tool.chmod(0o755)
    marker = Path("/var/lib/systemd/linger")
    expected = (marker / "alice").exists() if marker.is_dir() else None
    assert linger_enabled("alice", str(tool)) is expected
    assert linger_enabled("alice", str(env.bin / "absent-loginctl")) is expected
