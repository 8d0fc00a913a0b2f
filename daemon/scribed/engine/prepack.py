"""Linear layers of a CPU model run by oneDNN with pre-packed weights (tied ones as they are).

Contract:
- :func:`pack_linears` replaces, in place, the weight of every ``nn.Linear`` of ``model`` whose
  weight is bfloat16 or float32 on the CPU and not shared with another module (a tied ``lm_head``
  is not: it goes to :func:`pack_tied_output`, which ``pack_linears`` calls last) by oneDNN's blocked
  layout, and routes the layer's ``forward`` through ``torch.ops.mkldnn._linear_pointwise``. It
  returns what it did (:class:`Packed`). Nothing is changed where those operators are missing,
  for bfloat16 on a CPU that only emulates it (:func:`native_bf16`), for another dtype or
  device, or for a weight shape whose packed product fails a probe input (checked once per
  shape): in bfloat16 it must be bit-identical to ``F.linear`` (the output of a packed model is
  the output of the unpacked one), in float32 within float32 rounding of it (as
  :func:`route_float32`: last-bit differences, another summation order).
- The original weight is dropped; when it lived in a file mapping (a safetensors checkpoint
  loaded with mmap, which keeps the whole file mapped while any of its tensors is alive), its
  pages are released with ``madvise(MADV_DONTNEED)``, so the packed copy replaces it in memory
  instead of adding to it. Memory of any other kind is simply freed with the tensor.

- :func:`pack_tied_output` gives a tied bfloat16 output layer (``lm_head`` sharing the input
  embedding's weight) a packed copy for its product, under the same bit-identity probe, but only
  when that weight lies in a file mapping (a checkpoint stored in bfloat16): the embedding keeps
  the mapped original for its lookups, and its resident pages are released at packing and after
  every lookup (the looked-up rows are copies), so the copy takes their place in memory instead of
  adding to it. Why after every lookup: the page cache holds large folios (2 MB here), and a
  fault maps the whole folio, so a few hundred distinct tokens would map most of the 0.3 GB
  again. A converted (anonymous) weight is left alone: there the copy would be a second one.

- :func:`route_float32` routes the ``forward`` of every float32 ``nn.Linear`` on the CPU (tied
  weights included: nothing is copied) through ``_linear_pointwise`` with its own plain weight,
  for each weight shape whose oneDNN product agrees with ``F.linear`` within float32 rounding on
  a probe. Its results may differ from MKL's in the last bits (another summation order), never
  more; nothing is changed where the operators are missing or the probe disagrees. Inference
  only: the routed layers pass no gradient to their weights.

Why: in bfloat16, ``F.linear`` hands oneDNN a plain row-major weight, which its brgemm kernel
re-blocks on every call. Packed once, the same kernel skips that: measured on 2 cores (Zen 4,
0.6B shapes, weights streamed from memory) 1.45x at one row and 1.7x at sixteen rows, with
bit-identical results (docs/performance.md). float32 products go to another library (MKL), which
on AMD CPUs streams the weights at about half the memory bandwidth: measured on 2 cores of a Zen 3
(AVX2), one row of 100 plain 3072x1024 float32 weights took 104 ms in MKL and 62 ms in oneDNN,
sixteen rows 277 vs 199 ms, the tied 151936x1024 output layer 50 vs 26 ms at one row; the whole
0.6B decode step 297-345 -> 237-245 ms (batch 1) and 1083-1104 -> 762-803 ms (batch 16). A packed
float32 copy was no faster than the plain weight at one row, but it is at every other row count:
packed for 16 rows (:data:`FLOAT32_ROWS_HINT`), 100 3072x1024 weights on the same Zen 3 took
60-68 vs 80-100 ms at 2 rows, 82 vs 128 at 8, 120 vs 136-198 at 16, and 10 of them 199-217 vs
237-254 ms at 480 rows (a prompt), against 54-65 vs 48-54 ms at one row (docs/performance.md,
session 9). Only a one-chunk memo decodes at one row, so untied float32 weights are packed too
(replacing the plain weight: no memory added). The tied output layer (151936 x 1024, 311 MB in
bf16, read whole every decode step) took 14.8 / 19.4 ms plain and 8.0 / 11.1 ms packed at 1 / 16
rows on 2 cores of a Zen 5, bit-identical (docs/performance.md, session 12).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import types
from dataclasses import dataclass

import torch

from scribed.system.libc import libc

MADV_DONTNEED = 4
#: Row count float32 weights are packed for: faster than the plain layout from 2 rows up (module doc).
FLOAT32_ROWS_HINT = 16


@dataclass(frozen=True)
class Packed:
    """What :func:`pack_linears` did: layers packed, their weight bytes, and file-mapped bytes released."""

    layers: int = 0
    weight_bytes: int = 0
    released_bytes: int = 0
    output_bytes: int = 0  # the tied output layer's packed copy (pack_tied_output), 0 if none


def native_bf16() -> bool:
    """True when this CPU computes bfloat16 products in hardware (AVX512-BF16 or AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@functools.cache
def available() -> bool:
    """True when this torch build has oneDNN's packed linear operators and this CPU runs them
    in bfloat16 natively (probed once with a tiny weight)."""
    # Without the instructions oneDNN emulates bf16 (AVX-512 without AVX512-BF16, e.g. Ice Lake),
    # and there its packed and plain kernels sum in different orders: seen on an Ice Lake, a
    # random 1024x2048 weight passed the bit-identity probe in some runs and failed it in others,
    # so passing the probe would not show the output unchanged. Those CPUs run float32 anyway.
    if not native_bf16():
        return False
    ops = getattr(torch.ops, "mkldnn", None)
    if not (torch.backends.mkldnn.is_available() and ops is not None
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    weight = torch.zeros(8, 16, dtype=torch.bfloat16)
    try:  # oneDNN refuses bf16 on CPUs without the instructions (e.g. AVX2-only Zen 3)
        return _identical(weight, None, ops._reorder_linear_weight(weight, 1))
    except RuntimeError:
        return False


@functools.cache
def float32_available() -> bool:
    """True when this torch build has oneDNN's linear operator and it runs float32 here."""
    ops = getattr(torch.ops, "mkldnn", None)
    if not (torch.backends.mkldnn.is_available() and ops is not None and hasattr(ops, "_linear_pointwise")):
        return False
    try:
        return _close(torch.ones(8, 16), None)
    except RuntimeError:
        return False


@functools.cache
def float32_packs() -> bool:
    """True when oneDNN packs float32 linear weights here and the packed product is within
    float32 rounding of ``F.linear`` (probed once with a tiny weight)."""
    if not (float32_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    weight = torch.ones(8, 16)
    try:
        return _close(weight, None, torch.ops.mkldnn._reorder_linear_weight(weight, FLOAT32_ROWS_HINT))
    except RuntimeError:
        return False


def route_float32(model: torch.nn.Module) -> int:
    """Route ``model``'s float32 CPU linear layers through oneDNN (see the module contract);
    returns how many were routed."""
    if not float32_available():
        return 0
    verified: dict[tuple[int, int], bool] = {}
    routed = 0
    for module, weight in _cpu_linears(model, torch.float32):
        shape = (weight.shape[0], weight.shape[1])
        if shape not in verified:
            bias = None if module.bias is None else module.bias.detach()
            with torch.no_grad():
                verified[shape] = _close(weight.detach(), bias)
        if verified[shape]:
            module.forward = types.MethodType(_onednn_forward, module)
            routed += 1
    return routed


def pack_linears(model: torch.nn.Module, *, rows_hint: int = 1) -> Packed:
    """Pack ``model``'s eligible linear weights in place (see the module contract).

    ``rows_hint`` is the row count oneDNN chooses the bfloat16 blocking for (float32:
    :data:`FLOAT32_ROWS_HINT`); any row count still works.
    """
    kinds = [(torch.bfloat16, rows_hint, _identical)] if available() else []
    if float32_packs():
        kinds.append((torch.float32, FLOAT32_ROWS_HINT, _close))
    if not kinds:
        return Packed()
    shared = _shared_weights(model)
    verified: dict[tuple[torch.dtype, int, int], bool] = {}
    files = _file_mappings()
    layers = weight_bytes = released = 0
    eligible = [(module, weight, hint, probe) for dtype, hint, probe in kinds
                for module, weight in _cpu_linears(model, dtype) if id(weight) not in shared]
    for module, weight, hint, probe in eligible:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), hint)
            bias = None if module.bias is None else module.bias.detach()
            shape = (weight.dtype, weight.shape[0], weight.shape[1])
            if shape not in verified:
                verified[shape] = probe(weight.detach(), bias, packed)
        if not verified[shape]:
            continue
        released += _release(weight.detach(), files)
        weight_bytes += weight.numel() * weight.element_size()
        del module.weight
        module.register_buffer("packed_weight", packed, persistent=False)
        module.forward = types.MethodType(_packed_forward, module)
        layers += 1
    output = pack_tied_output(model, rows_hint=rows_hint)
    return Packed(layers=layers, weight_bytes=weight_bytes, released_bytes=released, output_bytes=output)


def pack_tied_output(model: torch.nn.Module, *, rows_hint: int = 1) -> int:
    """Pack a tied bfloat16 output layer's weight for its product (see the module contract);
    returns the bytes of the packed copy, 0 where nothing was done."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    embed = getattr(model, "get_input_embeddings", lambda: None)()
    weight = getattr(head, "weight", None)
    if (not isinstance(head, torch.nn.Linear) or not isinstance(embed, torch.nn.Embedding) or weight is None
            or weight is not embed.weight or weight.dtype != torch.bfloat16 or weight.device.type != "cpu"
            or head.bias is not None or hasattr(head, "packed_weight") or not available()
            or _LIBC is None or not _mapped_alone(weight, _file_mappings())):
        return 0
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)
        if not _identical(weight.detach(), None, packed):
            return 0
    head.register_buffer("packed_weight", packed, persistent=False)
    head.forward = types.MethodType(_packed_forward, head)
    embed.scribed_pages = _pages(weight.detach())
    embed.forward = types.MethodType(_releasing_lookup, embed)
    _madvise(*embed.scribed_pages)
    return packed.numel() * packed.element_size()


def release_embedding(model: torch.nn.Module) -> int:
    """Release the resident file pages of ``model``'s input embedding when its output layer runs
    on a packed copy (:func:`pack_tied_output`); bytes released. Pages read since come back from
    the page cache on the next lookup."""
    embed = getattr(model, "get_input_embeddings", lambda: None)()
    pages = getattr(embed, "scribed_pages", None)  # set by pack_tied_output only
    return _madvise(*pages) if pages else 0


def _releasing_lookup(self: torch.nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    rows = torch.nn.Embedding.forward(self, ids)  # copies of the rows: the mapping is not needed after
    first, last = self.scribed_pages  # found once (pack_tied_output): no /proc read per step
    _madvise(first, last)
    return rows


def _cpu_linears(model: torch.nn.Module, dtype: torch.dtype) -> list[tuple[torch.nn.Linear, torch.nn.Parameter]]:
    """``model``'s linear layers with a 2-D ``dtype`` weight parameter on the CPU, with that weight."""
    found = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, torch.nn.Linear) and isinstance(weight, torch.nn.Parameter)
                and weight.dtype == dtype and weight.device.type == "cpu" and weight.dim() == 2):
            found.append((module, weight))
    return found


def _packed_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.detach()  # as in _onednn_forward
    return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, bias, "none", [], "")


def _onednn_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # the weight read where it is (plain layout): a 2-D weight is all _linear_pointwise needs in
    # float32. Detached: the operator has no autograd formula, and with a parameter that requires
    # grad its output would come back as a leaf that requires grad (in-place adds then raise).
    bias = None if self.bias is None else self.bias.detach()
    return torch.ops.mkldnn._linear_pointwise(x, self.weight.detach(), bias, "none", [], "")


def _close(weight: torch.Tensor, bias: torch.Tensor | None, operand: torch.Tensor | None = None) -> bool:
    """oneDNN's float32 product with ``operand`` (default: the plain ``weight``; else its packed
    copy) agrees with ``F.linear`` on a fixed probe (one and several rows) within float32
    rounding: each element within 1e-5 of ``|x| * |w_row| + |b|`` (Cauchy-Schwarz: at least the
    sum of the magnitudes it adds up; norms, not a second product, keep the probe of the 622 MB
    output layer cheap)."""
    g = torch.Generator().manual_seed(0)
    row_norms = torch.linalg.vector_norm(weight, dim=1)
    for rows in (1, 7):
        x = torch.randn(rows, weight.shape[1], generator=g)
        got = torch.ops.mkldnn._linear_pointwise(x, weight if operand is None else operand, bias, "none", [], "")
        want = torch.nn.functional.linear(x, weight, bias)
        scale = torch.linalg.vector_norm(x, dim=1, keepdim=True) * row_norms
        if bias is not None:
            scale = scale + bias.abs()
        if got.shape != want.shape or not bool(((got - want).abs() <= 1e-5 * scale + 1e-30).all()):
            return False
    return True


def _identical(weight: torch.Tensor, bias: torch.Tensor | None, packed: torch.Tensor) -> bool:
    """The packed product equals ``F.linear`` bit for bit on a fixed probe (one and several rows)."""
    g = torch.Generator().manual_seed(0)
    for rows in (1, 7):
        x = torch.randn(rows, weight.shape[1], generator=g).to(weight.dtype)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
        if not torch.equal(got, torch.nn.functional.linear(x, weight, bias)):
            return False
    return True


def _shared_weights(model: torch.nn.Module) -> set[int]:
    """ids of parameters reachable under more than one name (tied weights)."""
    names: dict[int, int] = {}
    for _name, param in model.named_parameters(remove_duplicate=False):
        names[id(param)] = names.get(id(param), 0) + 1
    return {key for key, count in names.items() if count > 1}


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's file-backed mappings (Linux; empty elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    low, high = parts[0].split("-")
                    ranges.append((int(low, 16), int(high, 16)))
    except OSError:
        return []
    return ranges


def _mapped_alone(tensor: torch.Tensor, files: list[tuple[int, int]]) -> bool:
    """``tensor`` lies wholly in a file mapping and owns its storage alone."""
    start, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    if tensor.untyped_storage().nbytes() != size:
        return False
    return any(low <= start and start + size <= high for low, high in files)


def _pages(tensor: torch.Tensor) -> tuple[int, int]:
    """The whole pages inside ``tensor``'s memory: (first address, end address)."""
    start, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    page = mmap.PAGESIZE
    return -(-start // page) * page, (start + size) // page * page


def _madvise(first: int, last: int) -> int:
    if _LIBC is None or last <= first:
        return 0
    if _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED) != 0:
        return 0
    return last - first


def _release(tensor: torch.Tensor, files: list[tuple[int, int]]) -> int:
    """Drop the resident pages wholly inside ``tensor`` when it lies in a file mapping and owns
    its storage alone (re-read from the file if anything touched them again); bytes released."""
    if not _mapped_alone(tensor, files):
        return 0
    return _madvise(*_pages(tensor))


_LIBC = libc() if hasattr(libc(), "madvise") else None
