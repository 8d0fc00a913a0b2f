"""Where models live: resolving ``model.id`` offline, listing the local cache, pulling once.

Contract:
- :func:`resolve_model` returns a local folder for a model id or path, never touching the
  network (Hugging Face offline mode is forced before ``huggingface_hub`` is imported). A model
  that is not there raises :class:`~scribed.errors.ModelError` with the exact command to fetch it.
- :func:`pull` is the ONE place scribed may use the network; it runs in a child process so the
  parent's offline settings (and network guard) stay untouched. A failed pull is one
  ``scribed:`` line (:func:`describe_pull_failure`) and exit status 1; the Hub's own progress
  bars show on a terminal only.
- No torch import here: ``scribed model list`` stays fast.
"""

from __future__ import annotations

import errno
import json
import os
import socket
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
    """Download ``model_id`` into the cache, then check that it loads. Exit status: 0 ready,
    1 the download failed (network, id, disk) or the model does not load; one ``scribed:`` line
    says why."""
    env = dict(os.environ, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1")
    args = [sys.executable, "-m", "scribed.engine.models", model_id] + ([str(cache_dir)] if cache_dir else [])
    child = subprocess.Popen(args, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C and says so itself
        return child.wait()


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first (bounded: a cycle cannot loop)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 20:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _first(chain: list[BaseException], *types: type[BaseException]) -> BaseException | None:
    return next((e for e in chain if isinstance(e, types)), None)


def _is_network(exc: BaseException) -> bool:
    """Means "the Hub could not be reached": the OS's errors, or the HTTP client's transport ones."""
    return isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)) or any(
        t.__name__ in ("TransportError", "OfflineModeIsEnabled") for t in type(exc).__mro__)


def describe_pull_failure(model_id: str, exc: BaseException, endpoint: str, cache: Path | None) -> str:
    """One line saying why downloading ``model_id`` failed and what to do, decided by the types in
    the exception's chain (the Hub's, the HTTP client's, the OS's), never by message text."""
    from huggingface_hub import errors as hub_errors

    chain = _chain(exc)
    if _first(chain, hub_errors.HFValidationError):
        return (f"{model_id!r} is not a valid model id: expected OWNER/NAME (letters, digits, '-', '_', '.'),"
                f" e.g. {KNOWN_MODELS[0]}")
    if _first(chain, hub_errors.GatedRepoError):
        return f"model {model_id!r} is gated on the Hub: accept its terms on the model page and log in (hf auth login)"
    if _first(chain, hub_errors.RepositoryNotFoundError):
        return (f"there is no model {model_id!r} on the Hub at {endpoint} (or it is private); Qwen3-ASR models: "
                f"{', '.join(KNOWN_MODELS)}")
    if _first(chain, hub_errors.RevisionNotFoundError):
        return f"model {model_id!r} has no such revision on the Hub at {endpoint}"
    network = [e for e in chain if _is_network(e)]
    if network:
        cause = network[-1]  # the innermost says it best ("Connection refused", "Name or service not known")
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return (f"cannot reach the Hugging Face Hub at {endpoint} to download {model_id} ({reason}); "
                "check the network connection or the proxy settings (HTTPS_PROXY), then run this again")
    http = _first(chain, hub_errors.HfHubHTTPError)
    if http is not None:
        status = getattr(getattr(http, "response", None), "status_code", None)
        return f"the Hub at {endpoint} refused to serve {model_id!r} (HTTP {status or 'error'}); try again later"
    disk = _first(chain, OSError)
    if isinstance(disk, OSError) and disk.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left for {model_id} in the cache ({cache}); free some space, then run this again"
    if isinstance(disk, OSError) and disk.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write the model cache ({cache}): {disk.strerror}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"could not download {model_id}: {type(exc).__name__}" + (f": {first}" if first else "")


def _quiet_hub() -> None:
    """No library warnings in the middle of our output; the Hub's own bars on a terminal only."""
    import logging

    from huggingface_hub.utils import disable_progress_bars

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if not sys.stderr.isatty():
        disable_progress_bars()


def _close_bars() -> None:
    """Finish the Hub's progress bars it leaves open (the byte counters), so that our next line
    starts below them instead of being drawn over one."""
    from tqdm import tqdm

    for bar in sorted(getattr(tqdm, "_instances", ()), key=lambda b: getattr(b, "pos", 0)):
        bar.close()


def _model_type(path: Path) -> str:
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _is_aligner(path: Path) -> bool:
    """A forced-aligner checkpoint (token classification) rather than the speech recognizer."""
    try:
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForTokenClassification") for a in architectures)


def _test_load(path: Path) -> None:
    """Load the checkpoint once on the CPU with the class scribed will use for it."""
    if _is_aligner(path):
        from scribed.engine.align import WordAligner
        from scribed.engine.types import AlignerSpec

        WordAligner(AlignerSpec(str(path), device="cpu")).load()
        return
    from scribed.engine.qwen3 import AsrEngine

    AsrEngine(path, device="cpu").load()


def _pull_main(argv: list[str]) -> int:
    model_id = argv[0]
    cache_dir = Path(argv[1]) if len(argv) > 1 else None
    hub = _hub(offline=False)
    _quiet_hub()
    endpoint = hub.constants.ENDPOINT
    cache = cache_dir or Path(hub.constants.HF_HUB_CACHE)
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
        print(f"downloading {model_id} from {endpoint} into {cache} (an interrupted download resumes)",
              file=sys.stderr)
        path = Path(hub.snapshot_download(model_id, cache_dir=cache_dir))
    except KeyboardInterrupt:
        print("scribed: interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure becomes one line; the type decides which
        print(f"scribed: {describe_pull_failure(model_id, exc, endpoint, cache)}", file=sys.stderr)
        return 1
    _close_bars()
    os.environ["HF_HUB_OFFLINE"] = "1"
    if not _model_type(path).startswith("qwen3_asr"):
        print(f"downloaded {model_id} to {path} (not a Qwen3-ASR speech model: not test-loaded)", file=sys.stderr)
        return 0
    print(f"downloaded {model_id} to {path}; checking that it loads...", file=sys.stderr)
    try:
        _test_load(path)
    except ModelError as exc:
        print(f"scribed: {model_id} was downloaded but does not load: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {model_id} is ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(_pull_main(sys.argv[1:]))
