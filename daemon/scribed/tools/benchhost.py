"""What ``scribed bench`` records about the machine, so figures of different hosts and days compare.

Contract:
- :func:`cpu_facts` reads ``/proc/cpuinfo`` (Linux; empty values elsewhere): the model name, the
  vendor's family and model numbers, and which of :data:`FLAGS` the CPU has. Standard library only.
- :func:`read_bandwidth` measures how fast this machine reads memory: a fresh interpreter sums a
  buffer of :data:`PROBE_BYTES` bfloat16 zeros with ``threads`` torch threads, five times, and the
  best pass gives GB/s (1e9 bytes). A fresh process, so its buffer never counts in the bench's own
  peak memory and its imports never warm the bench's. ``None`` when the probe cannot run.
- :func:`host_line` is one line of that for logs and the report table.
- :func:`step_bound_ms` is the least time one decode step can take at that bandwidth: the bytes it
  must read (every decoder weight once, the output layer, and the key/value cache of every row
  over its context) divided by the bandwidth. A floor, not a prediction: compute, small operations
  and caches are not in it.
No time thresholds anywhere: this measures, it does not judge.

Why: the project's 2-vCPU machines differ from day to day (Zen 3, 4 and 5 so far, 24-36 GB/s read)
and decode steps are bandwidth-bound, so a step time means little without the host beside it
(docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: CPU features that decide which kernels and dtype the engine gets (``auto`` picks bf16 with avx512_bf16).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
PROBE_BYTES = 1 << 30

_PROBE = """
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
x = torch.zeros(int(sys.argv[2]) // 2, dtype=torch.bfloat16)
x.sum()  # pages faulted in before any pass is timed
best = None
for _ in range(5):
    start = time.perf_counter()
    x.sum()
    seconds = time.perf_counter() - start
    best = seconds if best is None else min(best, seconds)
print(json.dumps({"gb_per_s": x.numel() * 2 / max(best, 1e-9) / 1e9}))
"""


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Model name, family, model and :data:`FLAGS` of the first CPU in ``cpuinfo``."""
    facts: dict[str, Any] = {"model_name": None, "family": None, "model": None, "flags": []}
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return facts
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    facts["model_name"] = fields.get("model name")
    for key, field in (("family", "cpu family"), ("model", "model")):
        number = fields.get(field, "")
        facts[key] = int(number) if number.isdigit() else None
    have = set(fields.get("flags", "").split())
    facts["flags"] = [flag for flag in FLAGS if flag in have]
    return facts


def host_line(host: dict[str, Any]) -> str:
    """One line of a report's ``host``: CPU kind, flags and memory read bandwidth."""
    return (f"host: {host.get('model_name')}, family {host.get('family')} model {host.get('model')}, "
            f"{' '.join(host.get('flags') or []) or 'no listed flags'}; memory read {host.get('read_gb_per_s')} GB/s "
            f"on {host.get('read_threads')} threads")


def read_bandwidth(threads: int, nbytes: int = PROBE_BYTES, timeout_s: float = 120.0) -> float | None:
    """Memory read bandwidth in GB/s with ``threads`` threads (see the module contract)."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(max(1, threads)), str(nbytes)],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    try:
        return round(float(json.loads(done.stdout.strip().splitlines()[-1])["gb_per_s"]), 1)
    except (ValueError, KeyError, TypeError):
        return None


def step_bound_ms(*, weight_bytes: int, rows: int, context: int, layers: int, kv_heads: int, head_dim: int,
                  element_bytes: int, gb_per_s: float | None) -> float | None:
    """The bandwidth floor of one decode step in ms (see the module contract); None without a bandwidth."""
    if not gb_per_s:
        return None
    cache = 2 * layers * rows * kv_heads * context * head_dim * element_bytes  # keys and values
    return round(1000 * (weight_bytes + cache) / (gb_per_s * 1e9), 1)
