"""Word timings: Qwen3-ForcedAligner through transformers' native classes.

Contract:
- :class:`WordAligner` finds the aligner offline (:meth:`~WordAligner.resolve`: a missing model is a
  :class:`~scribed.errors.ModelError` naming ``scribed model pull <id>``), loads it on first use
  (``AutoProcessor`` + ``AutoModelForTokenClassification``, ``local_files_only``) and frees it with
  :meth:`~WordAligner.unload`. :meth:`~WordAligner.align` runs the processor's
  ``prepare_forced_aligner_inputs``, one forward pass and ``decode_forced_alignment``; times are
  seconds from the start of each piece of audio.
- :class:`AlignWords` is the post-recognition stage: every segment with text in a language the
  aligner supports gets its words, in seconds of the original recording, inside the segment and in
  order (non-decreasing; a word never starts before the previous one ends). Each word keeps its
  punctuation from the transcript (the aligner sees words without it). Segments in other languages
  keep the estimated cue times; the transcript's ``word_timing`` and ``notes`` say so, and so does
  one log line.
- This module imports torch and transformers: it is loaded in the worker (or ``transcribe``) only
  when word timestamps are on.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from loguru import logger
from transformers import AutoModelForTokenClassification, AutoProcessor
from transformers.models.qwen3_asr.processing_qwen3_asr import FORCED_ALIGNER_LANGUAGES

from scribed import text as textmod
from scribed.engine.qwen3 import resolve_device
from scribed.engine.types import AlignerSpec, Segment, Transcript, Word
from scribed.errors import ModelError

if TYPE_CHECKING:
    from scribed.media.audio import DecodedAudio

SAMPLE_RATE = 16000
# Languages whose word splitting needs an extra package (transformers raises without it).
_NEEDS = {"Japanese": "nagisa", "Korean": "soynlp"}


def supported(language: str | None) -> bool:
    """Whether the aligner can time words of ``language`` (a model language name) here."""
    if language not in FORCED_ALIGNER_LANGUAGES:
        return False
    package = _NEEDS.get(language)
    return package is None or importlib.util.find_spec(package) is not None


class WordAligner:
    """The forced aligner, loaded on first use. Not thread-safe."""

    def __init__(self, spec: AlignerSpec, *, batch_size: int = 8) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.path: Path | None = None
        self.model: Any = None
        self.processor: Any = None
        self.load_seconds = 0.0

    def resolve(self) -> Path:
        """The aligner's local folder (offline); ModelError naming the pull command when absent."""
        if self.path is None:
            from scribed.engine.models import resolve_model

            self.path = resolve_model(self.spec.model_id, self.spec.cache_dir)
        return self.path

    def load(self) -> None:
        if self.model is not None:
            return
        start = time.perf_counter()
        path = self.resolve()
        device, dtype = resolve_device(self.spec.device, self.spec.dtype)
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForTokenClassification.from_pretrained(
                path, local_files_only=True, dtype=dtype).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            self.processor = self.model = None
            raise ModelError(f"cannot load the forced aligner from {str(path)!r}: {exc}") from exc
        self.load_seconds = time.perf_counter() - start
        logger.info("forced aligner {} loaded on {} in {:.1f} s", self.spec.model_id, device, self.load_seconds)

    def unload(self) -> None:
        self.model = self.processor = None

    @torch.inference_mode()
    def align(self, pieces: Sequence[tuple[np.ndarray, str, str]]) -> list[list[tuple[float, float, str]]]:
        """(audio, transcript, language name) -> per piece, (start, end, word) in seconds of that audio."""
        self.load()
        results: list[list[tuple[float, float, str]]] = [[] for _ in pieces]
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][0]), reverse=True)
        for first in range(0, len(order), self.batch_size):
            batch = order[first:first + self.batch_size]
            inputs, words = self.processor.prepare_forced_aligner_inputs(
                [np.ascontiguousarray(pieces[i][0], dtype=np.float32) for i in batch],
                [pieces[i][1] for i in batch], language=[pieces[i][2] for i in batch])
            inputs = inputs.to(self.model.device)
            inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
            logits = self.model(**inputs).logits
            decoded = self.processor.decode_forced_alignment(
                logits, inputs["input_ids"], words, timestamp_token_id=self.model.config.timestamp_token_id)
            for i, items in zip(batch, decoded, strict=True):
                results[i] = [(float(w["start_time"]), float(w["end_time"]), str(w["text"])) for w in items]
        return results


def _kept(char: str) -> bool:
    """The characters the aligner's word splitting keeps: letters (CJK ideographs included), digits, apostrophes."""
    return char == "'" or unicodedata.category(char)[0] in "LN"


def surface_words(text: str, tokens: Sequence[str]) -> list[str]:
    """The transcript's own spelling of each aligned token, punctuation included.

    The aligner sees words stripped to letters, digits, apostrophes and CJK characters; each token
    is found in order in ``text`` and takes the text up to the next token (so "world." keeps its
    full stop and an opening quote goes with the word it opens)."""
    starts: list[int] = []
    pos = 0
    for token in tokens:
        while pos < len(text) and not _kept(text[pos]):
            pos += 1
        starts.append(pos)
        matched = 0
        while pos < len(text) and matched < len(token):  # over the token's kept characters
            matched += _kept(text[pos])
            pos += 1
    edges = [0, *starts[1:], len(text)]
    return [text[a:b].strip() for a, b in itertools.pairwise(edges)]


def place(raw: Sequence[tuple[float, float, str]], seg: Segment) -> list[Word]:
    """Aligner times (seconds from the segment's start) -> words inside the segment, in order."""
    words: list[Word] = []
    floor = seg.start
    for (start, end, token), surface in zip(raw, surface_words(seg.text, [t for _, _, t in raw]), strict=True):
        a = min(max(seg.start + start, floor), seg.end)
        b = min(max(seg.start + end, a), seg.end)
        words.append(Word(round(a, 3), round(b, 3), surface or token))
        floor = b
    return words


@dataclass
class AlignWords:
    """The word-timing stage (see the module contract)."""

    aligner: WordAligner
    name: str = "align-words"

    def __call__(self, audio: DecodedAudio, transcript: Transcript) -> Transcript:
        todo: list[int] = []
        pieces: list[tuple[np.ndarray, str, str]] = []
        skipped: set[str] = set()
        for i, seg in enumerate(transcript.segments):
            if not seg.text.strip():
                continue
            language = textmod.language_name(seg.language or transcript.language)
            if not supported(language):
                skipped.add(language or "undetected")
                continue
            todo.append(i)
            a, b = round(seg.start * SAMPLE_RATE), round(seg.end * SAMPLE_RATE)
            pieces.append((audio.samples[a:b], seg.text, language))  # type: ignore[arg-type]
        segments = list(transcript.segments)
        for i, raw in zip(todo, self.aligner.align(pieces) if pieces else [], strict=True):
            segments[i] = dataclasses.replace(segments[i], words=tuple(place(raw, segments[i])))
        spoken = sum(1 for s in segments if s.text.strip())
        timing = "aligned" if not skipped else ("partial" if todo else "estimated")
        notes = tuple(transcript.notes)
        if skipped:
            names = ", ".join(sorted(skipped))
            note = (f"word timestamps: the forced aligner does not support {names}; "
                    f"{spoken - len(todo)} of {spoken} segment(s) keep estimated times")
            notes += (note,)
            logger.info("{}: {}", audio.source, note)
        return dataclasses.replace(transcript, segments=tuple(segments), word_timing=timing, notes=notes)
