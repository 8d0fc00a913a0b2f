"""Tests for scribed.engine.encoder: the audio encoder's convolutions in slices, same output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.tinymodel import _speechlike
from scribed.engine import encoder
from scribed.engine.qwen3 import AsrEngine
from scribed.engine.types import ChunkRequest


def _inputs(engine: AsrEngine, seconds: tuple[float, ...]) -> dict[str, torch.Tensor]:
    audio = [_speechlike(np.random.default_rng(int(s * 10)), s) for s in seconds]
    inputs = engine.processor.apply_transcription_request(audio, language=None)
    inputs["input_features"] = inputs["input_features"].to(engine.dtype)
    return inputs


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_sliced_encoder_gives_the_stock_output_bit_for_bit(tiny_model: Path, dtype: str) -> None:
    engine = AsrEngine(tiny_model, device="cpu", dtype=dtype, name="tiny")
    engine.slice_encoder = False
    engine.load()
    tower = engine.model.model.audio_tower
    # two rows of different lengths (padding), more windows than most slices tried below
    inputs = _inputs(engine, (11.3, 4.2))
    features, mask = inputs["input_features"], inputs["input_features_mask"]
    with torch.inference_mode():
        want = tower(input_features=features, input_features_mask=mask).last_hidden_state
        assert encoder.slice_front_end(engine.model, 3)
        for windows in (2, 3, 8, 100):
            tower.scribed_windows = windows
            got = tower(input_features=features, input_features_mask=mask).last_hidden_state
            assert got.shape == want.shape and torch.equal(got, want), windows


def test_no_convolution_sees_more_windows_than_a_slice(tiny_model: Path) -> None:
    engine = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    engine.load()  # slice_encoder is on by default
    tower = engine.model.model.audio_tower
    seen: list[int] = []
    hooks = [getattr(tower, name).register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
             for name in ("conv2d1", "conv2d2", "conv2d3")]
    try:
        inputs = _inputs(engine, (20.0,))
        with torch.inference_mode():
            engine.model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    windows = inputs["input_features"].shape[-1] // (2 * tower.n_window)
    assert windows > encoder.CPU_WINDOWS  # so slicing had something to do
    assert seen and max(seen) == encoder.CPU_WINDOWS
    assert sum(seen) == 3 * windows  # every window went through each of the three convolutions once


def test_a_sliced_engine_transcribes_as_the_stock_one(tiny_model: Path) -> None:
    stock = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    stock.slice_encoder = False
    sliced = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    stock.load()
    sliced.load()
    inputs = _inputs(stock, (12.5, 3.0, 7.7))
    with torch.inference_mode():
        assert torch.equal(sliced.model(**inputs).logits, stock.model(**inputs).logits)
    audio = [_speechlike(np.random.default_rng(seed), 9.0 + seed) for seed in range(3)]
    requests = [ChunkRequest(a, 30) for a in audio]
    assert [(r.text, r.tokens) for r in sliced.run(requests, 3)] == [(r.text, r.tokens) for r in stock.run(requests, 3)]


def test_slices_cover_every_window_once_and_none_holds_a_single_window_alone() -> None:
    for total in range(1, 40):
        for step in (2, 3, 8):
            parts = encoder._slices(total, step)
            assert [i for p in parts for i in range(total)[p]] == list(range(total))
            assert all(p.stop - p.start <= step + 1 for p in parts)
            assert total == 1 or all(p.stop - p.start >= 2 for p in parts)


def test_a_probe_that_finds_other_bits_leaves_the_encoder_stock(tiny_model: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    engine = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    engine.slice_encoder = False
    engine.load()
    real = encoder._stack
    calls = []

    def off_by_a_bit(tower: object, x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        out = real(tower, x)
        return out if len(calls) == 1 else out + 1e-6  # the slices differ from the whole

    monkeypatch.setattr(encoder, "_stack", off_by_a_bit)
    assert encoder.slice_front_end(engine.model) is False
    assert "forward" not in vars(engine.model.model.audio_tower)
    assert calls[0] == encoder.CPU_WINDOWS + 2


def test_a_model_without_that_encoder_is_left_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert encoder.slice_front_end(model) is False
    assert not hasattr(model, "scribed_windows")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_grouped_window_attention_gives_the_stock_output_bit_for_bit(tiny_model: Path, dtype: str) -> None:
    engine = AsrEngine(tiny_model, device="cpu", dtype=dtype, name="tiny")
    engine.group_attention = False
    engine.load()
    tower = engine.model.model.audio_tower
    inputs = _inputs(engine, (29.7, 11.3, 4.2, 30.0))  # several 8 s windows per row, tails of other lengths
    features, mask = inputs["input_features"], inputs["input_features_mask"]
    calls: list[tuple[int, ...]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(q: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(tuple(q.shape))
        return real(q, *args, **kwargs)

    with torch.inference_mode():
        want = tower(input_features=features, input_features_mask=mask).last_hidden_state
        assert encoder.group_window_attention(engine.model)
        try:
            torch.nn.functional.scaled_dot_product_attention = counting
            got = tower(input_features=features, input_features_mask=mask).last_hidden_state
        finally:
            torch.nn.functional.scaled_dot_product_attention = real
    assert got.shape == want.shape and torch.equal(got, want)
    layers = len(tower.layers)
    windows = sum(count for _length, count, _index in tower.layers[0].self_attn.scribed_groups.groups)
    assert windows > len({length for length, _c, _i in tower.layers[0].self_attn.scribed_groups.groups}) > 1
    assert len(calls) == layers * len(tower.layers[0].self_attn.scribed_groups.groups)  # one call per length
    assert sum(shape[0] for shape in calls) == layers * windows  # every window attended once per layer


def test_the_engine_groups_the_encoders_attention_and_transcribes_the_same(tiny_model: Path) -> None:
    plain = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    plain.group_attention = False
    grouped = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    grouped.load()
    assert hasattr(grouped.model.model.audio_tower.layers[0].self_attn, "scribed_groups")
    requests = [ChunkRequest(_speechlike(np.random.default_rng(i), 6.0 + 5 * i), 30) for i in range(3)]
    assert [r.text for r in grouped.run(requests, 3)] == [r.text for r in plain.run(requests, 3)]
