"""OpenMP's wait policy for a background process, chosen before torch loads (import for effect).

Contract: importing this module (``scribed.engine.qwen3`` does, before ``import torch``) sets
``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the environment already chooses a policy
(``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, e.g. ``OMP_WAIT_POLICY=PASSIVE`` in the systemd
unit's ``Environment=``), which always wins. libgomp reads these once, when torch loads it, so
:data:`TORCH_WAS_LOADED` records whether it came too late. Standard library only.

Why: worker threads that spin while they wait fight any other busy process for the cores
(measured on 2 cores: 3.6x -> 0.4x realtime with one competing busy thread). libgomp spins
300,000 times by default; 10,000 cost a few per cent when idle and kept throughput under load,
where ``PASSIVE`` (no spinning) cost 27 % when idle.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"

TORCH_WAS_LOADED = "torch" in sys.modules
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
