"""OpenMP's wait policy and oneDNN's primitive cache for a background process, chosen before
torch loads (import for effect).

Contract: importing this module (``scribed.engine.qwen3`` does, before ``import torch``) sets
``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the environment already chooses a policy
(``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, e.g. ``OMP_WAIT_POLICY=PASSIVE`` in the systemd
unit's ``Environment=``), which always wins. libgomp reads these once, when torch loads it, so
:data:`TORCH_WAS_LOADED` records whether it came too late. Standard library only.

Why: worker threads that spin while they wait fight any other busy process for the cores
(measured on 2 cores: 3.6x -> 0.4x realtime with one competing busy thread). libgomp spins
300,000 times by default; 10,000 cost a few per cent when idle and kept throughput under load,
where ``PASSIVE`` (no spinning) cost 27 % when idle.

It also bounds oneDNN's primitive cache to :data:`PRIMITIVE_CACHE` entries
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, unless the environment sets it). Why: every decode step
multiplies by a key/value cache one position longer, a shape oneDNN has not seen, and it keeps
each new primitive (1024 by default) with its buffers: at batch 8 the worker grew ~7 MB per
step in most runs, +0.8-1.3 GB over 120 steps (0.6B, bf16, 2 cores). With 16 entries the
fixed-shape linear layers, used every step, stay cached (least recently used goes first) and
the peak stayed flat in every run, at the same step time (docs/performance.md).

The same for ideep, the layer between torch and oneDNN, which keeps its own least-recently-used
cache of prepared operations (``LRU_CACHE_CAPACITY``, 1024 by default): :data:`IDEEP_CACHE`
entries unless the environment sets it. Why: every model call brings new prompt shapes (rows x
prompt length), and the float32 worker's allocated heap grew ~3-7 MB per call until the cache
was full (+0.11 GB over 14 calls, part of a 60-minute recording's peak); bounded, it stayed flat
and decode steps and prompts were as fast (interleaved runs, docs/performance.md).
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"
PRIMITIVE_CACHE = "16"
IDEEP_CACHE = "16"

TORCH_WAS_LOADED = "torch" in sys.modules
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", PRIMITIVE_CACHE)
os.environ.setdefault("LRU_CACHE_CAPACITY", IDEEP_CACHE)
