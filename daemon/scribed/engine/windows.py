"""Transcribe one long recording window by window while it is decoded. Does not import torch.

Contract:
- A :class:`WindowFeed` is the ``on_window`` consumer of
  :func:`scribed.media.audio.decode_audio`: each block it is given is appended to what was left
  of the previous one, chunked (:func:`scribed.media.segment.plan_chunks`) and transcribed at
  once, except what follows the block's last long pause (a pause the planner skips) when it is
  not the recording's last block: that audio, from the end of the chunk before the pause, is
  carried into the next window, with :data:`LOOKBACK_S` of what came before as context only.
  The feed carries it by asking the decoder for it again (its return value: the next block
  starts with those samples), so it never copies a window nor keeps the decoder's block.
  So no chunk is cut by a window edge, and the plan is the one the whole recording gets
  (tests); only a window with no long pause at all is cut after its
  second-to-last chunk, where the plan may differ from the whole one by a fraction of a second.
- What it holds: the results so far; the audio is the decoder's one buffer (one window plus
  the carried tail: under half a window, or one chunk and the silence after it), so memory does
  not grow with the recording's length and a window is in memory once.
- :meth:`WindowFeed.transcript` gives the Transcript once the decode returned; the same text
  assembly, failure reporting and stages as :meth:`Pipeline.transcribe` (segment times are
  seconds of the recording). A decoder that starts over (offset 0 again) drops what was done.
- Only for options that need no whole-recording pass: :func:`windowed` says when (speaker
  turns and word timings read the whole recording; such recordings are decoded whole).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable

import numpy as np
from loguru import logger

from scribed.engine.pipeline import Pipeline, Planned, Progress
from scribed.engine.stages import run_stages
from scribed.engine.types import ChunkFailure, ChunkResult, TranscribeOptions, Transcript
from scribed.media import segment
from scribed.media.audio import SAMPLE_RATE, DecodedAudio

#: Seconds of decoded audio per window (10 min of 16 kHz float32: ~38 MB).
WINDOW_S = 600.0
#: Seconds already transcribed that the next window still starts with: the planner's noise floor
#: looks 1.5 s back (media.segment), so with this context it finds the cuts it finds whole.
LOOKBACK_S = 3.0


def windowed(options: TranscribeOptions) -> bool:
    """Whether recordings transcribed with ``options`` may be fed window by window."""
    return options.speakers == "off" and not options.word_timestamps


def _edge(chunks: list[segment.Chunk], size: int) -> int:
    """How many of a window's chunks to transcribe now: up to the last pause the planner skipped
    (only long pauses are skipped, and the same cut is found with or without what came before)
    if it lies in the second half of the ``size`` samples (so what is carried stays under half
    a window), else all but the last chunk (which may reach the window's end)."""
    for k in range(len(chunks) - 1, 0, -1):
        if chunks[k - 1].end < size // 2:
            break
        if chunks[k].start > chunks[k - 1].end:
            return k
    return max(0, len(chunks) - 1)


class WindowFeed:
    """The consumer of one windowed decode; see the module contract. Not thread-safe."""

    def __init__(self, pipeline: Pipeline, key: Hashable, source: str, *, progress: Progress | None = None) -> None:
        if not windowed(pipeline.options):
            raise ValueError("these options read the whole recording; decode it whole")
        self.pipeline = pipeline
        self.key = key
        self.source = source
        self.progress = progress
        self._reset()

    def _reset(self) -> None:
        self._next = 0  # where the next block starts in the recording
        self._skip = 0  # samples at its start already transcribed: context for the planner only
        self._last_end = 0  # end of the last chunk transcribed, in the recording
        self._finished: list[tuple[Planned, ChunkResult]] = []
        self._failures: list[ChunkFailure] = []
        self._totals: dict[Hashable, int] = {self.key: 0}
        self._done: Counter[Hashable] = Counter()
        self.windows = 0
        self.peak_samples = 0  # the most samples held at once (tests, logs)

    def __call__(self, offset: int, samples: np.ndarray, last: bool) -> int:
        """Transcribe what ``samples`` (the block at ``offset``) settles; returns how many samples
        at its end the next block must start with again (see the module contract)."""
        if offset == 0 and self.windows:
            logger.debug("{}: decoding started over; dropping {} window(s)", self.source, self.windows)
            self._reset()
        if offset != self._next:
            raise ValueError(f"block at sample {offset}, expected {self._next}: the decoder skipped or repeated audio")
        self.peak_samples = max(self.peak_samples, samples.size)
        self.windows += 1
        at, skip = offset, self._skip
        seg_opts = segment.SegmentOptions(max_chunk_s=self.pipeline.options.max_chunk_s)
        chunks = [c for c in segment.plan_chunks(samples, SAMPLE_RATE, seg_opts) if c.end > skip]
        keep = chunks if last else chunks[: _edge(chunks, samples.size)]
        if keep:  # its pause counts from the last chunk transcribed, maybe windows ago
            first = keep[0]
            start = max(first.start, skip)
            pause = (at + start - self._last_end) / SAMPLE_RATE
            keep[0] = dataclasses.replace(first, start=start, pause_before_s=pause)
        items = [Planned(self.key, c.start, c.end, c.pause_before_s) for c in keep]
        self._totals[self.key] += len(items)
        if items:
            finished, failures = self.pipeline.recognize(
                {self.key: samples}, {self.key: self.source}, items, self._totals, progress=self.progress,
                done_count=self._done, origin={self.key: at})
            self._finished += [(dataclasses.replace(item, start=item.start + at, end=item.end + at), result)
                               for item, result in finished[self.key]]
            self._failures += failures[self.key]
            self._last_end = at + keep[-1].end
        # done up to: the last chunk transcribed; all of it when nothing in it is speech
        done = keep[-1].end if keep else (skip if chunks else samples.size)
        carry_from = samples.size if last else max(0, done - int(LOOKBACK_S * SAMPLE_RATE))
        self._next, self._skip = at + carry_from, done - carry_from
        logger.debug("{}: window {} ({:.0f} s) gave {} chunk(s)", self.source, self.windows,
                     samples.size / SAMPLE_RATE, len(items))
        return samples.size - carry_from

    def transcript(self, audio: DecodedAudio) -> Transcript:
        """The recording's Transcript, after :func:`decode_audio` returned ``audio`` (its metadata)."""
        pipeline = self.pipeline
        assembled = pipeline.assemble(audio, self._finished, self._failures, None)
        return run_stages(pipeline.stages, audio, assembled)
