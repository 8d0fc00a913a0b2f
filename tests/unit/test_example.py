"""The example config ships inside the package (wheel and sdist) and ``scribed config init`` writes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from scribed import cli, example, logs
from scribed.config import load_config

ROOT = Path(__file__).resolve().parents[2]
REPO_EXAMPLE = ROOT / "config" / "scribed.yaml"
SHIPPED = ROOT / "daemon" / "scribed" / "data" / "scribed.yaml"


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    logs.setup("INFO")


def test_the_shipped_copy_is_config_scribed_yaml_byte_for_byte() -> None:
    # If this fails after editing config/scribed.yaml: cp config/scribed.yaml daemon/scribed/data/scribed.yaml
    assert example.example_config() == SHIPPED.read_bytes()  # read through importlib.resources
    assert SHIPPED.read_bytes() == REPO_EXAMPLE.read_bytes()


def test_init_writes_the_example_to_the_user_config_path(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cli.main(["config", "init"]) == 0
    written = tmp_path / "xdg" / "scribed" / "config.yaml"
    assert written.read_bytes() == SHIPPED.read_bytes()
    assert f"wrote {written}" in capsys.readouterr().out
    assert load_config(written).source == str(written)  # a valid config
    assert written.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    target = tmp_path / "mine.yaml"
    target.write_text("watch:\n  folders: [/data]\n")
    assert cli.main(["config", "init", str(target)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"scribed: {target} already exists;") and "--force" in line
    assert target.read_text() == "watch:\n  folders: [/data]\n"
    assert cli.main(["config", "init", str(target), "--force"]) == 0
    assert target.read_bytes() == SHIPPED.read_bytes()


def test_init_honours_dash_c_and_never_writes_through_a_link(tmp_path: Path, capsys) -> None:
    assert cli.main(["config", "init", "-c", str(tmp_path / "a" / "b.yaml")]) == 0
    assert (tmp_path / "a" / "b.yaml").read_bytes() == SHIPPED.read_bytes()
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("keep me\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(elsewhere)
    capsys.readouterr()
    assert cli.main(["config", "init", str(link), "--force"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"scribed: {link} is a symbolic link")
    assert elsewhere.read_text() == "keep me\n"


def test_init_below_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file-not-folder"
    target.write_text("x")
    assert cli.main(["config", "init", str(target / "config.yaml")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"scribed: not writing {str(target / 'config.yaml')!r}: ")


def test_wheel_and_sdist_carry_the_example_and_the_unit(tmp_path: Path) -> None:
    """Built with setuptools' own PEP 517 backend (what pip calls), offline, from a copy of the tree."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("config", "systemd", "daemon/scribed"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    code = ("import os, sys; from setuptools import build_meta as b; os.mkdir('w'); os.mkdir('s');"
            "w = b.build_wheel('w'); s = b.build_sdist('s'); print('BUILT', w, s)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _, wheel_name, sdist_name = proc.stdout.splitlines()[-1].split()
    with zipfile.ZipFile(src / "w" / wheel_name) as wheel:
        assert wheel.read("scribed/data/scribed.yaml") == SHIPPED.read_bytes()
        assert wheel.read("scribed/data/scribed.service") == (ROOT / "systemd" / "scribed.service").read_bytes()
    with tarfile.open(src / "s" / sdist_name) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"config/scribed.yaml", "systemd/scribed.service", "daemon/scribed/data/scribed.yaml",
            "daemon/scribed/data/scribed.service"} <= names


def test_config_init_loads_no_heavy_library(tmp_path: Path) -> None:
    code = ("import sys; from scribed.cli import main; rc = main(['config', 'init', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'transformers', 'numpy', 'watchdog', 'huggingface_hub')"
            " if m in sys.modules]; "
            "sys.exit(rc or (str(heavy) if heavy else 0))")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "daemon"))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.yaml")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.yaml").is_file()
