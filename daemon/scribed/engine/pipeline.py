"""The transcription pipeline: decoded recordings in, :class:`Transcript` out. Does not import torch.

Contract:
- :class:`Pipeline` takes an :class:`~scribed.engine.types.Engine` and any number of decoded
  recordings; all their chunks share batches of ``batch_size``, longest first so padding stays small.
- Speech is never dropped silently: a chunk whose output hit its token limit (truncation or a
  repetition loop) is split at its quietest point and both halves are transcribed again, up to
  ``max_split_depth`` times; what still fails is kept (collapsed) and listed in
  ``Transcript.failures`` so the outputs and the log can say so.
- Segment times are seconds of the original recording.
- Speaker turns (``options.speakers`` auto or N) are found before recognition
  (:mod:`scribed.engine.speakers`) and the chunks are cut at every change of speaker
  (:mod:`scribed.engine.turns`), so a chunk, and the segment it becomes, has one speaker: text
  and turns agree by construction, with or without word timings.
- After recognition each transcript goes through the pipeline's stages in order
  (:mod:`scribed.engine.stages`; by default the repetition/glossary clean-up, then word timings
  when ``options.word_timestamps``).
- The models beside the recognizer (voice encoder, forced aligner) live in :class:`Analysers`,
  loaded on first use and shared by every pipeline made with :meth:`Pipeline.with_options`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger

from scribed import text
from scribed.engine.speakers import SpeakerFinder, SpeakerOptions, Turns
from scribed.engine.stages import Stage, default_stages, run_stages
from scribed.engine.turns import split_at_turns
from scribed.engine.types import (
    AlignerSpec,
    ChunkFailure,
    ChunkRequest,
    ChunkResult,
    Engine,
    Segment,
    SpeakerTurn,
    TranscribeOptions,
    Transcript,
)
from scribed.media import segment
from scribed.media.audio import SAMPLE_RATE, DecodedAudio

if TYPE_CHECKING:
    from scribed.engine.align import WordAligner


@dataclass
class Planned:
    """A chunk to transcribe: samples ``[start, end)`` of recording ``key`` (of its window, in
    :mod:`scribed.engine.windows`), ``depth`` times split already."""

    key: Hashable
    start: int
    end: int
    pause_before: float
    depth: int = 0
    speaker: int | None = None


Progress = Callable[[Hashable, int, int], None]


class Analysers:
    """The models beside the recognizer, each loaded on first use: the voice encoder (speaker
    turns) and the forced aligner (word timings, one per :class:`AlignerSpec`)."""

    def __init__(self, speakers: SpeakerFinder | None = None) -> None:
        self.speakers = speakers or SpeakerFinder()
        self._aligners: dict[AlignerSpec, WordAligner] = {}

    def aligner(self, spec: AlignerSpec) -> WordAligner:
        if spec not in self._aligners:
            from scribed.engine.align import WordAligner  # torch and transformers: only when used

            self._aligners[spec] = WordAligner(spec)
        return self._aligners[spec]

    def unload(self) -> None:
        self.speakers.unload()
        for aligner in self._aligners.values():
            aligner.unload()


class Pipeline:
    """Chunk, batch, generate and assemble. One instance per loaded engine and set of options; not thread-safe.

    Raises ModelError at construction when the options need a model that is not installed (the
    voice encoder's weights for speakers, the aligner for word timestamps), naming the fix."""

    def __init__(self, engine: Engine, options: TranscribeOptions, stages: Sequence[Stage] | None = None, *,
                 analysers: Analysers | None = None) -> None:
        self.engine = engine
        self.options = options
        self.analysers = analysers or Analysers()
        self._given_stages = None if stages is None else tuple(stages)
        if options.speakers not in ("off", 1):
            from scribed.engine.voice import weights_path

            weights_path()
        if options.word_timestamps:
            self.analysers.aligner(options.aligner).resolve()
        self.stages: tuple[Stage, ...] = (default_stages(options, self.analysers.aligner)
                                          if stages is None else self._given_stages)

    def with_options(self, options: TranscribeOptions) -> Pipeline:
        """A pipeline for other options on the same engine, sharing the loaded analysers."""
        return Pipeline(self.engine, options, self._given_stages, analysers=self.analysers)

    def unload(self) -> None:
        """Free the recognizer and the analysers; each reloads when next used."""
        self.engine.unload()
        self.analysers.unload()

    def transcribe(self, recordings: Mapping[Hashable, DecodedAudio], *,
                   progress: Progress | None = None) -> dict[Hashable, Transcript]:
        """Transcribe several decoded recordings together; returns one Transcript per key."""
        opts = self.options
        seg_opts = segment.SegmentOptions(max_chunk_s=opts.max_chunk_s)
        pending: list[Planned] = []
        totals: dict[Hashable, int] = {}
        turns: dict[Hashable, Turns | None] = {}
        for key, audio in recordings.items():
            chunks = segment.plan_chunks(audio.samples, SAMPLE_RATE, seg_opts)
            turns[key] = self._turns(audio)
            pieces = (split_at_turns(chunks, turns[key].turns, audio.samples) if turns[key] is not None
                      else [(c, None) for c in chunks])
            totals[key] = len(pieces)
            pending += [Planned(key, c.start, c.end, c.pause_before_s, speaker=who) for c, who in pieces]
            logger.debug("{}: {} chunks planned", audio.source, len(pieces))
        finished, failures = self.recognize({k: a.samples for k, a in recordings.items()},
                                            {k: a.source for k, a in recordings.items()}, pending, totals,
                                            progress=progress)
        return {key: run_stages(self.stages, recordings[key],
                                self.assemble(recordings[key], finished[key], failures[key], turns[key]))
                for key in recordings}

    def recognize(self, samples: Mapping[Hashable, np.ndarray], sources: Mapping[Hashable, str],
                  pending: list[Planned], totals: dict[Hashable, int], *, progress: Progress | None = None,
                  done_count: Counter[Hashable] | None = None, origin: Mapping[Hashable, int] | None = None,
                  ) -> tuple[dict[Hashable, list[tuple[Planned, ChunkResult]]], dict[Hashable, list[ChunkFailure]]]:
        """Run the planned chunks ``pending`` (sample ranges of ``samples[key]``) through the engine,
        splitting any that hit their token limit (see the module contract); ``totals`` and
        ``done_count`` are the per-key chunk counts progress reports. ``origin[key]``: where
        ``samples[key]`` starts in its recording (a window), for log lines and failure times."""
        opts = self.options
        origin = origin or {}
        done_count = Counter() if done_count is None else done_count

        def seconds(item: Planned, at: int) -> float:  # in the recording, not in the window
            return (origin.get(item.key, 0) + at) / SAMPLE_RATE

        finished: dict[Hashable, list[tuple[Planned, ChunkResult]]] = {k: [] for k in samples}
        failures: dict[Hashable, list[ChunkFailure]] = {k: [] for k in samples}
        while pending:
            # Longest first: similar lengths share a batch, and an OOM shows up on the first batch.
            pending.sort(key=lambda it: it.end - it.start, reverse=True)
            requests = [self._request(samples[it.key], it) for it in pending]
            retry: list[Planned] = []
            cursor = [0]  # engine batches finish in request order

            def tick(n: int, cursor: list[int] = cursor, pending: list[Planned] = pending) -> None:
                first = cursor[0]
                cursor[0] += n
                for it in pending[first:first + n]:
                    done_count[it.key] += 1
                    if progress:
                        progress(it.key, done_count[it.key], totals[it.key])

            results = self.engine.run(requests, opts.batch_size, on_done=tick)
            for item, result in zip(pending, results, strict=True):
                if result.hit_limit:
                    halves = self._split(samples[item.key], item)
                    if halves:
                        totals[item.key] += 1
                        retry += halves
                        logger.info("{}: chunk {}–{} hit its token limit; splitting it in two", sources[item.key],
                                    text.format_clock(seconds(item, item.start)),
                                    text.format_clock(seconds(item, item.end)))
                        continue
                    reason = (f"model output hit its length limit ({result.tokens} tokens) even after "
                              f"{item.depth} split(s): possibly incomplete")
                    failures[item.key].append(ChunkFailure(seconds(item, item.start), seconds(item, item.end), reason))
                    logger.warning("{}: {}–{} {}", sources[item.key], text.format_clock(seconds(item, item.start)),
                                   text.format_clock(seconds(item, item.end)), reason)
                finished[item.key].append((item, result))
            pending = retry
        return finished, failures

    # -- helpers -------------------------------------------------------------------------------
    def _turns(self, audio: DecodedAudio) -> Turns | None:
        """Who speaks when, or None when speakers are off."""
        opts = self.options
        if opts.speakers == "off":
            return None
        if opts.speakers == 1:  # nothing to tell apart
            found = Turns("voices", tuple(SpeakerTurn(a / SAMPLE_RATE, b / SAMPLE_RATE, 0)
                                          for a, b in segment.find_speech(audio.samples)))
        else:
            found = self.analysers.speakers.find(
                audio, SpeakerOptions.from_setting(opts.speakers, opts.min_speakers, opts.max_speakers))
        logger.info("{}: {} speaker(s) told apart by {}, {} turns", audio.source, found.count,
                    "channel" if found.method == "channels" else "voice", len(found.turns))
        return found

    def _request(self, samples: np.ndarray, item: Planned) -> ChunkRequest:
        seconds = (item.end - item.start) / SAMPLE_RATE
        return ChunkRequest(audio=samples[item.start:item.end], max_new_tokens=self.options.token_budget(seconds),
                            language=self.options.language, prompt=self.options.context)

    def _split(self, samples: np.ndarray, item: Planned) -> list[Planned] | None:
        """Two halves cut at the quietest point, or None when the depth/length limit is reached."""
        seconds = (item.end - item.start) / SAMPLE_RATE
        if item.depth >= self.options.max_split_depth or seconds < 2 * self.options.min_split_s:
            return None
        cut = segment.quietest_point(samples, item.start, item.end, SAMPLE_RATE)
        return [Planned(item.key, item.start, cut, item.pause_before, item.depth + 1, item.speaker),
                Planned(item.key, cut, item.end, 0.0, item.depth + 1, item.speaker)]

    def assemble(self, audio: DecodedAudio, parts: list[tuple[Planned, ChunkResult]],
                 failures: list[ChunkFailure], turns: Turns | None) -> Transcript:
        """The Transcript of ``audio`` from its recognised chunks (times in the recording), in order."""
        segments = []
        weights: Counter[str] = Counter()
        for item, result in sorted(parts, key=lambda p: p[0].start):
            code = text.language_code(result.language)
            start, end = item.start / SAMPLE_RATE, item.end / SAMPLE_RATE
            if code and result.text.strip():
                weights[code] += end - start
            segments.append(Segment(round(start, 3), round(end, 3), result.text, code, round(item.pause_before, 3),
                                    item.speaker))
        forced = text.language_code(self.options.language)
        language = forced or (weights.most_common(1)[0][0] if weights else None)
        return Transcript(source=audio.source, duration_s=round(audio.duration_s, 3), language=language,
                          model=self.engine.name, segments=tuple(segments),
                          failures=tuple(sorted(failures, key=lambda f: f.start)),
                          paragraph_pause_s=self.options.paragraph_pause_s,
                          speaker_method=turns.method if turns else None,
                          channel_of=dict(turns.channel_of) if turns else {})
