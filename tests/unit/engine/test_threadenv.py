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


def _cache_capacity(name: str = "ONEDNN_PRIMITIVE_CACHE_CAPACITY", **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != name}
    base.update(env, PYTHONPATH=str(REPO / "daemon"))
    code = f"import os, scribed.engine.threadenv; print(os.environ.get({name!r}))"
    return subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_onednn_primitive_cache_is_bounded_by_default() -> None:
    from scribed.engine import threadenv

    assert _cache_capacity() == threadenv.PRIMITIVE_CACHE == "16"


def test_onednn_primitive_cache_from_the_environment_wins() -> None:
    assert _cache_capacity(ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024") == "1024"


def test_ideep_cache_is_bounded_by_default() -> None:
    from scribed.engine import threadenv

    assert _cache_capacity("LRU_CACHE_CAPACITY") == threadenv.IDEEP_CACHE == "16"


def test_ideep_cache_from_the_environment_wins() -> None:
    assert _cache_capacity("LRU_CACHE_CAPACITY", LRU_CACHE_CAPACITY="1024") == "1024"
