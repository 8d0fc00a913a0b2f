"""``scribed bench``: how fast Qwen3-ASR transcribes on this machine, through the production path.

Contract:
- What is timed is the code of ``scribed transcribe`` and the daemon: bench recordings are WAV
  files that :func:`scribed.engine.runner.transcribe_files` decodes, segments, batches (longest first,
  across files) and transcribes with :class:`scribed.transcribe.Pipeline` on an
  :class:`scribed.engine.qwen3.AsrEngine`, writing a .txt each. Wall time covers all of that.
- Without ``--model`` the weights are random (the real 0.6B/1.7B architectures, built once into
  ``$XDG_CACHE_HOME/scribed/bench/<size>-tf<transformers version>`` and reused; build time is
  reported apart from load time). Random weights never stop sensibly, so every chunk generates
  exactly the fixed budget the pipeline derives from :data:`TOKENS_PER_AUDIO_S` (also with
  ``--model``, so figures stay comparable). The tokenizer files come from
  ``$SCRIBED_TOKENIZER_DIR`` or ``../shared/data/models/qwen3-asr-0.6b-nonweights`` beside the repo;
  missing files are a :class:`~scribed.errors.ModelError` (exit 2) saying where to point it.
- Recordings are real speech clips from ``../shared/data/speech`` joined with pauses, or
  speech-like noise bursts when the clips are absent (``report["audio"]`` says which).
- Scenarios: ``memo`` (one short recording: latency), ``long`` (one long recording), ``backlog``
  (several recordings transcribed together: throughput) and ``batched_speedup`` (the memo again
  with batch size 1; ratio of wall times). ``SCRIBED_BENCH_DURATIONS="memo=60,long=600,backlog=300"``
  overrides the lengths in seconds (0 skips a scenario; ``backlog`` is per recording).
- :func:`run_bench` returns the report (JSON-able dict); ``--json`` prints it as one object.
  Keys: date, scribed, python, torch, transformers, cpu, threads, loadavg_before/after, audio,
  tokens_per_audio_s, quick, models[] with architecture, path, random_weights, device, dtype,
  parameters, build_s, load_s, warmup_s, batch_size, scenarios{name: row}, batched_speedup (its
  ratio is None when the memo is a single chunk). See :func:`run_scenario` for a row's keys.
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
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from scribed import __version__
from scribed.config import Config, xdg_dir
from scribed.engine.pipeline import Pipeline
from scribed.engine.types import ChunkRequest, ChunkResult, TranscribeOptions
from scribed.errors import ModelError, ScribedError, TranscriptionError, UsageError
from scribed.media.audio import SAMPLE_RATE, decode_audio

# Text tokens generated per second of audio. Conversational English runs ~2.5 words/s, about
# 3.3 tokens/s with Qwen's BPE; Mandarin ~4 characters/s, 3-4 tokens/s (frequent words are one
# token). 4/s is a slightly pessimistic meeting; the pipeline applies it to the longest chunk
# of each round, so a round of 30 s chunks generates 120 tokens per chunk.
TOKENS_PER_AUDIO_S = 4.0
ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


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


# -- inputs ----------------------------------------------------------------------------------------


def tokenizer_dir() -> Path:
    """Where the Qwen3-ASR tokenizer files are, or a ModelError that says how to provide them."""
    env = os.environ.get("SCRIBED_TOKENIZER_DIR")
    candidates = [Path(env).expanduser()] if env else [SHARED / "models" / "qwen3-asr-0.6b-nonweights"]
    for path in candidates:
        if all((path / name).is_file() for name in TOKENIZER_FILES):
            return path
    raise ModelError(
        f"the random-weight benchmark needs the Qwen3-ASR tokenizer files ({', '.join(TOKENIZER_FILES)}); "
        f"none found in {', '.join(map(str, candidates))}. Set SCRIBED_TOKENIZER_DIR to a folder holding "
        "them (any Qwen3-ASR checkpoint folder does), or benchmark a real checkpoint with --model DIR|ID"
    )


def random_checkpoint(size: str, tokenizer: Path) -> tuple[Path, float | None]:
    """The cached random-weight checkpoint of ``size`` and its build seconds (None when reused)."""
    import transformers

    from scribed.engine.qwen3 import build_random_checkpoint

    out = xdg_dir("XDG_CACHE_HOME", ".cache") / "scribed" / "bench" / f"{size}-tf{transformers.__version__}"
    if (out / "scribed-random-weights.json").is_file():  # written last by build_random_checkpoint
        return out, None
    logger.info("building a random-weight {} checkpoint in {} (once)", size, out)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    start = time.perf_counter()
    try:
        build_random_checkpoint(tmp, tokenizer, size=size)
        if not (out / "scribed-random-weights.json").is_file():  # else a concurrent bench won the race
            shutil.rmtree(out, ignore_errors=True)  # an incomplete earlier build
            tmp.rename(out)  # atomic: a concurrent bench sees either nothing or a whole checkpoint
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, time.perf_counter() - start


def speech_clips() -> list[np.ndarray]:
    """Every readable clip of the shared speech manifest, decoded to 16 kHz mono."""
    manifest = SHARED / "speech" / "manifest.jsonl"
    if not manifest.is_file():
        return []
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            clips.append(decode_audio(SHARED / json.loads(line)["file"]).samples)
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


# -- measuring -------------------------------------------------------------------------------------


class CountingEngine:
    """Passes everything to the real engine; counts chunks, batches and generated tokens."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name: str = engine.name
        self.chunks = self.batches = self.tokens = 0

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None, fixed_tokens: int | None = None) -> list[ChunkResult]:
        def done(n: int) -> None:
            self.batches += 1
            if on_done:
                on_done(n)

        results = self.engine.run(requests, batch_size, on_done=done, fixed_tokens=fixed_tokens)
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


def run_scenario(engine: Any, paths: Sequence[Path], options: TranscribeOptions, out_dir: Path) -> dict[str, Any]:
    """Transcribe ``paths`` together exactly as ``scribed transcribe`` does; one report row."""
    from scribed.engine.runner import OutputSpec, transcribe_files

    counter = CountingEngine(engine)
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

    def recordings(name: str, seconds: float, count: int = 1) -> list[Path]:
        base = {"warmup": 0, "memo": 1000, "long": 2000, "backlog": 3000}[name]  # fixed seeds: same audio each run
        return [write_wav(workdir / f"{name}-{i}.wav", make_recording(seconds, clips, seed=base + i))
                for i in range(count)]

    # A short recording through the whole path first, so one-off set-up (kernels, allocator,
    # lazy imports) is not charged to the first scenario. The daemon pays it once per load.
    short = dataclasses.replace(options, fixed_tokens_per_s=1.0)
    warmup = run_scenario(engine, recordings("warmup", 4.0), short, workdir)["wall_s"]

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
    import torch
    import transformers

    from scribed.engine.models import resolve_model

    durations = durations_from(args, os.environ.get("SCRIBED_BENCH_DURATIONS"))
    batch_size = cfg.model.batch_size if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    device = args.device or ("cpu" if args.quick else cfg.model.device)
    options = TranscribeOptions.from_config(cfg, batch_size=batch_size, fixed_tokens_per_s=TOKENS_PER_AUDIO_S)
    if args.model:
        targets = [(args.model, resolve_model(args.model, cfg.model.cache_dir), False, None)]
    else:
        from scribed.engine.qwen3 import ARCHITECTURES

        sizes = [s.strip().lower() for s in (args.sizes or ("0.6b" if args.quick else "0.6b,1.7b")).split(",")]
        unknown = [s for s in sizes if s not in ARCHITECTURES]
        if unknown or not sizes:
            raise UsageError(f"--sizes: unknown architecture(s) {', '.join(unknown)}; use 0.6b and/or 1.7b")
        tokenizer = tokenizer_dir()
        targets = []
        for size in sizes:
            path, build_s = random_checkpoint(size, tokenizer)
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
