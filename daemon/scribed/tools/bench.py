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
  Keys: date, scribed, python, torch, transformers, cpu, host (:mod:`scribed.tools.benchhost`:
  CPU family/model/flags, memory read GB/s), threads, loadavg_before/after, audio,
  tokens_per_audio_s, quick, models[] with architecture, path, random_weights, device, dtype,
  parameters, build_s, load_s, warmup_s, batch_size (batch_size_auto: that is what auto gave),
  scenarios{name: row}, batched_speedup (its ratio is None when the memo is a single chunk).
  See :func:`run_scenario` for a row's keys (plus ``segment_s``: chunk planning alone, the speed
  ``media.segment`` is judged by).
  No time thresholds anywhere: this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from scribed import __version__
from scribed.config import Config
from scribed.engine.types import TranscribeOptions
from scribed.errors import UsageError
from scribed.media import segment
from scribed.media.audio import SAMPLE_RATE
from scribed.tools.benchdata import make_recording, random_checkpoint, speech_clips, tokenizer_dir, write_wav
from scribed.tools.benchhost import cpu_facts, host_line, read_bandwidth
from scribed.tools.benchrun import TOKENS_PER_AUDIO_S, Competitor, decode_steps, run_scenario, startup


@dataclass(frozen=True)
class Durations:
    """What to run. Scenario lengths in seconds (0 skips one; ``backlog`` is per recording);
    memory rows by recording length (s) and by backlog size (files of ``backlog_each`` s);
    decode-step rows by batch size on ``step_chunk_s`` chunks."""

    memo: float
    long: float
    backlog: float
    backlog_count: int
    lengths: tuple[float, ...] = ()
    backlogs: tuple[int, ...] = ()
    backlog_each: float = 60.0
    step_batches: tuple[int, ...] = (1, 16)
    step_chunk_s: float = 30.0
    steps: int = 24


FULL = Durations(memo=60.0, long=600.0, backlog=300.0, backlog_count=6, lengths=(60.0, 600.0, 3600.0, 7200.0),
                 backlogs=(1, 8, 32), backlog_each=60.0, step_batches=(1, 4, 8, 16))
# CI on 2 cores: a few minutes in all (the memo runs three times: batched, batch 1, contended);
# 40 s is two chunks of the shared clips, the least that batching can change. Memory rows of 1
# and 5 minutes: a 10-minute row alone took 14 min on an AVX2-only host in float32 (full runs
# and SCRIBED_BENCH_MEMORY cover 10 to 120 minutes).
QUICK = Durations(memo=40.0, long=60.0, backlog=15.0, backlog_count=2, lengths=(60.0, 300.0), backlogs=(1, 8),
                  backlog_each=15.0, step_batches=(1, 16))


def _numbers(env_name: str, text: str | None, keys: dict[str, type]) -> dict[str, list[float]]:
    """``key=1,2;key=3`` -> {key: [1.0, 2.0], ...}; a UsageError naming the variable otherwise."""
    found: dict[str, list[float]] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(";"))):
        key, _, value = item.partition("=")
        try:
            if key.strip() not in keys:
                raise ValueError(key)
            found[key.strip()] = [max(0.0, float(v)) for v in value.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"{env_name}: expected {';'.join(k + '=N,N' for k in keys)}; got {item!r}") from None
    return found


def durations_from(args: argparse.Namespace, env: str | None, memory_env: str | None = None,
                   steps_env: str | None = None) -> Durations:
    """Defaults for ``--quick`` or a full run, then ``--backlog``, then ``SCRIBED_BENCH_DURATIONS``
    (``memo=S,long=S,backlog=S``), ``SCRIBED_BENCH_MEMORY`` (``lengths=S,S;backlogs=N,N;each=S``)
    and ``SCRIBED_BENCH_STEPS`` (``batches=N,N;chunk=S;steps=N``)."""
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
    memory = _numbers("SCRIBED_BENCH_MEMORY", memory_env, {"lengths": float, "backlogs": int, "each": float})
    steps = _numbers("SCRIBED_BENCH_STEPS", steps_env, {"batches": int, "chunk": float, "steps": int})
    return Durations(
        values["memo"], values["long"], values["backlog"], count,
        lengths=tuple(x for x in memory.get("lengths", base.lengths) if x > 0),
        backlogs=tuple(int(x) for x in memory.get("backlogs", base.backlogs) if x >= 1),
        backlog_each=(memory.get("each") or [base.backlog_each])[0],
        step_batches=tuple(int(x) for x in steps.get("batches", base.step_batches) if x >= 1),
        step_chunk_s=(steps.get("chunk") or [base.step_chunk_s])[0],
        steps=int((steps.get("steps") or [base.steps])[0]) or base.steps,
    )


def bench_model(path: Path, *, architecture: str, random_weights: bool, build_s: float | None, device: str,
                dtype: str, options: TranscribeOptions, durations: Durations, clips: Sequence[np.ndarray],
                workdir: Path, gb_per_s: float | None = None) -> dict[str, Any]:
    """Load ``path`` once and run every scenario with a non-zero duration on it."""
    from scribed.engine.qwen3 import AsrEngine

    # first, with nothing else loaded: what a fresh worker process pays before its first chunk
    started = startup(path, device, dtype)
    logger.info("{}: start-up {:.1f} s (imports {:.1f}, load {:.1f}, first chunk {:.1f})", architecture,
                started["process_s"], started["import_s"], started["load_s"], started["first_chunk_s"])
    engine = AsrEngine(path, device=device, dtype=dtype, name=architecture)
    engine.load()
    auto = options.batch_size is None
    options = dataclasses.replace(options, batch_size=engine.auto_batch_size if auto else options.batch_size)
    logger.info("{}: loaded on {} in {:.1f} s", architecture, engine.device_name, engine.load_seconds)

    segment_s: dict[str, float] = {}
    seeds = {"warmup": 0, "memo": 1000, "long": 2000, "backlog": 3000, "length": 4000, "files": 5000}

    def recordings(name: str, seconds: float, count: int = 1) -> list[Path]:
        """The scenario's WAV files; also times chunk planning on them (it is part of wall time too)."""
        paths = []
        segment_s[name] = 0.0
        for i in range(count):
            samples = make_recording(seconds, clips, seed=seeds[name] + i)  # fixed seeds: same audio each run
            start = time.perf_counter()
            segment.plan_chunks(samples, SAMPLE_RATE, segment.SegmentOptions(max_chunk_s=options.max_chunk_s))
            segment_s[name] += time.perf_counter() - start
            paths.append(write_wav(workdir / f"{name}-{i}.wav", samples))
            del samples  # not part of any scenario's peak memory
        return paths

    # A short recording through the whole path first, so one-off set-up (kernels, allocator,
    # lazy imports) is not charged to the first scenario. The daemon pays it once per load.
    warmup = run_scenario(engine, recordings("warmup", 4.0), options, workdir, tokens_per_s=1.0)["wall_s"]

    steps: list[dict[str, Any]] = []
    if durations.step_batches:
        audio = make_recording(max(durations.step_chunk_s, 1.0) * 2, clips, seed=6000)
        steps = decode_steps(engine, audio, durations.step_batches, chunk_s=durations.step_chunk_s,
                             steps=durations.steps, gb_per_s=gb_per_s)
        for row in steps:
            logger.info("{}: batch {} of {:.0f} s chunks: {} ms per decode step (bandwidth floor {} ms)",
                        architecture, row["batch"], row["chunk_s"], row["ms_per_step"], row["bound_ms"])

    scenarios: dict[str, dict[str, Any]] = {}
    speedup: dict[str, Any] | None = None
    contended: dict[str, Any] | None = None
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
            speedup = _batching(engine, files, options, workdir, scenarios[name])
            contended = _contended(engine, files, options, workdir, scenarios[name])
            logger.info("{}: memo with one busy thread beside it: {:.1f} s ({:.2f} of idle throughput)",
                        architecture, contended["contended_wall_s"], contended["ratio"])
        for f in files:
            f.unlink()

    model = engine.model
    params = sum(p.numel() for p in model.parameters()) if model is not None else 0
    model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) if model else 0
    # a tied output layer's packed copy stands in for the embedding's mapped pages, which are
    # given back after every lookup (engine.prepack): that weight counted once, not twice
    model_bytes -= engine.packed.output_bytes if model else 0
    memory = {"model_bytes": int(model_bytes), "lengths": [], "backlogs": []}
    for seconds in durations.lengths:
        files = recordings("length", seconds)
        memory["lengths"].append(_memory_row(engine, files, options, workdir, minutes=round(seconds / 60, 2)))
        logger.info("{}: memory, {:.0f} min recording: peak RSS {:.2f} GB", architecture, seconds / 60,
                    memory["lengths"][-1]["peak_rss_bytes"] / 1e9)
        files[0].unlink()
    for count in durations.backlogs:
        files = recordings("files", durations.backlog_each, count)
        memory["backlogs"].append(_memory_row(engine, files, options, workdir, files=count))
        logger.info("{}: memory, backlog of {}: peak RSS {:.2f} GB", architecture, count,
                    memory["backlogs"][-1]["peak_rss_bytes"] / 1e9)
        for f in files:
            f.unlink()
    report = {
        "architecture": architecture, "path": str(path), "random_weights": random_weights,
        "device": engine.device_name, "dtype": str(engine.dtype).removeprefix("torch."), "parameters": params,
        "build_s": None if build_s is None else round(build_s, 1), "load_s": round(engine.load_seconds, 2),
        "warmup_s": warmup, "batch_size": options.batch_size, "batch_size_auto": auto, "scenarios": scenarios,
        "batched_speedup": speedup, "contended": contended, "decode_steps": steps, "memory": memory,
        "startup": started,
    }
    engine.unload()
    return report


def _batching(engine: Any, files: list[Path], options: TranscribeOptions, workdir: Path,
              batched: dict[str, Any]) -> dict[str, Any]:
    """The same recording, one chunk per model call: what batching buys on this device."""
    single = run_scenario(engine, files, dataclasses.replace(options, batch_size=1), workdir)
    return {"scenario": "memo", "chunks": batched["chunks"], "batch_size": options.batch_size,
            "batched_wall_s": batched["wall_s"], "batched_cpu_s": batched["cpu_s"],
            "single_wall_s": single["wall_s"], "single_cpu_s": single["cpu_s"],
            # one chunk is one model call either way: a ratio would only measure noise
            "ratio": round(single["wall_s"] / batched["wall_s"], 3) if batched["chunks"] > 1 else None}


def _contended(engine: Any, files: list[Path], options: TranscribeOptions, workdir: Path,
               idle: dict[str, Any]) -> dict[str, Any]:
    """The memo again while one busy thread runs in another process; ratio = throughput vs idle."""
    with Competitor():
        busy = run_scenario(engine, files, options, workdir)
    engine.restart_core_share()  # the next scenario is idle: it must not inherit the busy reading
    return {"scenario": "memo", "competitor": "one busy thread (another process, same priority)",
            "idle_wall_s": idle["wall_s"], "contended_wall_s": busy["wall_s"], "contended_cpu_s": busy["cpu_s"],
            "ratio": round(idle["wall_s"] / busy["wall_s"], 3), "threads_used": busy["threads_used"]}


def _memory_row(engine: Any, paths: list[Path], options: TranscribeOptions, workdir: Path,
                **label: Any) -> dict[str, Any]:
    row = run_scenario(engine, paths, options, workdir)
    keep = ("recordings", "audio_s", "wall_s", "x_realtime", "chunks", "batch_size_used", "peak_rss_bytes",
            "peak_rss_scope", "peak_gpu_bytes")
    return {**label, **{key: row[key] for key in keep}}


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

    durations = durations_from(args, os.environ.get("SCRIBED_BENCH_DURATIONS"),
                               os.environ.get("SCRIBED_BENCH_MEMORY"), os.environ.get("SCRIBED_BENCH_STEPS"))
    batch_size = cfg.model.batch_size if args.batch_size is None else args.batch_size
    if batch_size == "auto":
        batch_size = None  # the engine's choice for its device (bench_model reports the number)
    elif int(batch_size) < 1:
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
    # the host, measured before any model is loaded: CPU kind and memory read bandwidth (benchhost)
    threads = torch.get_num_threads()
    host = {**cpu_facts(), "read_gb_per_s": read_bandwidth(threads), "read_threads": threads}
    logger.info(host_line(host))
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "scribed": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "host": host, "threads": torch.get_num_threads(),
        "cpu": host["model_name"] or platform.processor() or platform.machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()], "quick": bool(args.quick),
        "audio": f"{len(clips)} real speech clips joined with pauses" if clips else "synthetic speech-like noise",
        "tokens_per_audio_s": TOKENS_PER_AUDIO_S, "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="scribed-bench-") as tmp:
        for name, path, random_weights, build_s in targets:
            report["models"].append(bench_model(
                path, architecture=name, random_weights=random_weights, build_s=build_s, device=device,
                dtype=cfg.model.dtype, options=options, durations=durations, clips=clips, workdir=Path(tmp),
                gb_per_s=host["read_gb_per_s"]))
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
             host_line(report.get("host") or {}),
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
        lines += _extra_lines(m)
    return "\n".join(lines)


def _extra_lines(m: dict[str, Any]) -> list[str]:
    """Contended ratio, decode steps, memory and start-up of one model's report."""
    lines = []
    c = m.get("contended")
    if c:
        lines.append(f"contended: memo with {c['competitor']}: {c['contended_wall_s']:.1f} s vs idle "
                     f"{c['idle_wall_s']:.1f} s -> {c['ratio']:.2f} of idle throughput")
    for row in m.get("decode_steps") or []:
        lines.append(f"decode step: batch {row['batch']:2d}, {row['chunk_s']:.0f} s chunks (~{row['context_tokens']} "
                     f"tokens of context): {row['ms_per_step']} ms (bandwidth floor {row.get('bound_ms')} ms, "
                     f"threads {row.get('threads_used')}); "
                     f"prompt {row['prompt_s_per_row']:.2f} s per row")
    memory = m.get("memory") or {}
    if memory.get("lengths") or memory.get("backlogs"):
        lines.append(f"memory: model {memory['model_bytes'] / 1e9:.2f} GB; peak RSS (GB, above the model):")
        for row in memory.get("lengths", []):
            above = (row["peak_rss_bytes"] - memory["model_bytes"]) / 1e9
            lines.append(f"  {row['minutes']:g} min recording: {row['peak_rss_bytes'] / 1e9:.2f} "
                         f"(+{above:.2f}), batch {row['batch_size_used']}")
        for row in memory.get("backlogs", []):
            above = (row["peak_rss_bytes"] - memory["model_bytes"]) / 1e9
            lines.append(f"  backlog of {row['files']}: {row['peak_rss_bytes'] / 1e9:.2f} "
                         f"(+{above:.2f}), batch {row['batch_size_used']}")
    st = m.get("startup")
    if st:
        lines.append(f"start-up (fresh process): {st['process_s']:.1f} s = interpreter {st['interpreter_s']:.1f}"
                     f" + imports {st['import_s']:.1f} + load {st['load_s']:.1f}"
                     f" + first 4 s chunk {st['first_chunk_s']:.1f}")
    return lines
