"""How many chunks one model call may take: a memory budget, not only ``model.batch_size``.

Contract:
- :func:`kv_bytes_per_row` is what one row's key/value cache costs for ``positions`` positions
  (prompt + new tokens) of a decoder config; :func:`prompt_positions` estimates a chunk's prompt.
- :func:`cpu_budget_bytes` is the memory a CPU batch may use beside the model:
  :data:`CPU_BUDGET_BYTES`, less on a machine with little memory available (an eighth of it).
- :func:`rows_that_fit` = how many rows of ``per_row`` bytes fit ``budget``, between 1 and ``cap``
  (``model.batch_size`` stays the upper bound; one row always runs).
Standard library only; the engine measures free GPU memory itself.

Why: decoding holds every row's cache at once (0.6B/1.7B: ~60 MB per 30 s chunk in bf16), so a
batch of 16 long chunks needed ~1 GB more than a batch of 8; with the budget the worker's peak
stays near a fixed working set whatever the backlog (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

CPU_BUDGET_BYTES = 512 * 2**20
# Audio tokens per second of audio in Qwen3-ASR's encoder output, plus the chat template.
AUDIO_TOKENS_PER_S = 13.0
TEMPLATE_TOKENS = 40


def prompt_positions(seconds: float) -> int:
    return int(seconds * AUDIO_TOKENS_PER_S) + TEMPLATE_TOKENS


def kv_bytes_per_row(text_config: Any, positions: int, element_bytes: int) -> int:
    heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return int(text_config.num_hidden_layers * 2 * heads * dim * element_bytes * positions)


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_budget_bytes(available: int | None = None) -> int:
    available = available_bytes() if available is None else available
    return CPU_BUDGET_BYTES if available is None else min(CPU_BUDGET_BYTES, available // 8)


def rows_that_fit(per_row: int, budget: int, cap: int) -> int:
    return max(1, min(cap, budget // max(1, per_row)))
