"""Where models live: resolving ``model.id`` offline, listing the local cache, pulling once.

Contract:
- :func:`resolve_model` returns a local folder for a model id or path, never touching the
  network (Hugging Face offline mode is forced before ``huggingface_hub`` is imported). A model
  that is not there raises :class:`~scribed.errors.ModelError` with the exact command to fetch it.
- :func:`pull` is the ONE place scribed may use the network; it runs in a child process so the
  parent's offline settings (and network guard) stay untouched.
- No torch import here: ``scribed model list`` stays fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scribed.errors import ModelError

KNOWN_MODELS = ("Qwen/Qwen3-ASR-0.6B-hf", "Qwen/Qwen3-ASR-1.7B-hf")


def _hub(offline: bool = True):
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub

    return huggingface_hub


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(model_id: str, cache_dir: Path | None = None) -> Path:
    """Local folder holding ``model_id`` (a folder path, or a Hugging Face id in the local cache)."""
    candidate = Path(os.path.expandvars(os.path.expanduser(model_id)))
    if candidate.is_dir():
        if not _is_model_dir(candidate):
            raise ModelError(f"{str(candidate)!r} is a folder but holds no model (no config.json)")
        return candidate.resolve()
    if candidate.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") != 1:
        raise ModelError(f"model folder {model_id!r} does not exist")
    hub = _hub()
    try:
        path = Path(hub.snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True))
    except Exception as exc:  # the hub raises several types for "not cached"; all mean the same here
        cache = cache_dir or Path(hub.constants.HF_HUB_CACHE)
        raise ModelError(
            f"model {model_id!r} is not in the local cache ({cache}). scribed never downloads on its own;"
            f" fetch it once with:\n    scribed model pull {model_id}"
        ) from exc
    if not _is_model_dir(path):
        raise ModelError(f"the cached copy of {model_id!r} is incomplete; run: scribed model pull {model_id}")
    return path


@dataclass(frozen=True)
class LocalModel:
    id: str
    path: Path
    size_bytes: int


def list_models(cache_dir: Path | None = None) -> list[LocalModel]:
    """Qwen3-ASR checkpoints found in the local Hugging Face cache."""
    hub = _hub()
    try:
        info = hub.scan_cache_dir(cache_dir)
    except Exception:  # no cache folder yet
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            config = rev.snapshot_path / "config.json"
            try:
                model_type = json.loads(config.read_text()).get("model_type", "")
            except (OSError, ValueError):
                continue
            if model_type.startswith("qwen3_asr"):
                found.append(LocalModel(repo.repo_id, rev.snapshot_path, rev.size_on_disk))
                break
    return sorted(found, key=lambda m: m.id)


def pull(model_id: str, cache_dir: Path | None = None) -> int:
    """Download ``model_id`` into the cache (progress bar), then check that it loads. Exit status."""
    env = dict(os.environ, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
    args = [sys.executable, "-m", "scribed.engine.models", model_id] + ([str(cache_dir)] if cache_dir else [])
    return subprocess.call(args, env=env)


def _pull_main(argv: list[str]) -> int:
    model_id = argv[0]
    cache_dir = Path(argv[1]) if len(argv) > 1 else None
    hub = _hub(offline=False)
    try:
        path = hub.snapshot_download(model_id, cache_dir=cache_dir)
    except Exception as exc:
        print(f"scribed: could not download {model_id}: {exc}", file=sys.stderr)
        return 1
    print(f"downloaded {model_id} to {path}; checking that it loads...", file=sys.stderr)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from scribed.engine.qwen3 import AsrEngine

    try:
        AsrEngine(path, device="cpu").load()
    except ModelError as exc:
        print(f"scribed: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {model_id} is ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(_pull_main(sys.argv[1:]))
