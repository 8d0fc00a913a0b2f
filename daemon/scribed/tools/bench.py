"""``scribed bench``: how fast Qwen3-ASR transcribes on this machine, through the production path.

Contract:
- What is timed is the code of ``scribed transcribe`` and the daemon: bench recordings are WAV
  files that :func:`scribed.engine.runner.transcribe_files` decodes, segments, batches (longest first,
  across files) and transcribes with :class:`scribed.engine.pipeline.Pipeline` on an
  :class:`scribed.engine.qwen3.AsrEngine`, writing a .txt each. Wall time covers all of that.
- Without ``--model`` the weights are random (the real 0.6B/1.7B architectures, built once into
  ``$XDG_CACHE_HOME/scribed/bench/<size>-<dtype>-tf<transformers version>`` and reused; build time is
  reported apart from load time). Random weights never stop sensibly, so every chunk generates
  exactly :data:`TOKENS_PER_AUDIO_S` tokens per second of the longest chunk of each model call
  (also with ``--model``, so figures stay comparable): :class:`BenchEngine` sets
  ``ChunkRequest.min_new_tokens``/``max_new_tokens`` on the requests the pipeline sends, so the
  production options carry no benchmark knob.
- Inputs (tokenizer, checkpoints, recordings) come from :mod:`scribed.tools.benchdata`, never
  from paths relative to the source tree; the tokenizer folder is ``--tokenizer DIR``.
- Scenarios: ``memo`` (one short recording: latency), ``long`` (one long recording), ``backlog``
  (several recordings transcribed together: throughput) and ``batched_speedup`` (the memo again
  with batch size 1; ratio of wall times). ``SCRIBED_BENCH_DURATIONS="memo=60,long=600,backlog=300"``
  overrides the lengths in seconds (0 skips a scenario; ``backlog`` is per recording).
- :func:`run_bench` returns the report (JSON-able dict); ``--json`` prints it as one object.
  Keys: date, scribed, python, torch, transformers, cpu, threads, loadavg_before/after, audio,
  tokens_per_audio_s, quick, models[] with architecture, path, random_weights, device, dtype,
  parameters, build_s, load_s, warmup_s, batch_size, scenarios{name: row}, batched_speedup (its
  ratio is None when the memo is a single chunk). See :func:`run_scenario` for a row's keys
  (plus ``segment_s``: chunk planning alone, the speed ``media.segment`` is judged by).
  No time thresholds anywhere: this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from scribed import __version__
from scribed.config import Config
from scribed.engine.pipeline import Pipeline
from scribed.engine.types import ChunkRequest, ChunkResult, Engine, TranscribeOptions
from scribed.errors import TranscriptionError, UsageError
from scribed.media import segment
from scribed.media.audio import SAMPLE_RATE
from scribed.tools.benchdata import make_recording, random_checkpoint, speech_clips, tokenizer_dir, write_wav

# Text tokens generated per second of audio. Conversational English runs ~2.5 words/s, about
# 3.3 tokens/s with Qwen's BPE; Mandarin ~4 characters/s, 3-4 tokens/s (frequent words are one
# token). 4/s is a slightly pessimistic meeting; the pipeline applies it to the longest chunk
# of each round, so a round of 30 s chunks generates 120 tokens per chunk.
TOKENS_PER_AUDIO_S = 4.0


@dataclass(frozen=True)
class Durations:
    """Scenario lengths in seconds; 0 skips the scenario. ``backlog`` is per recording."""

    memo: float
    long: float
    backlog: float
    backlog_count: int


FULL = Durations(memo=60.0, long=3600.0, backlog=300.0, backlog_count=6)
# CI on 2 cores: under 3 minutes of audio in all (the memo runs twice, for the batching ratio);
# 40 s is two chunks of the shared clips, the least that batching can change.
QUICK = Durations(memo=40.0, long=60.0, backlog=15.0, backlog_count=2)


def durations_from(args: argparse.Namespace, env: str | None) -> Durations:
    """Defaults for ``--quick`` or a full run, then ``--backlog``, then ``SCRIBED_BENCH_DURATIONS``."""
    base = QUICK if args.quick else FULL
    values: dict[str, float] = {"memo": base.memo, "long": base.long, "backlog": base.backlog}
    for item in filter(None, (part.strip() for part in (env or "").split(","))):
        key, _, value = item.partition("=")
        try:
            if key.strip() not in values:
                raise ValueError(key)
            values[key.strip()] = max(0.0, float(value))
        except ValueError:
            raise UsageError(f"SCRIBED_BENCH_DURATIONS: expected memo=S,long=S,backlog=S; got {item!r}") from None
    count = base.backlog_count if args.backlog is None else args.backlog
    if count < 0:
        raise UsageError("--backlog must be 0 or more")
    return Durations(values["memo"], values["long"], values["backlog"], count)


# -- measuring -------------------------------------------------------------------------------------


class BenchEngine:
    """An :class:`~scribed.engine.types.Engine` around the real one: fixes the work and counts it.

    Every request of a ``run`` call generates exactly ``tokens_per_s`` tokens per second of the
    call's longest chunk (``min_new_tokens`` = ``max_new_tokens``), so random weights do a
    realistic amount of decoding and runs stay comparable; chunks, batches and tokens are counted.
    """

    def __init__(self, engine: Engine, tokens_per_s: float) -> None:
        self.engine = engine
        self.tokens_per_s = tokens_per_s
        self.name: str = engine.name
        self.chunks = self.batches = self.tokens = 0

    @property
    def loaded(self) -> bool:
        return self.engine.loaded

    @property
    def device_name(self) -> str:
        return self.engine.device_name

    @property
    def load_seconds(self) -> float:
        return self.engine.load_seconds

    def load(self) -> None:
        self.engine.load()

    def unload(self) -> None:
        self.engine.unload()

    def peak_memory_bytes(self) -> int | None:
        return self.engine.peak_memory_bytes()

    def fixed_requests(self, requests: Sequence[ChunkRequest]) -> list[ChunkRequest]:
        if not requests:
            return []
        longest = max(len(r.audio) for r in requests) / SAMPLE_RATE
        tokens = max(1, round(longest * self.tokens_per_s))
        return [dataclasses.replace(r, min_new_tokens=tokens, max_new_tokens=tokens) for r in requests]

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        def done(n: int) -> None:
            self.batches += 1
            if on_done:
                on_done(n)

        results = self.engine.run(self.fixed_requests(requests), batch_size, on_done=done)
        self.chunks += len(results)
        self.tokens += sum(r.tokens for r in results)
        return results


def _reset_peaks(engine: Any) -> str:
    """Restart the peak-memory counters; returns the scope peak RSS will have ("scenario"/"process")."""
    engine.batch_size_used = 0
    if engine.device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(engine.device)
    try:  # Linux: "5" resets the RSS high-water mark that getrusage reports
        Path("/proc/self/clear_refs").write_text("5")
        return "scenario"
    except OSError:
        return "process"


def run_scenario(engine: Any, paths: Sequence[Path], options: TranscribeOptions, out_dir: Path, *,
                 tokens_per_s: float = TOKENS_PER_AUDIO_S) -> dict[str, Any]:
    """Transcribe ``paths`` together exactly as ``scribed transcribe`` does; one report row."""
    from scribed.engine.runner import OutputSpec, transcribe_files

    counter = BenchEngine(engine, tokens_per_s)
    scope = _reset_peaks(engine)
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    outcomes = transcribe_files(Pipeline(counter, options), paths, OutputSpec(("txt",), out_dir))
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    failed = [f"{o.path.name}: {o.error}" for o in outcomes if not o.ok]
    if failed:
        raise TranscriptionError(f"benchmark recordings failed: {'; '.join(failed)}")
    audio = sum(o.duration_s for o in outcomes)
    return {
        "recordings": len(paths), "audio_s": round(audio, 2), "wall_s": round(wall, 2),
        "x_realtime": round(audio / wall, 3), "rtf": round(wall / audio, 4), "cpu_s": round(cpu, 2),
        "chunks": counter.chunks, "batches": counter.batches, "batch_size": options.batch_size,
        "batch_size_used": engine.batch_size_used, "tokens": counter.tokens,
        "tokens_per_audio_s": round(counter.tokens / audio, 2),
        "load_s": round(engine.load_seconds, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss_scope": scope,
        "peak_gpu_bytes": engine.peak_memory_bytes(),
    }


def bench_model(path: Path, *, architecture: str, random_weights: bool, build_s: float | None, device: str,
                dtype: str, options: TranscribeOptions, durations: Durations, clips: Sequence[np.ndarray],
                workdir: Path) -> dict[str, Any]:
    """Load ``path`` once and run every scenario with a non-zero duration on it."""
    from scribed.engine.qwen3 import AsrEngine

    engine = AsrEngine(path, device=device, dtype=dtype, name=architecture)
    engine.load()
    logger.info("{}: loaded on {} in {:.1f} s", architecture, engine.device_name, engine.load_seconds)

    segment_s: dict[str, float] = {}

    def recordings(name: str, seconds: float, count: int = 1) -> list[Path]:
        """The scenario's WAV files; also times chunk planning on them (it is part of wall time too)."""
        base = {"warmup": 0, "memo": 1000, "long": 2000, "backlog": 3000}[name]  # fixed seeds: same audio each run
        paths = []
        segment_s[name] = 0.0
        for i in range(count):
            samples = make_recording(seconds, clips, seed=base + i)
            start = time.perf_counter()
            segment.plan_chunks(samples, SAMPLE_RATE, segment.SegmentOptions(max_chunk_s=options.max_chunk_s))
            segment_s[name] += time.perf_counter() - start
            paths.append(write_wav(workdir / f"{name}-{i}.wav", samples))
        return paths

    # A short recording through the whole path first, so one-off set-up (kernels, allocator,
    # lazy imports) is not charged to the first scenario. The daemon pays it once per load.
    warmup = run_scenario(engine, recordings("warmup", 4.0), options, workdir, tokens_per_s=1.0)["wall_s"]

    scenarios: dict[str, dict[str, Any]] = {}
    speedup: dict[str, Any] | None = None
    plan = [("memo", durations.memo, 1), ("long", durations.long, 1),
            ("backlog", durations.backlog, durations.backlog_count)]
    for name, seconds, count in plan:
        if seconds <= 0 or count <= 0:
            continue
        files = recordings(name, seconds, count)
        logger.info("{}: {} ({} x {:.0f} s)...", architecture, name, count, seconds)
        scenarios[name] = run_scenario(engine, files, options, workdir)
        scenarios[name]["segment_s"] = round(segment_s[name], 3)
        logger.info("{}: {} took {:.1f} s ({:.2f}x realtime)", architecture, name,
                    scenarios[name]["wall_s"], scenarios[name]["x_realtime"])
        if name == "memo":
            # same recording, one chunk per model call: what batching buys on this device
            single = run_scenario(engine, files, dataclasses.replace(options, batch_size=1), workdir)
            batched = scenarios[name]
            speedup = {"scenario": "memo", "chunks": batched["chunks"], "batch_size": options.batch_size,
                       "batched_wall_s": batched["wall_s"], "batched_cpu_s": batched["cpu_s"],
                       "single_wall_s": single["wall_s"], "single_cpu_s": single["cpu_s"],
                       # one chunk is one model call either way: a ratio would only measure noise
                       "ratio": round(single["wall_s"] / batched["wall_s"], 3) if batched["chunks"] > 1 else None}
        for f in files:
            f.unlink()
    model = engine.model
    params = sum(p.numel() for p in model.parameters()) if model is not None else 0
    report = {
        "architecture": architecture, "path": str(path), "random_weights": random_weights,
        "device": engine.device_name, "dtype": str(engine.dtype).removeprefix("torch."), "parameters": params,
        "build_s": None if build_s is None else round(build_s, 1), "load_s": round(engine.load_seconds, 2),
        "warmup_s": warmup, "batch_size": options.batch_size, "scenarios": scenarios,
        "batched_speedup": speedup,
    }
    engine.unload()
    return report


# -- command ---------------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """Run the benchmark described by the ``scribed bench`` arguments; returns the report."""
    # isort: off
    from scribed.engine import threadenv  # noqa: F401 -- first: OpenMP's wait policy, read when torch loads
    # isort: on
    import torch
    import transformers

    from scribed.engine import qwen3
    from scribed.engine.models import resolve_model

    durations = durations_from(args, os.environ.get("SCRIBED_BENCH_DURATIONS"))
    batch_size = cfg.model.batch_size if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    device = args.device or ("cpu" if args.quick else cfg.model.device)
    options = TranscribeOptions.from_config(cfg, batch_size=batch_size)
    if args.model:
        targets = [(args.model, resolve_model(args.model, cfg.model.cache_dir), False, None)]
    else:
        from scribed.engine.checkpoints import ARCHITECTURES

        sizes = [s.strip().lower() for s in (args.sizes or ("0.6b" if args.quick else "0.6b,1.7b")).split(",")]
        unknown = [s for s in sizes if s not in ARCHITECTURES]
        if unknown or not sizes:
            raise UsageError(f"--sizes: unknown architecture(s) {', '.join(unknown)}; use 0.6b and/or 1.7b")
        tokenizer = tokenizer_dir(getattr(args, "tokenizer", None))
        # stored in the dtype it will run in, so loading converts nothing (as a released checkpoint)
        dtype = str(qwen3.resolve_device(device, cfg.model.dtype)[1]).removeprefix("torch.")
        targets = []
        for size in sizes:
            path, build_s = random_checkpoint(size, tokenizer, dtype)
            targets.append((size, path, True, build_s))
    clips = speech_clips()
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "scribed": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "cpu": _cpu_name(), "threads": torch.get_num_threads(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()], "quick": bool(args.quick),
        "audio": f"{len(clips)} real speech clips joined with pauses" if clips else "synthetic speech-like noise",
        "tokens_per_audio_s": TOKENS_PER_AUDIO_S, "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="scribed-bench-") as tmp:
        for name, path, random_weights, build_s in targets:
            report["models"].append(bench_model(
                path, architecture=name, random_weights=random_weights, build_s=build_s, device=device,
                dtype=cfg.model.dtype, options=options, durations=durations, clips=clips, workdir=Path(tmp)))
    report["threads"] = torch.get_num_threads()  # as set by AsrEngine.load
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


def bench_command(args: argparse.Namespace, cfg: Config) -> int:
    """``scribed bench``: print the report (a table, or one JSON object with ``--json``); exit status."""
    report = run_bench(args, cfg)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table (one block per model)."""
    lines = [f"scribed bench {report['date']}  torch {report['torch']}  transformers {report['transformers']}",
             f"cpu: {report['cpu']}  load average {report['loadavg_before']} -> {report.get('loadavg_after')}",
             f"audio: {report['audio']}; generation fixed at {report['tokens_per_audio_s']:g} tokens per audio second"
             " (longest chunk of each round)"]
    for m in report["models"]:
        built = "cached" if m["build_s"] is None else f"built in {m['build_s']:.0f} s"
        kind = f"random weights, {built}" if m["random_weights"] else m["path"]
        lines += ["", f"{m['architecture']} ({m['parameters'] / 1e9:.2f} B params, {m['dtype']}, {kind}) on "
                      f"{m['device']}: load {m['load_s']:.1f} s, warm-up {m['warmup_s']:.1f} s",
                  f"{'scenario':10} {'files':>5} {'audio s':>8} {'wall s':>8} {'x realtime':>10} {'RTF':>6} "
                  f"{'chunks':>6} {'batch':>7} {'tok/s audio':>11} {'peak RSS':>9} {'peak GPU':>9}"]
        for name, r in m["scenarios"].items():
            gpu = f"{r['peak_gpu_bytes'] / 2**30:.2f}G" if r["peak_gpu_bytes"] else "-"
            lines.append(f"{name:10} {r['recordings']:5d} {r['audio_s']:8.1f} {r['wall_s']:8.1f} "
                         f"{r['x_realtime']:10.2f} {r['rtf']:6.3f} {r['chunks']:6d} "
                         f"{r['batch_size_used']:3d}/{r['batch_size']:<3d} {r['tokens_per_audio_s']:11.2f} "
                         f"{r['peak_rss_bytes'] / 2**30:8.2f}G {gpu:>9}")
        s = m["batched_speedup"]
        if s:
            ratio = f"{s['ratio']:.2f}x faster batched" if s["ratio"] else "no ratio (a single chunk)"
            lines.append(f"batching: memo ({s['chunks']} chunks) at batch {s['batch_size']} "
                         f"{s['batched_wall_s']:.1f} s vs batch 1 {s['single_wall_s']:.1f} s -> {ratio}")
    return "\n".join(lines)


def _cpu_seconds() -> float:
    """CPU time of this process (all threads). Next to wall time it shows contention: on a busy
    machine wall grows while CPU time barely does (or grows too, when OpenMP threads spin)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
