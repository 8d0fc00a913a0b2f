"""Inputs of ``scribed bench``: tokenizer files, random-weight checkpoints, and recordings.

Contract: nothing is looked up relative to the source tree (``scribed bench`` runs from an
installed wheel). The tokenizer folder is ``--tokenizer``, else ``$SCRIBED_TOKENIZER_DIR``, else
(last resort) ``../shared/data/models/qwen3-asr-0.6b-nonweights`` relative to the current
directory; speech clips come from ``$SCRIBED_BENCH_SPEECH_DIR``, else ``../shared/data/speech``
relative to the current directory, else synthetic speech-like noise. Random-weight checkpoints
are built once into ``$XDG_CACHE_HOME/scribed/bench`` and reused. Recordings are reproducible
from their seed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from loguru import logger

from scribed.config import xdg_dir
from scribed.errors import ModelError, ScribedError
from scribed.media.audio import SAMPLE_RATE, decode_audio

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
# Last resorts, relative to the current directory (a checkout next to the shared data).
SHARED_TOKENIZER = Path("..") / "shared" / "data" / "models" / "qwen3-asr-0.6b-nonweights"
SHARED_SPEECH = Path("..") / "shared" / "data" / "speech"


def tokenizer_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """Where the Qwen3-ASR tokenizer files are, or a ModelError that says how to provide them.

    ``option`` (``--tokenizer``) or ``$SCRIBED_TOKENIZER_DIR`` is used alone when given; only
    without both is ``../shared/...`` beside the current directory tried.
    """
    env = os.environ.get("SCRIBED_TOKENIZER_DIR")
    chosen = option or env
    candidates = [Path(chosen).expanduser()] if chosen else [SHARED_TOKENIZER]
    for path in candidates:
        if all((path / name).is_file() for name in TOKENIZER_FILES):
            return path.resolve()
    raise ModelError(
        f"the random-weight benchmark needs the Qwen3-ASR tokenizer files ({', '.join(TOKENIZER_FILES)}); "
        f"none found in {', '.join(map(str, candidates))}. Point --tokenizer DIR (or SCRIBED_TOKENIZER_DIR) "
        "at a folder holding them (any Qwen3-ASR checkpoint folder does), or benchmark a real checkpoint "
        "with --model DIR|ID"
    )


def random_checkpoint(size: str, tokenizer: Path, dtype: str = "float32") -> tuple[Path, float | None]:
    """The cached random-weight checkpoint of ``size`` and its build seconds (None when reused)."""
    import transformers

    from scribed.engine.checkpoints import MARKER, build_random_checkpoint

    out = xdg_dir("XDG_CACHE_HOME", ".cache") / "scribed" / "bench" / f"{size}-{dtype}-tf{transformers.__version__}"
    if (out / MARKER).is_file():  # written last by build_random_checkpoint
        return out, None
    logger.info("building a random-weight {} checkpoint in {} (once)", size, out)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    start = time.perf_counter()
    try:
        build_random_checkpoint(tmp, tokenizer, size=size, dtype=dtype)
        if not (out / MARKER).is_file():  # else a concurrent bench won the race
            shutil.rmtree(out, ignore_errors=True)  # an incomplete earlier build
            tmp.rename(out)  # atomic: a concurrent bench sees either nothing or a whole checkpoint
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, time.perf_counter() - start


def speech_dir() -> Path:
    """``$SCRIBED_BENCH_SPEECH_DIR``, else ``../shared/data/speech`` relative to the current directory."""
    env = os.environ.get("SCRIBED_BENCH_SPEECH_DIR")
    return Path(env).expanduser() if env else SHARED_SPEECH


def speech_clips(folder: Path | None = None) -> list[np.ndarray]:
    """Every readable clip of the folder's ``manifest.jsonl``, decoded to 16 kHz mono.

    Manifest entries name files relative to the folder's parent ("speech/xyz.wav"), as the
    shared data set does.
    """
    folder = speech_dir() if folder is None else folder
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return []
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            clips.append(decode_audio(folder.parent / json.loads(line)["file"]).samples)
        except (ValueError, KeyError, ScribedError):
            continue
    return clips


def synthetic_clip(rng: np.random.Generator) -> np.ndarray:
    """2-12 s of speech-like noise: low-passed noise in syllable-rate (~4 Hz) bursts."""
    n = int(rng.uniform(2.0, 12.0) * SAMPLE_RATE)
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
    t = np.arange(n) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 6.3)), 0, None)
    return (0.3 * noise * envelope).astype(np.float32)


def make_recording(seconds: float, clips: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """``seconds`` of clips in shuffled order with sentence-like pauses (mostly < 2 s, some long)."""
    rng = np.random.default_rng(seed)
    target = int(seconds * SAMPLE_RATE)
    parts: list[np.ndarray] = []
    total = 0
    while total < target:
        clip = clips[rng.integers(len(clips))] if clips else synthetic_clip(rng)
        pause = rng.choice([0.3, 0.6, 1.0, 1.5, 4.0], p=[0.3, 0.3, 0.2, 0.1, 0.1])
        # room tone at about -60 dBFS rather than digital silence, as a real recording has
        parts += [(rng.standard_normal(int(pause * SAMPLE_RATE)) * 1e-3).astype(np.float32), clip]
        total += parts[-2].size + clip.size
    return np.concatenate(parts)[:target]


def write_wav(path: Path, samples: np.ndarray) -> Path:
    import soundfile

    soundfile.write(path, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return path
