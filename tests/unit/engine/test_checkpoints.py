"""Tests for scribed.engine.checkpoints: random-weight checkpoints of the real architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scribed.engine.checkpoints import ARCHITECTURES, MARKER, build_random_checkpoint


def test_released_architectures_are_described() -> None:
    assert {"0.6b", "1.7b", "tiny"} <= set(ARCHITECTURES)
    for arch in ARCHITECTURES.values():
        assert arch["audio"]["output_dim"] == arch["text"]["hidden_size"]  # the projector feeds the decoder
        assert arch["text"]["vocab_size"] == 151936


def test_a_tiny_checkpoint_loads_and_runs_in_the_stored_dtype(tmp_path: Path, tokenizer_dir: Path) -> None:
    import torch

    from scribed.engine.qwen3 import AsrEngine
    from scribed.engine.types import ChunkRequest

    out = build_random_checkpoint(tmp_path / "ckpt", tokenizer_dir, size="tiny", seed=3, dtype="bfloat16")
    assert json.loads((out / MARKER).read_text()) == {"architecture": "tiny", "seed": 3}
    assert json.loads((out / "config.json").read_text())["model_type"].startswith("qwen3_asr")
    engine = AsrEngine(out, device="cpu", dtype="bfloat16")
    engine.load()
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    (result,) = engine.run([ChunkRequest(np.zeros(16000, np.float32), 4, min_new_tokens=4)], 1)
    assert result.tokens == 4  # random weights: the forced minimum makes the work fixed


def test_same_seed_same_weights(tmp_path: Path, tokenizer_dir: Path) -> None:
    from safetensors.numpy import load_file

    a = load_file(build_random_checkpoint(tmp_path / "a", tokenizer_dir, seed=1) / "model.safetensors")
    b = load_file(build_random_checkpoint(tmp_path / "b", tokenizer_dir, seed=1) / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_unknown_size_is_refused(tmp_path: Path, tokenizer_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown architecture '3b'"):
        build_random_checkpoint(tmp_path, tokenizer_dir, size="3b")


def test_a_tiny_aligner_has_the_released_layout(tmp_path: Path, tokenizer_dir: Path) -> None:
    from transformers import AutoModelForTokenClassification, AutoProcessor

    from scribed.engine.checkpoints import ALIGNER_CLASSES, build_random_aligner

    out = build_random_aligner(tmp_path / "aligner", tokenizer_dir, fixed_class=7)
    model = AutoModelForTokenClassification.from_pretrained(out, local_files_only=True)
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    assert type(model).__name__ == "Qwen3ASRForTokenClassification" and model.config.num_labels == ALIGNER_CLASSES
    assert processor.tokenizer.convert_tokens_to_ids("<timestamp>") == model.config.timestamp_token_id == 151705
    silence = np.zeros(16000, np.float32)
    inputs, words = processor.prepare_forced_aligner_inputs(silence, "two words", language="English")
    assert words == [["two", "words"]]
    assert int((inputs["input_ids"] == 151705).sum()) == 4  # a start and an end marker per word
    logits = model(**inputs).logits
    decoded = processor.decode_forced_alignment(logits, inputs["input_ids"], words, timestamp_token_id=151705)
    assert decoded == [[{"text": "two", "start_time": 0.56, "end_time": 0.56},
                        {"text": "words", "start_time": 0.56, "end_time": 0.56}]]  # class 7 x 80 ms
