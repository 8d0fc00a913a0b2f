"""Tests for scribed.engine.threadenv: the OpenMP wait policy chosen before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PRINT = ("import os, sys; {pre}import scribed.engine.threadenv as t; "
         "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), t.TORCH_WAS_LOADED)")


def _run(pre: str = "", **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base.update(env, PYTHONPATH=str(REPO / "daemon"))
    out = subprocess.run([sys.executable, "-c", PRINT.format(pre=pre)], env=base, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_default_bounds_the_spin() -> None:
    assert _run() == ["10000", "None", "False"]


@pytest.mark.parametrize(("env", "expected"), [
    ({"OMP_WAIT_POLICY": "PASSIVE"}, ["None", "PASSIVE", "False"]),
    ({"GOMP_SPINCOUNT": "250"}, ["250", "None", "False"]),
])
def test_a_policy_in_the_environment_wins(env: dict[str, str], expected: list[str]) -> None:
    assert _run(**env) == expected


def test_torch_imported_first_is_noticed() -> None:
    pytest.importorskip("torch")
    assert _run(pre="import torch; ")[-1] == "True"
