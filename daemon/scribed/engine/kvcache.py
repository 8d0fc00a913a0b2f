"""A pre-sized key/value cache and the one-token attention that reads it (the decode step).

Contract:
- :class:`BatchCache` holds, per decoder layer, buffers allocated at the first (prefill) write
  with room for the prompt plus ``new_tokens`` more positions; later keys/values are written in
  place. Its :meth:`~BatchCache.view` is a transformers ``Cache`` over some rows (prefill a few
  rows at a time, then decode all together) whose ``update`` returns views of the filled part,
  shaped ``[rows, kv_heads, length, head_dim]`` like ``DynamicLayer``'s, so any attention
  function can read them. Keys and values lie *tight* (rows exactly one span of 32-position
  buckets apart, moved apart as the span grows). Past the
  reserved room a layer grows by doubling (a copy, not an error). Every layer's first buffers
  come from one allocation per batch (:class:`_Slab`).
  :func:`presized_cache` is one view over all rows, for ``generate``.
- :data:`ATTENTION` names an attention implementation registered with transformers
  (:func:`register`): for a single query token it computes grouped-query attention with two
  batched matrix products over those views, neither copied (oneDNN reads a batch of matrices in
  place only when they lie exactly one apart -- the tight layout -- and copies them first at any
  other stride, transposed keys and row-major values alike);
  every other call (prefill, the audio encoder's windows) goes to transformers' own SDPA
  function unchanged. Masks are built by transformers' SDPA mask function.
- Numerically this is the same attention (softmax in float32); greedy output on the fixture
  models is unchanged (tests compare against the stock path).

Why: with ``DynamicCache`` every step concatenates the whole cache (batch 16 of 30 s chunks:
~750 MB copied, in freshly faulted pages, per step), and torch's CPU flash-attention kernel
is ~8x slower than two ``bmm`` for one query row. Measured on 2 cores (0.6B, bf16, batch 16,
30 s chunks): ~470 ms per step before; see docs/performance.md for after. Keys were stored
transposed until session 12: that made every step's key write a scatter over ``head_dim`` cache
lines per row and head (7.6 ms a step at batch 16 on a Zen 5), and the first product over the
tight keys is faster too (27 -> 18 ms a step). Values kept the whole reserved room between rows
until session 15: the second product then copied every layer's values first, every step
(bf16, 128 matrices of 416 x 128 on a Zen 4: 1.15-1.46 ms against 0.33 ms tight, per layer).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "scribed_decode"
BUCKET = 32  # positions: the one-token attention's key length is rounded up to a multiple of it


class _Store:
    """One decoder layer's keys and values for every row of a batch.

    Keys and values are both laid out *tight*: ``[rows, kv_heads, span, head_dim]`` with ``span``
    (a multiple of :data:`BUCKET`, at most the capacity) the only room between rows, each carved
    from a flat buffer with room for ``capacity`` positions; when a write passes ``span``, the
    rows are moved apart to the next bucket (:meth:`_relayout`, once per :data:`BUCKET`
    positions) and the new positions are zeroed.
    """

    def __init__(self, rows: int, new_tokens: int, slab: _Slab, full_span: bool = False) -> None:
        self.rows = rows
        self.new_tokens = max(1, new_tokens)
        self.slab = slab
        self.full_span = full_span  # laid out over the whole capacity from the first write
        self.key_buffer: torch.Tensor | None = None  # flat, rows * kv_heads * capacity * head_dim
        self.value_buffer: torch.Tensor | None = None  # flat, rows * kv_heads * capacity * head_dim
        self.heads = self.dim = self.capacity = 0
        self.span = 0  # positions between rows in the layout
        self.filled = 0  # positions written for at least one row (what a regrowth keeps)

    def keys(self) -> torch.Tensor:
        """The keys as laid out now: ``[rows, kv_heads, span, head_dim]``, contiguous."""
        assert self.key_buffer is not None
        return _laid(self.key_buffer, self.rows, self.heads, self.span, self.dim)

    def values(self) -> torch.Tensor:
        """The values as laid out now: ``[rows, kv_heads, span, head_dim]``, contiguous."""
        assert self.value_buffer is not None
        return _laid(self.value_buffer, self.rows, self.heads, self.span, self.dim)

    def write(self, rows: slice, start: int, keys: torch.Tensor,
              values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + keys.shape[-2]
        if self.key_buffer is None:
            self.heads, self.dim = keys.shape[1], keys.shape[-1]
            if values.shape[-1] != self.dim:
                raise ValueError("keys and values of one layer must have the same head size")
            self.capacity = end + self.new_tokens
            self.key_buffer, self.value_buffer = self.slab.take(self.rows, keys, self.capacity)
        elif end > self.capacity:
            self._allocate(keys, max(end, 2 * self.capacity))
        if end > self.span:
            self._relayout(self.capacity if self.full_span else min(self.capacity, -(-end // BUCKET) * BUCKET))
        stored_k, stored_v = self.keys(), self.values()
        stored_k[rows, :, start:end].copy_(keys)
        stored_v[rows, :, start:end].copy_(values)
        self.filled = max(self.filled, end)
        return stored_k[rows, :, :end], stored_v[rows, :, :end]

    def _relayout(self, span: int) -> None:
        """Move the rows apart to ``span`` positions, zeros after what was laid out.

        The zeros matter: the one-token attention reads up to the span (at probability 0, but
        0 x an uninitialised NaN is NaN). Pages of the reserved room past the span are never
        touched, so they cost no memory until positions reach them."""
        kept = self.span
        for buffer in (self.key_buffer, self.value_buffer):
            assert buffer is not None
            saved = None
            if kept:  # old and new layouts overlap in the buffer: through a scratch copy
                old = _laid(buffer, self.rows, self.heads, kept, self.dim)
                saved = _scratch("relayout", old.numel(), old.dtype, old.device).view_as(old).copy_(old)
            new = _laid(buffer, self.rows, self.heads, span, self.dim)
            if saved is not None:
                new[:, :, :kept].copy_(saved)
            new[:, :, kept:].zero_()
        self.span = span

    def _allocate(self, keys: torch.Tensor, capacity: int) -> None:
        size = self.rows * self.heads * capacity * self.dim
        key_buffer, value_buffer = keys.new_empty(size), keys.new_empty(size)
        if self.key_buffer is not None and self.value_buffer is not None:
            laid = self.rows * self.heads * self.span * self.dim  # the layout does not depend on capacity
            key_buffer[:laid].copy_(self.key_buffer[:laid])
            value_buffer[:laid].copy_(self.value_buffer[:laid])
        self.key_buffer, self.value_buffer, self.capacity = key_buffer, value_buffer, capacity


def _laid(buffer: torch.Tensor, rows: int, heads: int, span: int, dim: int) -> torch.Tensor:
    """``[rows, heads, span, dim]`` over the start of a flat buffer."""
    return buffer[: rows * heads * span * dim].view(rows, heads, span, dim)


class _Slab:
    """Every layer's first keys/values of one batch, carved from one allocation.

    Why: one tensor per layer (56 of ~8 MB at 8 rows of 30 s) sits below glibc's mmap threshold
    once that has risen (it follows the largest block freed, up to 32 MB), so each batch's cache
    went into the heap, in sizes that change with the batch, between long-lived small blocks:
    the heap fragmented and the worker's peak memory crept up with its history. One block of
    hundreds of MB is always mapped on its own and returned to the system when the batch ends;
    its pages are only touched (and resident) as positions are written.
    """

    def __init__(self, layers: int) -> None:
        self.layers = layers
        self.buffer: torch.Tensor | None = None
        self.shape: tuple[Any, ...] = ()
        self.handed = 0  # layers given their part so far

    def take(self, rows: int, keys: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next layer's flat (key, value) buffers for ``rows`` rows of ``capacity`` positions,
        shaped as :meth:`_Store._allocate` makes them. The first call sizes the slab for every layer
        from its own shapes; a layer with other shapes or past the count gets buffers of its own."""
        heads, dim = keys.shape[1], keys.shape[-1]
        shape = (rows, heads, dim, capacity, keys.dtype, keys.device)
        size = rows * heads * capacity * dim
        if self.buffer is None:
            self.shape = shape
            self.buffer = keys.new_empty((self.layers, 2 * size))
        if self.handed >= self.layers or shape != self.shape:
            return keys.new_empty(size), keys.new_empty(size)
        flat = self.buffer[self.handed]
        self.handed += 1
        return flat[:size], flat[size:]


class PresizedLayer(DynamicLayer):
    """A ``DynamicLayer`` look-alike over rows ``rows`` of a :class:`_Store`; see the module contract."""

    def __init__(self, store: _Store, rows: slice, length: int = 0) -> None:
        super().__init__()
        self.store, self.rows, self.length = store, rows, length
        if length:
            self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = self.store.write(self.rows, self.length, key_states, value_states)
        self.length += key_states.shape[-2]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reset(self) -> None:
        self.length = 0
        self.keys = self.values = None
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("PresizedLayer serves greedy decoding only")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("PresizedLayer serves greedy decoding only")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("PresizedLayer serves greedy decoding only")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("PresizedLayer serves greedy decoding only")


class BatchCache:
    """Pre-sized keys/values of a batch of ``rows`` for at most ``new_tokens`` new tokens per row.

    :meth:`view` gives a transformers ``Cache`` over some rows, so the prompt can be filled a
    few rows at a time (prefill) and then decoded for all rows at once; views share storage.
    ``full_span``: keys laid out over the whole reserved room from the start, as the fixed-shape
    step of :mod:`scribed.engine.graphstep` reads them.
    """

    def __init__(self, num_layers: int, rows: int, new_tokens: int, *, full_span: bool = False) -> None:
        self.rows = rows
        slab = _Slab(num_layers)
        self.stores = [_Store(rows, new_tokens, slab, full_span) for _ in range(num_layers)]

    def view(self, start: int = 0, stop: int | None = None, *, length: int = 0) -> Cache:
        """A cache over rows ``start:stop`` whose first ``length`` positions are already filled."""
        rows = slice(start, self.rows if stop is None else stop)
        return Cache(layers=[PresizedLayer(store, rows, length) for store in self.stores])


def presized_cache(num_layers: int, rows: int, new_tokens: int) -> Cache:
    """A cache for one ``generate`` call on ``rows`` rows of at most ``new_tokens`` new tokens."""
    return BatchCache(num_layers, rows, new_tokens).view()


def decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention for transformers' interface: output ``[batch, q_len, heads, head_dim]``, no weights."""
    if query.shape[2] != 1 or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    key, value, span = _bucketed(key, value)
    groups = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    # [batch*kv_heads, groups, dim] x [batch*kv_heads, dim, span]: over the store's tight keys
    # (_Store) that transpose is a view oneDNN reads as it is; other layouts are copied by reshape.
    q = query.reshape(batch * kv_heads, groups, dim)
    k_t = key.reshape(batch * kv_heads, span, dim).transpose(-1, -2)
    # Scores and probabilities grow by one column per step: carved from buffers kept between
    # steps, so the heap does not fragment into ever-larger fresh blocks (it grew ~12 MB a step
    # at batch 16 with fresh tensors).
    raw = _scratch("raw", batch * heads * span, query.dtype, query.device).view(batch * kv_heads, groups, span)
    torch.bmm(q, k_t, out=raw)
    scores = _scratch("scores", batch * heads * span, torch.float32, query.device).view(batch, heads, span)
    scores.copy_(raw.view(batch, heads, span)).mul_(scale)
    if attention_mask is not None:
        mask = attention_mask.reshape(batch, -1, attention_mask.shape[-1])[..., -length:]
        if mask.dtype == torch.bool:
            scores[..., :length].masked_fill_(~mask, float("-inf"))
        else:
            scores[..., :length].add_(mask.float())
    scores[..., length:] = float("-inf")
    torch.softmax(scores, dim=-1, out=scores)
    raw.view(batch, heads, span).copy_(scores)
    out = torch.bmm(raw.view(batch * kv_heads, groups, span),
                    value.reshape(batch * kv_heads, span, value.shape[-1]))
    return out.view(batch, heads, 1, -1).transpose(1, 2), None


def _bucketed(key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``key``/``value`` widened to the keys' laid-out span (the next multiple of :data:`BUCKET`
    positions, within the store's capacity) when they are views of a :class:`_Store`, else
    unchanged; and that width.

    Why: oneDNN builds and caches a kernel per matrix shape; a length one longer each step was
    a new shape every step (memory that grew ~7 MB a step at batch 8). Widened, the shape
    changes once per :data:`BUCKET` steps, for at most ``BUCKET - 1`` masked extra columns. And
    oneDNN reads the keys' transpose in place only when the rows lie exactly ``span`` apart (any
    other stride is copied first): the tight layout and this width make it so."""
    length, dim = key.shape[-2], key.shape[-1]
    if key.stride(-1) != 1 or key.stride(-2) != dim or value.stride() != key.stride() or value.shape != key.shape:
        return key, value, length
    span = key.stride(1) // dim
    if key.stride(0) != key.shape[1] * key.stride(1) or span * dim != key.stride(1) or span <= length:
        return key, value, length
    size = (*key.shape[:-2], span, dim)
    return (key.as_strided(size, key.stride(), key.storage_offset()),
            value.as_strided(size, value.stride(), value.storage_offset()), span)


_SCRATCH: dict[tuple[str, torch.dtype, torch.device, bool], torch.Tensor] = {}


def _scratch(name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat buffer of at least ``numel`` elements, reused across calls (grown by half again).
    Kept apart for inference mode: a buffer made there cannot be written outside it."""
    key = (name, dtype, device, torch.is_inference_mode_enabled())
    buffer = _SCRATCH.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(max(numel, int(1.5 * (0 if buffer is None else buffer.numel()))), dtype=dtype,
                             device=device)
        _SCRATCH[key] = buffer
    return buffer[:numel]


def register() -> None:
    """Make :data:`ATTENTION` a valid ``attn_implementation`` (idempotent)."""
    AttentionInterface.register(ATTENTION, decode_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
