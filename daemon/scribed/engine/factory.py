"""Choosing and opening the engine named by the configuration. Imports torch only when it opens one.

Contract: :func:`open_engine` resolves ``cfg.model.id`` offline (never the network), builds the
engine registered for ``cfg.model.backend`` and loads it, logging one INFO line. :data:`BACKENDS`
is the one table of engine implementations; config validation accepts only its keys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from scribed.errors import ModelError

if TYPE_CHECKING:
    from scribed.config import Config
    from scribed.engine.types import Engine


def _transformers(path: Path, cfg: Config) -> Engine:
    from scribed.engine.qwen3 import AsrEngine  # imports torch: only when this backend is opened

    return AsrEngine(path, device=cfg.model.device, dtype=cfg.model.dtype, name=cfg.model.id)


# backend name -> builder(resolved model folder, config). Only transformers exists for now.
BACKENDS: dict[str, Callable[[Path, Config], Engine]] = {"transformers": _transformers}


def build_engine(cfg: Config) -> Engine:
    """The configured engine, not loaded yet (the model folder is resolved offline)."""
    from scribed.engine.models import resolve_model

    builder = BACKENDS.get(cfg.model.backend)
    if builder is None:
        raise ModelError(f"model.backend {cfg.model.backend!r} is not available; choose one of {sorted(BACKENDS)}")
    return builder(resolve_model(cfg.model.id, cfg.model.cache_dir), cfg)


def open_engine(cfg: Config) -> Engine:
    """Build and load the configured engine. Raises ModelError (missing model, bad backend, load failure)."""
    engine = build_engine(cfg)
    engine.load()
    logger.info("model {} ({}) loaded on {} in {:.1f} s", cfg.model.id, cfg.model.backend,
                engine.device_name, engine.load_seconds)
    return engine
