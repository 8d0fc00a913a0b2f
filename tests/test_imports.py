"""The one architectural rule, checked: the daemon side never loads the engine side or torch, and
``scribed status`` / ``scribed check-config`` load no heavy library at all.

Each check runs in a fresh interpreter (this test process has long since imported everything)
and reads ``sys.modules`` as it exits, so an import made anywhere on the way counts.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daemon" / "scribed"
HEAVY = ("torch", "transformers", "numpy", "scipy", "watchdog")
ENGINE = ("scribed.engine", "torch", "transformers")
LIGHT_SHARED = ("scribed.config", "scribed.checks", "scribed.output", "scribed.protocol", "scribed.identity",
                "scribed.wire")

# Runs the target, then (atexit, so after SystemExit too) writes the loaded module names to a file.
_PROBE = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
kind, target = sys.argv.pop(1), sys.argv.pop(1)
if kind == "module":
    sys.argv[0] = target
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    __import__(target)
"""


def _loaded(tmp_path: Path, kind: str, target: str, *args: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / f"modules-{target}-{len(args)}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), kind, target, *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.exists(), f"the probe did not finish: {proc.stderr}"
    return json.loads(out.read_text()), proc


def _matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def _daemon_side_modules() -> list[str]:
    names = [f"scribed.daemon.{p.stem}" for p in sorted((PACKAGE / "daemon").glob("*.py")) if p.stem != "__init__"]
    return ["scribed.daemon", *names, *LIGHT_SHARED]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(f"watch:\n  folders: [{tmp_path / 'in'}]\nservice:\n  state_dir: {tmp_path / 'state'}\n")
    return path


def test_check_config_loads_no_heavy_library(tmp_path: Path, config_file: Path) -> None:
    modules, proc = _loaded(tmp_path, "module", "scribed.cli", "check-config", str(config_file))
    assert proc.returncode == 0, proc.stderr
    assert "scribed.config" in modules  # the probe saw the command run
    assert _matching(modules, HEAVY) == []


def test_status_loads_no_heavy_library(tmp_path: Path, config_file: Path) -> None:
    from scribed.config import load_config
    from scribed.daemon.journal import Journal

    journal = Journal(load_config(config_file).service.journal_path)  # status reads a real journal
    journal.close()
    modules, proc = _loaded(tmp_path, "module", "scribed.cli", "status", "-c", str(config_file))
    assert proc.returncode == 3, proc.stderr  # "not running"
    assert "scribed.daemon.journal" in modules and "not running" in proc.stdout
    assert _matching(modules, HEAVY) == []


@pytest.mark.parametrize("module", _daemon_side_modules())
def test_daemon_side_never_loads_the_engine(tmp_path: Path, module: str) -> None:
    modules, proc = _loaded(tmp_path, "import", module)
    assert proc.returncode == 0, proc.stderr
    assert module in modules
    assert _matching(modules, ENGINE) == []


def _imported_names(tree: ast.AST, module: str) -> list[str]:
    package = module.rsplit(".", 1)[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "daemon").glob("*.py")), ids=lambda p: p.name)
def test_no_import_statement_names_the_engine(path: Path) -> None:
    module = f"scribed.daemon.{path.stem}"
    names = _imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)), module)
    assert _matching(names, ENGINE) == [], f"{path.name} imports the engine side"


def test_the_static_check_sees_relative_and_nested_imports() -> None:
    code = "def f():\n    from ..engine import serve\n    import torch\nfrom . import journal\n"
    names = _imported_names(ast.parse(code), "scribed.daemon.x")
    assert _matching(names, ENGINE) == ["scribed.engine", "scribed.engine.serve", "torch"]
