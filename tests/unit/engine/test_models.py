"""Tests for scribed.engine.models: offline resolution and the local cache listing (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scribed.engine import models
from scribed.errors import ModelError

REPO = Path(__file__).resolve().parents[3]


def _fake_cache(cache: Path, repo_id: str, model_type: str, weights: bytes = b"w" * 1000) -> Path:
    """A Hugging Face hub cache layout holding one snapshot of ``repo_id``."""
    org, name = repo_id.split("/")
    root = cache / f"models--{org}--{name}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    (root / "blobs").mkdir()
    files = {"config.json": json.dumps({"model_type": model_type}).encode(), "model.safetensors": weights}
    for fname, data in files.items():
        blob = root / "blobs" / f"{abs(hash((repo_id, fname))):x}"
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / fname)
    return snap


def test_a_model_folder_resolves_to_itself(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)) == tmp_path.resolve()


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: d.mkdir(), "holds no model"),
    (lambda d: None, "does not exist"),
])
def test_bad_folders_are_clear_errors(tmp_path: Path, make, says: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "m"
    make(folder)
    with pytest.raises(ModelError, match=says):
        models.resolve_model(str(folder))


def test_a_cached_hub_id_resolves_offline(tmp_path: Path) -> None:
    snap = _fake_cache(tmp_path, "Qwen/Qwen3-ASR-0.6B-hf", "qwen3_asr")
    assert models.resolve_model("Qwen/Qwen3-ASR-0.6B-hf", tmp_path) == snap


def test_an_uncached_hub_id_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"(?s)scribed never downloads.*scribed model pull Qwen/Qwen3-ASR-1\.7B-hf"):
        models.resolve_model("Qwen/Qwen3-ASR-1.7B-hf", tmp_path)


def test_list_models_finds_only_asr_checkpoints(tmp_path: Path) -> None:
    _fake_cache(tmp_path, "Qwen/Qwen3-ASR-0.6B-hf", "qwen3_asr")
    _fake_cache(tmp_path, "someone/other-model", "llama")
    (found,) = models.list_models(tmp_path)
    assert found.id == "Qwen/Qwen3-ASR-0.6B-hf" and found.size_bytes > 0 and (found.path / "config.json").is_file()
    assert models.list_models(tmp_path / "nothing-here") == []


def test_no_torch_is_imported_for_model_listing() -> None:
    code = "import sys, scribed.engine.models as m; m.list_models(); sys.exit('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"), HF_HOME=str(REPO / ".pytest_cache" / "no-hf"))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_known_models_are_the_released_checkpoints() -> None:
    assert models.KNOWN_MODELS == ("Qwen/Qwen3-ASR-0.6B-hf", "Qwen/Qwen3-ASR-1.7B-hf")
