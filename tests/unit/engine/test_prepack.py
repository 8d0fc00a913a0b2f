"""Tests for scribed.engine.prepack: oneDNN pre-packed bf16 linear weights, same results."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen3ASRForConditionalGeneration

from fixtures.tinymodel import _speechlike
from scribed.engine import prepack
from scribed.engine.qwen3 import AsrEngine
from scribed.engine.types import ChunkRequest

packs = pytest.mark.skipif(not prepack.available(), reason="this torch build or CPU has no native oneDNN bf16 "
                           "packed linear (it needs AVX512-BF16 or AMX)")


def _engine(path: Path, packed: bool, dtype: str = "bfloat16") -> AsrEngine:
    engine = AsrEngine(path, device="cpu", dtype=dtype, name="tiny")
    engine.prepack = packed
    engine.load()
    return engine


@packs
def test_a_packed_bf16_model_gives_bit_identical_logits_and_transcripts(tiny_model: Path) -> None:
    plain, packed = _engine(tiny_model, False), _engine(tiny_model, True)
    assert plain.packed.layers == 0 and packed.packed.layers > 0
    linears = [m for m in packed.model.modules() if isinstance(m, torch.nn.Linear)]
    assert sum(hasattr(m, "packed_weight") for m in linears) == packed.packed.layers
    assert all("weight" not in dict(m.named_parameters(recurse=False)) for m in linears if hasattr(m, "packed_weight"))
    audio = [_speechlike(np.random.default_rng(seed), 2.0 + seed) for seed in range(3)]
    inputs = plain.processor.apply_transcription_request(audio, language=None)
    inputs["input_features"] = inputs["input_features"].to(torch.bfloat16)
    with torch.inference_mode():
        want = plain.model(**inputs).logits
        got = packed.model(**inputs).logits
    assert torch.equal(got, want)
    requests = [ChunkRequest(a, 30) for a in audio]
    assert [(r.text, r.tokens) for r in packed.run(requests, 3)] == [(r.text, r.tokens) for r in plain.run(requests, 3)]


@packs
def test_tied_and_non_linear_weights_are_left_alone() -> None:
    model = torch.nn.Module()
    model.f32 = torch.nn.Linear(16, 8)
    model.embed = torch.nn.Embedding(10, 16).to(torch.bfloat16)
    model.head = torch.nn.Linear(16, 10, bias=False).to(torch.bfloat16)
    model.head.weight = model.embed.weight  # tied, as Qwen3-ASR's lm_head
    model.own = torch.nn.Linear(16, 12).to(torch.bfloat16)
    x = torch.randn(3, 16).to(torch.bfloat16)
    want = model.own(x)
    f32_packs = prepack.float32_packs()  # float32 layers are packed too where oneDNN can
    done = prepack.pack_linears(model)
    assert done.layers == 1 + f32_packs and done.weight_bytes == 12 * 16 * 2 + f32_packs * 8 * 16 * 4
    # a packed layer has no weight attribute left (its buffer is packed_weight)
    assert isinstance(getattr(model.f32, "weight", None), torch.nn.Parameter) != f32_packs
    assert model.head.weight is model.embed.weight
    assert not hasattr(model.own, "weight") or model.own.weight is None
    assert torch.equal(model.own(x), want)


@packs
def test_a_packed_weight_that_differs_is_refused_by_the_probe() -> None:
    weight = torch.randn(8, 16).to(torch.bfloat16)
    assert prepack._identical(weight, None, torch.ops.mkldnn._reorder_linear_weight(weight, 1))
    other = torch.ops.mkldnn._reorder_linear_weight(weight + 1, 1)
    assert not prepack._identical(weight, None, other)


def _file_rss_kb(path: Path) -> int:
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5 and line[0] in "0123456789abcdef":
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@packs
def test_a_weight_in_a_file_mapping_gives_its_pages_back(tmp_path: Path) -> None:
    rows, cols = 1024, 2048  # 4 MiB of bf16, like a checkpoint tensor mapped by safetensors
    path = tmp_path / "weights.bin"
    values = torch.randn(rows, cols).to(torch.bfloat16)
    values.view(torch.int16).numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=rows * cols, dtype=torch.bfloat16).view(rows, cols)
    layer = torch.nn.Linear(cols, rows, bias=False).to(torch.bfloat16)
    layer.weight = torch.nn.Parameter(mapped, requires_grad=False)
    x = torch.randn(2, cols).to(torch.bfloat16)
    want = layer(x)  # reads every page of the mapping
    assert _file_rss_kb(path) >= 4000
    done = prepack.pack_linears(layer)
    assert done.layers == 1 and done.released_bytes >= rows * cols * 2 - 8192
    assert _file_rss_kb(path) <= 8  # at most the partial pages at either end
    assert torch.equal(layer(x), want)


class _Tied(torch.nn.Module):
    """An embedding and an output layer sharing one weight, as Qwen3-ASR's decoder."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(*weight.shape).to(weight.dtype)
        self.embed.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).to(weight.dtype)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


@packs
def test_a_tied_output_layer_in_a_file_mapping_runs_on_a_packed_copy_and_the_mapping_gives_its_pages_back(
        tmp_path: Path) -> None:
    vocab, dim = 4096, 512  # 4 MiB of bf16
    path = tmp_path / "embedding.bin"
    torch.randn(vocab, dim).to(torch.bfloat16).view(torch.int16).numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=vocab * dim, dtype=torch.bfloat16).view(vocab, dim)
    model = _Tied(mapped)
    x = torch.randn(3, dim).to(torch.bfloat16)
    ids = torch.tensor([[5, 4000]])
    want, want_rows = model.head(x), model.embed(ids)
    assert _file_rss_kb(path) >= 4000
    assert prepack.pack_tied_output(model) >= vocab * dim * 2
    assert hasattr(model.head, "packed_weight") and model.head.weight is model.embed.weight
    assert _file_rss_kb(path) <= 8  # the copy replaced the mapped pages
    assert torch.equal(model.head(x), want)  # bit for bit
    for rows in (1, 2, 16):
        y = torch.randn(rows, dim).to(torch.bfloat16)
        assert torch.equal(model.head(y), torch.nn.functional.linear(y, mapped))
    assert prepack.release_embedding(model) > 0 and _file_rss_kb(path) <= 8  # (F.linear above read them all)
    # a lookup copies its rows and gives the pages it faulted in back (a fault maps a whole folio)
    assert torch.equal(model.embed(ids), want_rows) and _file_rss_kb(path) <= 8
    assert prepack.pack_tied_output(model) == 0  # once


@packs
def test_a_tied_output_layer_outside_a_file_mapping_is_left_alone() -> None:
    # a converted (anonymous) weight: a packed copy would be a second one in memory
    model = _Tied(torch.randn(64, 32).to(torch.bfloat16))
    assert prepack.pack_tied_output(model) == 0 and not hasattr(model.head, "packed_weight")
    assert prepack.release_embedding(model) == 0
    untied = _Tied(torch.randn(64, 32).to(torch.bfloat16))
    untied.head.weight = torch.nn.Parameter(untied.embed.weight.detach().clone())
    assert prepack.pack_tied_output(untied) == 0


@packs
def test_a_checkpoint_stored_in_bf16_gets_a_packed_output_layer_with_the_same_transcripts(
        tiny_model: Path, tmp_path: Path) -> None:
    stored = tmp_path / "bf16"
    shutil.copytree(tiny_model, stored)
    for weights in stored.glob("*.safetensors"):
        weights.unlink()
    Qwen3ASRForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(stored)
    plain, packed = _engine(stored, False), _engine(stored, True)
    converted = _engine(tiny_model, True)  # float32 on disk, bf16 in memory: anonymous, left alone
    assert plain.packed.output_bytes == 0 and converted.packed.output_bytes == 0
    assert packed.packed.output_bytes > 0 and hasattr(packed.model.get_output_embeddings(), "packed_weight")
    audio = [_speechlike(np.random.default_rng(seed), 2.0 + seed) for seed in range(3)]
    inputs = plain.processor.apply_transcription_request(audio, language=None)
    inputs["input_features"] = inputs["input_features"].to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(packed.model(**inputs).logits, plain.model(**inputs).logits)
    requests = [ChunkRequest(a, 30) for a in audio]
    assert [(r.text, r.tokens) for r in packed.run(requests, 3)] == [(r.text, r.tokens) for r in plain.run(requests, 3)]


def test_a_cpu_whose_onednn_refuses_bf16_gets_an_unpacked_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # AVX2-only CPUs (e.g. Zen 3): the reorder raises "bf16 path needs the cpu support ...";
    # loading must go on with the plain weights rather than fail
    def refuse(weight: torch.Tensor, rows: int) -> torch.Tensor:
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    monkeypatch.setattr(prepack, "native_bf16", lambda: True)  # so the refusal is what is tested, on any CPU
    prepack.available.cache_clear()
    try:
        assert not prepack.available()
        model = torch.nn.Sequential(torch.nn.Linear(16, 12).to(torch.bfloat16))
        x = torch.randn(3, 16).to(torch.bfloat16)
        want = model(x)
        assert prepack.pack_linears(model) == prepack.Packed()
        assert isinstance(model[0].weight, torch.nn.Parameter) and torch.equal(model(x), want)
    finally:
        monkeypatch.undo()
        prepack.available.cache_clear()


def test_a_cpu_that_only_emulates_bf16_gets_an_unpacked_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # AVX-512 without AVX512-BF16 (Ice Lake): oneDNN runs bf16 there, but its packed and plain
    # kernels do not sum alike, so the probe cannot vouch for bit-identical output: never packed
    def reorder(weight: torch.Tensor, rows: int) -> torch.Tensor:
        raise AssertionError("the reorder must not even be tried")

    monkeypatch.setattr(prepack, "native_bf16", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", reorder)
    prepack.available.cache_clear()
    try:
        assert not prepack.available()
        model = torch.nn.Sequential(torch.nn.Linear(16, 12).to(torch.bfloat16))
        assert prepack.pack_linears(model) == prepack.Packed()
        assert isinstance(model[0].weight, torch.nn.Parameter)
    finally:
        monkeypatch.undo()
        prepack.available.cache_clear()


routes = pytest.mark.skipif(not prepack.float32_available(), reason="this torch build has no oneDNN float32 linear")


@routes
def test_a_float32_model_run_by_onednn_gives_the_same_transcripts(tiny_model: Path) -> None:
    plain, routed = _engine(tiny_model, False, "float32"), _engine(tiny_model, True, "float32")
    linears = [m for m in routed.model.modules() if isinstance(m, torch.nn.Linear)]
    packed = [m for m in linears if hasattr(m, "packed_weight")]
    assert plain.routed_float32 == plain.packed.layers == 0
    assert routed.packed.layers == len(packed) and routed.routed_float32 + len(packed) == len(linears) > 0
    if prepack.float32_packs():  # every untied layer packed; only the tied output layer routed as it is
        assert routed.routed_float32 == 1 and len(packed) == len(linears) - 1
        assert all("weight" not in dict(m.named_parameters(recurse=False)) for m in packed)
    # nothing copied: the tied output layer is still the embedding's tensor
    assert routed.model.get_output_embeddings().weight is routed.model.get_input_embeddings().weight
    audio = [_speechlike(np.random.default_rng(seed), 2.0 + seed) for seed in range(3)]
    inputs = plain.processor.apply_transcription_request(audio, language=None)
    with torch.inference_mode():
        want = plain.model(**inputs).logits
        got = routed.model(**inputs).logits
    # the logits may differ in the last bits (another summation order), never more
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    requests = [ChunkRequest(a, 30) for a in audio]
    assert [(r.text, r.tokens) for r in routed.run(requests, 3)] == [(r.text, r.tokens) for r in plain.run(requests, 3)]


@routes
def test_bfloat16_weights_are_not_routed_and_an_onednn_product_that_differs_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.Linear(12, 4).to(torch.bfloat16))
    assert prepack.route_float32(model) == 1
    assert "forward" in model[0].__dict__ and "forward" not in model[1].__dict__
    real = torch.ops.mkldnn._linear_pointwise

    def off(*args: object) -> torch.Tensor:
        return real(*args) * 1.001  # a 0.1 % error: far beyond float32 rounding

    other = torch.nn.Linear(16, 12)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", off)
    prepack.float32_available.cache_clear()
    try:
        assert prepack.route_float32(other) == 0
        assert "forward" not in other.__dict__
    finally:
        monkeypatch.undo()
        prepack.float32_available.cache_clear()


packs32 = pytest.mark.skipif(not prepack.float32_packs(), reason="this oneDNN does not pack float32 linear weights")


@packs32
def test_float32_weights_are_packed_in_place_and_a_packed_product_that_differs_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Module()
    model.a = torch.nn.Linear(64, 48)
    model.b = torch.nn.Linear(48, 40, bias=False)
    model.embed = torch.nn.Embedding(10, 40)
    model.head = torch.nn.Linear(40, 10, bias=False)
    model.head.weight = model.embed.weight  # tied: left as it is
    x = torch.randn(5, 64)
    want = model.head(model.b(model.a(x)))
    wa, ba = model.a.weight.detach().clone(), model.a.bias.detach().clone()
    done = prepack.pack_linears(model)
    assert done.layers == 2 and done.weight_bytes == (48 * 64 + 40 * 48) * 4
    assert hasattr(model.a, "packed_weight") and hasattr(model.b, "packed_weight")
    assert not hasattr(model.a, "weight") and model.head.weight is model.embed.weight
    got = model.head(model.b(model.a(x)))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5) and not model.a(x).requires_grad
    for rows in (1, 2, 16, 480):  # any row count, whatever the blocking was chosen for
        y = torch.randn(rows, 64)
        assert torch.allclose(model.a(y), torch.nn.functional.linear(y, wa, ba), rtol=1e-5, atol=1e-5)

    real = torch.ops.mkldnn._linear_pointwise

    def off(*args: object) -> torch.Tensor:
        return real(*args) * 1.001  # a 0.1 % error: far beyond float32 rounding

    other = torch.nn.Linear(64, 48)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", off)
    assert prepack.pack_linears(other).layers == 0 and isinstance(other.weight, torch.nn.Parameter)
