"""Tests for scribed.engine.factory: the configured backend, resolved offline, loaded, logged."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger

from scribed.config import Config, parse_config
from scribed.engine import factory
from scribed.errors import ConfigError, ModelError

REPO = Path(__file__).resolve().parents[3]


def _cfg(model_id: str, **model: object) -> Config:
    cfg = parse_config({"model": {"id": model_id, "device": "cpu", "dtype": "float32"}})
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))


def test_open_engine_loads_the_configured_model_and_logs_once(tiny_model: Path) -> None:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    try:
        engine = factory.open_engine(_cfg(str(tiny_model)))
    finally:
        logger.remove(sink)
    from scribed.engine.qwen3 import AsrEngine

    assert isinstance(engine, AsrEngine) and engine.loaded
    assert engine.name == str(tiny_model) and engine.device_name.startswith("cpu")
    loaded = [m for m in messages if "loaded on" in m]
    assert len(loaded) == 1 and str(tiny_model) in loaded[0] and "transformers" in loaded[0]


def test_build_engine_does_not_load(tiny_model: Path) -> None:
    engine = factory.build_engine(_cfg(str(tiny_model)))
    assert not engine.loaded


def test_an_unknown_backend_is_a_model_error(tiny_model: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.backend 'onnx'.*transformers"):
        factory.build_engine(_cfg(str(tiny_model), backend="onnx"))


def test_config_accepts_exactly_the_registered_backends() -> None:
    for name in factory.BACKENDS:
        assert parse_config({"model": {"backend": name}}).model.backend == name
    with pytest.raises(ConfigError):
        parse_config({"model": {"backend": "onnx"}})


def test_a_missing_model_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"scribed model pull Qwen/Qwen3-ASR-0\.6B-hf"):
        factory.open_engine(_cfg("Qwen/Qwen3-ASR-0.6B-hf", cache_dir=tmp_path / "hf"))


def test_importing_the_factory_loads_no_torch() -> None:
    code = "import sys, scribed.engine.factory; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
