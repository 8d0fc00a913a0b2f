"""A batch's one-token decode step with fixed shapes, captured once as a CUDA graph and replayed.

Contract:
- :class:`StaticStep` runs the decoder for one new token per row over the *whole* reserved room
  of a :class:`~scribed.engine.kvcache.BatchCache` filled by the prompt (built with
  ``full_span=True``): the new keys/values are written at a position held in a device tensor,
  attention reads every reserved position and a boolean mask (the prompt's own mask, then one
  more position per step) hides the rest. Every tensor a step reads or writes keeps its
  address and shape, so on CUDA :meth:`StaticStep.capture` records the step once as a CUDA graph
  (after one eager warm-up step) and each :meth:`~StaticStep.step` is a few small copies and one
  replay. Without a capture (a CPU, or a capture that failed) the
  same step runs eagerly, with the same tokens (tests compare both with ``generate``).
- Writes made by the warm-up land at the first decode position, which step 0 overwrites.
- :func:`usable` says whether a model's decoder is one this step knows (full attention in every
  layer: the mask is handed over prepared, for every layer type at once).

Why: on a GPU the eager step is bound by launching ~60 small kernels per layer from Python
(0.6B and 1.7B alike ~27 ms a step on an H200 at any batch size from 1 to 128, 2026-12-04), far
above the ~1 ms that reading the weights takes; a replayed graph launches them all at once.
The graph costs one eager step and a capture per model call, so it is used from
:data:`MIN_STEPS` steps on.
"""

from __future__ import annotations

from typing import Any

import torch
from loguru import logger
from transformers.cache_utils import Cache, DynamicLayer

from scribed.engine.kvcache import BatchCache

MIN_STEPS = 16  # decode steps of a call from which capturing pays (a capture costs ~2 eager steps)


def _layer_types(model: Any) -> set[str]:
    return set(getattr(model.config.get_text_config(decoder=True), "layer_types", None) or ["full_attention"])


def usable(model: Any) -> bool:
    return _layer_types(model) == {"full_attention"}


class _StaticLayer(DynamicLayer):
    """One layer's full reserved room: each update writes one position, at ``index``, and
    returns every position (the mask says which count)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.index = keys, values, index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys.index_copy_(2, self.index, key_states)
        self.values.index_copy_(2, self.index, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]


class StaticStep:
    """The decode steps of one batch after its prompt: see the module contract."""

    def __init__(self, model: Any, cache: BatchCache, prompt_mask: torch.Tensor, last_position: torch.Tensor) -> None:
        rows, self.prompt = prompt_mask.shape
        device = prompt_mask.device
        self.model = model
        stores = cache.stores
        capacity = stores[0].capacity
        if any(s.capacity != capacity or s.span != capacity for s in stores):
            raise ValueError("StaticStep needs a BatchCache built with full_span=True, filled by the prompt")
        # attention reads every reserved position, at probability 0 past the filled ones, and
        # 0 x an uninitialised NaN would be NaN: the keys and values past them were zeroed when
        # the store laid them out over its whole capacity (kvcache._Store._relayout)
        self.index = torch.full((1,), self.prompt, dtype=torch.long, device=device)
        self.tokens = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.positions = last_position.clone()
        self.mask = torch.zeros((rows, 1, 1, capacity), dtype=torch.bool, device=device)
        self.mask[:, 0, 0, : self.prompt] = prompt_mask.bool()
        self.cache = Cache(layers=[_StaticLayer(s.keys(), s.values(), self.index) for s in stores])
        self.masks = {kind: self.mask for kind in _layer_types(model)}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.tokens, attention_mask=self.masks, position_ids=self.positions,
                         cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def capture(self) -> bool:
        """Record the step as a CUDA graph; False (and eager steps) when capturing fails."""
        try:
            # warm-up, eagerly and on this stream: lazy set-up and the attention's scratch buffers
            # happen outside the graph, and those buffers belong to the stream that replays it
            self._forward()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self._forward()
            self.graph = graph
        except Exception as exc:  # an operation a graph cannot hold: the eager step stays
            logger.info("decode steps run without a CUDA graph: {}: {}", type(exc).__name__, exc)
            self.graph = self.logits = None
            torch.cuda.synchronize()
        return self.graph is not None

    def step(self, token: torch.Tensor, position: torch.Tensor, step: int) -> torch.Tensor:
        """Logits ``[rows, vocab]`` after feeding ``token`` (``[rows]``) at ``position``
        (``[rows, 1]``) as decode step ``step`` (0 = the first token after the prompt). The
        returned tensor is overwritten by the next step."""
        at = self.prompt + step
        self.tokens.copy_(token[:, None])
        self.positions.copy_(position)
        self.index.fill_(at)
        self.mask[:, :, :, at] = True
        if self.graph is None:
            return self._forward()
        self.graph.replay()
        assert self.logits is not None
        return self.logits
