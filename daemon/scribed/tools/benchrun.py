"""How ``scribed bench`` measures: the counting engine, one scenario, decode steps, a busy
competitor, memory rows and start-up. :mod:`scribed.tools.bench` decides what to run and reports.

Contract:
- :func:`run_scenario` transcribes files exactly as ``scribed transcribe`` does and returns
  one report row (keys in its docstring); peak RSS is reset before it where Linux allows
  (``peak_rss_scope`` says "scenario", else "process").
- :func:`decode_steps` times one model call per batch size on full-length chunks and returns
  the engine's own per-step figure (one-token model calls; the prompt pass is reported apart).
- :class:`Competitor` is one busy thread in another process, started and stopped around a
  scenario: the contended measurement.
- :func:`startup` runs a fresh interpreter that imports the engine, loads the checkpoint and
  transcribes one short chunk, and reports each phase.
No time thresholds anywhere: this measures, it does not judge.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from scribed.engine import budget
from scribed.engine.pipeline import Pipeline
from scribed.engine.types import ChunkRequest, ChunkResult, Engine, TranscribeOptions
from scribed.errors import TranscriptionError
from scribed.media.audio import SAMPLE_RATE
from scribed.tools.benchhost import step_bound_ms

# Text tokens generated per second of audio. Conversational English runs ~2.5 words/s, about
# 3.3 tokens/s with Qwen's BPE; Mandarin ~4 characters/s, 3-4 tokens/s (frequent words are one
# token). 4/s is a slightly pessimistic meeting; the pipeline applies it to the longest chunk
# of each round, so a round of 30 s chunks generates 120 tokens per chunk.
TOKENS_PER_AUDIO_S = 4.0


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

    def run(self, requests: Sequence[ChunkRequest], batch_size: int | None, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        def done(n: int) -> None:
            self.batches += 1
            if on_done:
                on_done(n)

        results = self.engine.run(self.fixed_requests(requests), batch_size, on_done=done)
        self.chunks += len(results)
        self.tokens += sum(r.tokens for r in results)
        return results


def reset_peaks(engine: Any) -> str:
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
    """Transcribe ``paths`` together exactly as ``scribed transcribe`` does; one report row.

    Keys: recordings, audio_s, wall_s, x_realtime, rtf, cpu_s, chunks, batches, batch_size,
    batch_size_used, tokens, tokens_per_audio_s, load_s, peak_rss_bytes, peak_rss_scope,
    peak_gpu_bytes, prompt_s (prompt passes, audio encoder included), decode_steps, graph_captures and
    capture_s (CUDA graphs of the decode step, engine.graphstep),
    decode_ms_per_step (all one-token steps of the scenario, whatever their batch size),
    threads_used (the CPU thread counts the engine chose during it).
    """
    from scribed.engine.runner import OutputSpec, transcribe_files

    counter = BenchEngine(engine, tokens_per_s)
    scope = reset_peaks(engine)
    engine.stats = type(engine.stats)()
    engine.threads_used = set()
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    outcomes = transcribe_files(Pipeline(counter, options), paths, OutputSpec(("txt",), out_dir))
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    failed = [f"{o.path.name}: {o.error}" for o in outcomes if not o.ok]
    if failed:
        raise TranscriptionError(f"benchmark recordings failed: {'; '.join(failed)}")
    audio = sum(o.duration_s for o in outcomes)
    stats = engine.stats
    return {
        "recordings": len(paths), "audio_s": round(audio, 2), "wall_s": round(wall, 2),
        "x_realtime": round(audio / wall, 3), "rtf": round(wall / audio, 4), "cpu_s": round(cpu, 2),
        "chunks": counter.chunks, "batches": counter.batches, "batch_size": options.batch_size,
        "batch_size_used": engine.batch_size_used, "tokens": counter.tokens,
        "tokens_per_audio_s": round(counter.tokens / audio, 2),
        "load_s": round(engine.load_seconds, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss_scope": scope,
        "peak_gpu_bytes": engine.peak_memory_bytes(),
        "prompt_s": round(stats.prompt_s, 2), "decode_steps": stats.steps,
        "graph_captures": stats.captures, "capture_s": round(stats.capture_s, 2),
        "threads_used": sorted(engine.threads_used),
        "decode_ms_per_step": round(1000 * stats.step_s / stats.steps, 1) if stats.steps else None,
    }


def decode_steps(engine: Any, audio: np.ndarray, batch_sizes: Sequence[int], *, chunk_s: float,
                 steps: int, gb_per_s: float | None = None) -> list[dict[str, Any]]:
    """Per batch size: one model call on ``b`` chunks of ``chunk_s`` seconds, ``steps`` + 1 tokens each
    (the memory budget is lifted for it, so ``b`` rows really share the call).

    Rows: batch, chunk_s, context_tokens (prompt length the last step attends to, roughly),
    steps, ms_per_step (mean one-token step), prompt_s_per_row, threads_used (the CPU thread
    counts the engine chose during the call: fewer than the cores means it saw another process
    busy, :mod:`scribed.engine.cpushare`), and bound_ms: the least a step
    can take at ``gb_per_s`` (:func:`scribed.tools.benchhost.step_bound_ms` over the mean context;
    None on a GPU or without a bandwidth).
    """
    need = int(chunk_s * SAMPLE_RATE)
    rows = []
    for b in batch_sizes:
        chunks = [np.resize(np.roll(audio, i * SAMPLE_RATE), need) for i in range(b)]
        requests = [ChunkRequest(audio=c, max_new_tokens=steps + 1, min_new_tokens=steps + 1) for c in chunks]
        engine.stats = type(engine.stats)()
        engine.threads_used = set()
        engine.memory_budget_bytes = 1 << 62  # the batch size asked for, whatever the budget says
        try:
            engine.run(requests, b)
        finally:
            engine.memory_budget_bytes = None
        done, seconds = engine.stats.steps_by_rows.get(b, [0, 0.0])
        bound = None
        if gb_per_s and engine.device.type == "cpu":
            text = engine.model.config.get_text_config(decoder=True)
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            bound = step_bound_ms(weight_bytes=step_weight_bytes(engine.model), rows=b,
                                  context=budget.prompt_positions(chunk_s) + steps // 2,
                                  layers=text.num_hidden_layers, kv_heads=text.num_key_value_heads,
                                  head_dim=head_dim,
                                  element_bytes=engine.model.dtype.itemsize, gb_per_s=gb_per_s)
        rows.append({"batch": b, "chunk_s": chunk_s, "steps": int(done),
                     "context_tokens": budget.prompt_positions(chunk_s) + steps, "bound_ms": bound,
                     "ms_per_step": round(1000 * seconds / done, 1) if done else None,
                     "prompt_s_per_row": round(engine.stats.prompt_s / b, 2),
                     "capture_s": round(engine.stats.capture_s, 3), "threads_used": sorted(engine.threads_used)})
    return rows


def step_weight_bytes(model: Any) -> int:
    """Bytes of weights one decode step reads: the text decoder's tensors except its input
    embedding (one row is looked up), plus the output layer's (its packed copy where it has one)."""
    decoder, embed, head = model.get_decoder(), model.get_input_embeddings(), model.get_output_embeddings()
    tensors = {id(t): t for t in [*decoder.parameters(), *decoder.buffers()]}
    tensors.pop(id(embed.weight), None)
    packed = getattr(head, "packed_weight", None)
    for t in [packed] if packed is not None else [*head.parameters(), *head.buffers()]:
        tensors[id(t)] = t
    return sum(t.numel() * t.element_size() for t in tensors.values())


class Competitor:
    """One busy thread in a separate process (a user's foreground job), for ``with`` blocks."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Competitor:
        # it reports when it is spinning, so the measurement never starts before the load does
        self.process = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"],
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.process.stdout is not None
        self.process.stdout.readline()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


STARTUP_CODE = """
import json, sys, time
t0 = time.perf_counter()
from scribed.engine.qwen3 import AsrEngine
from scribed.engine.types import ChunkRequest
import numpy as np
t1 = time.perf_counter()
engine = AsrEngine(sys.argv[1], device=sys.argv[2], dtype=sys.argv[3])
engine.load()
t2 = time.perf_counter()
rng = np.random.default_rng(0)
engine.run([ChunkRequest(audio=(rng.standard_normal(64000) * 0.05).astype(np.float32),
                         max_new_tokens=8, min_new_tokens=8)], 1)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_chunk_s": t3 - t2}))
"""


def startup(path: Path, device: str, dtype: str) -> dict[str, Any]:
    """A fresh process: interpreter start, engine imports, load, first 4 s chunk (8 tokens)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", STARTUP_CODE, str(path), device, dtype],
                          capture_output=True, text=True, check=False, env=os.environ.copy())
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise TranscriptionError(f"start-up probe failed: {done.stderr.strip()[-500:]}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    row = {key: round(value, 2) for key, value in phases.items()}
    row["process_s"] = round(total, 2)
    row["interpreter_s"] = round(max(0.0, total - sum(phases.values())), 2)
    return row


def cpu_seconds() -> float:
    """CPU time of this process (all threads). Next to wall time it shows contention: on a busy
    machine wall grows while CPU time barely does (or grows too, when OpenMP threads spin)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
