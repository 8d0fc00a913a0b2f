"""Tests for systemd/scribed-worker.service (the ``scribed worker`` system unit) and its packaged copy.

Checked with the real ``systemd-analyze verify`` and ``security --offline`` when systemd-analyze
is installed (Debian package: systemd); the placeholder ExecStart= is pointed at a real program
for that, as an installer would point it at scribed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_unit import _directives  # the same reading of a unit file

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "systemd" / "scribed-worker.service"
PACKAGED = ROOT / "daemon" / "scribed" / "data" / "scribed-worker.service"
MAX_EXPOSURE = 2.5


def test_the_packaged_copy_is_the_unit() -> None:
    assert PACKAGED.read_text() == UNIT.read_text()


def test_every_directive_is_explained() -> None:
    lines = UNIT.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[i - 1].startswith("#"), f"line {i + 1} has no comment above it: {line}"


def test_settings() -> None:
    d = _directives(UNIT.read_text())
    expected = {"Type": "notify", "User": "scribed", "Restart": "on-failure", "RestartPreventExitStatus": "2",
                "UMask": "0027", "LimitCORE": "0", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "IPAddressDeny": "any", "RestrictAddressFamilies": "AF_UNIX AF_NETLINK AF_INET AF_INET6",
                "WantedBy": "multi-user.target"}
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert d["ExecStart"][0].split()[1:2] == ["worker"]
    assert len(d["IPAddressAllow"]) == 1  # exactly one address: the broker's
    assert "network-online.target" in d["After"][0]
    # The broker must be reachable; the GPU, the JIT and the model cache must stay usable.
    for forbidden in ("PrivateNetwork", "MemoryDenyWriteExecute", "PrivateDevices", "DevicePolicy",
                      "DeviceAllow", "ProtectClock", "ProcSubset", "PrivateUsers"):
        assert forbidden not in d, forbidden


def _analyze(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={shutil.which('true')}", UNIT.read_text()))
    env = {"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"}
    return subprocess.run([analyze, *args, str(unit)], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path, check=False)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = _analyze(tmp_path, "verify")
    assert proc.returncode == 0, proc.stderr
    assert "scribed-worker.service" not in proc.stderr, proc.stderr


def test_security_exposure(tmp_path: Path) -> None:
    proc = _analyze(tmp_path, "security", "--offline=true")
    if "offline" in proc.stderr and proc.returncode != 0:
        pytest.skip(f"systemd-analyze security --offline unsupported: {proc.stderr.strip()}")
    match = re.search(r"Overall exposure level for scribed-worker\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout
