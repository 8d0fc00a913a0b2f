"""Checkpoints of the real Qwen3-ASR architecture with random weights (tests and ``scribed bench``).

Contract: :func:`build_random_checkpoint` writes a folder that :class:`scribed.engine.qwen3.AsrEngine`
loads like a released checkpoint (config, weights, processor, tokenizer), from the real tokenizer
files and one of :data:`ARCHITECTURES`; :func:`build_random_aligner` writes a forced aligner
(``Qwen3ASRForTokenClassification`` with the 5000-class timestamp head and the aligner's prompt
format) that :class:`scribed.engine.align.WordAligner` loads like the released
Qwen3-ForcedAligner. No real weights are reachable offline, so speed and memory are measured on
these. Not used by the production transcription path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AddedToken,
    AutoTokenizer,
    Qwen3ASRConfig,
    Qwen3ASRForConditionalGeneration,
    Qwen3ASRForTokenClassification,
)

from scribed.engine.qwen3 import CHAT_TEMPLATE

# Written last: its presence means the folder is complete (bench caches builds by it).
MARKER = "scribed-random-weights.json"

# Architectures of the released checkpoints (0.6B from its config.json; 1.7B differs in the
# encoder (24 x 1024) and the decoder (hidden 2048, intermediate 6144)).
ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "0.6b": {
        "audio": dict(encoder_layers=18, encoder_attention_heads=14, encoder_ffn_dim=3584, d_model=896,
                      output_dim=1024, downsample_hidden_size=480, n_window=50, n_window_infer=800),
        "text": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, max_position_embeddings=65536, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, vocab_size=151936, tie_word_embeddings=True),
    },
    "1.7b": {
        "audio": dict(encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096, d_model=1024,
                      output_dim=2048, downsample_hidden_size=480, n_window=50, n_window_infer=800),
        "text": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, max_position_embeddings=65536, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, vocab_size=151936, tie_word_embeddings=True),
    },
    "tiny": {
        "audio": dict(encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
                      output_dim=64, downsample_hidden_size=16, n_window=50, n_window_infer=800),
        "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=32, max_position_embeddings=8192, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, vocab_size=151936, tie_word_embeddings=True),
    },
}

# The released aligner: one timestamp class per 80 ms, 5000 classes (400 s); ``<timestamp>`` id 151705.
ALIGNER_CLASSES = 5000
TIMESTAMP_TOKEN = "<timestamp>"

# The aligner's prompt: the audio, then each word followed by two ``<timestamp>`` markers (its
# start and its end), no chat roles. The released checkpoint ships an equivalent template.
ALIGNER_CHAT_TEMPLATE = (
    "{%- for m in messages if m.content is not string -%}{%- for c in m.content -%}"
    "{%- if c.type == 'text' -%}{{- c.text + '<timestamp><timestamp>' -}}"
    "{%- elif c.type == 'audio' or 'audio' in c or 'audio_url' in c -%}"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}"
)


def _start(out_dir: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], size: str, seed: int,
           template: str) -> tuple[Path, Any]:
    """The output folder (created) and a processor with the real tokenizer and ``template``."""
    from transformers.models.qwen3_asr import Qwen3ASRFeatureExtractor, Qwen3ASRProcessor

    if size not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {size!r}; expected one of {sorted(ARCHITECTURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    if template == ALIGNER_CHAT_TEMPLATE and tokenizer.convert_tokens_to_ids(TIMESTAMP_TOKEN) is None:
        # the ASR tokenizer lacks the aligner's marker; added, it takes the released id (151705)
        tokenizer.add_tokens([AddedToken(TIMESTAMP_TOKEN, special=True, normalized=False)], special_tokens=True)
    return out, Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tokenizer,
                                  chat_template=template)


def build_random_checkpoint(out_dir: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], *,
                            size: str = "tiny", seed: int = 0, dtype: str = "float32") -> Path:
    """Write a loadable checkpoint (config, random weights, processor, tokenizer) to ``out_dir``.

    ``tokenizer_dir`` holds the real Qwen3-ASR tokenizer files (vocab.json, merges.txt,
    tokenizer_config.json). ``size`` is one of :data:`ARCHITECTURES`; the weights are stored in
    ``dtype``. Returns ``out_dir``.
    """
    out, processor = _start(out_dir, tokenizer_dir, size, seed, CHAT_TEMPLATE)
    arch = ARCHITECTURES[size]
    config = Qwen3ASRConfig(audio_config=dict(arch["audio"]), text_config=dict(arch["text"]))
    model = Qwen3ASRForConditionalGeneration(config).to(getattr(torch, dtype))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"architecture": size, "seed": seed}))
    return out


def build_random_aligner(out_dir: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], *,
                         size: str = "tiny", seed: int = 0, dtype: str = "float32",
                         fixed_class: int | None = None) -> Path:
    """Write a loadable forced aligner (config, random weights, processor, tokenizer) to ``out_dir``.

    Same arguments as :func:`build_random_checkpoint`; the model is the token-classification
    variant whose head predicts a timestamp class (80 ms each) at every ``<timestamp>`` marker.
    ``fixed_class``: the head always predicts that class (every time is ``fixed_class`` x 80 ms),
    so tests can check exactly where the pipeline puts the aligner's times.
    """
    out, processor = _start(out_dir, tokenizer_dir, size, seed, ALIGNER_CHAT_TEMPLATE)
    tokenizer = processor.tokenizer
    arch = ARCHITECTURES[size]
    config = Qwen3ASRConfig(audio_config=dict(arch["audio"]), text_config=dict(arch["text"]),
                            num_labels=ALIGNER_CLASSES, architectures=["Qwen3ASRForTokenClassification"],
                            timestamp_token_id=tokenizer.convert_tokens_to_ids(TIMESTAMP_TOKEN),
                            token_classification_bias=fixed_class is not None)
    model = Qwen3ASRForTokenClassification(config)
    if fixed_class is not None:
        with torch.no_grad():
            model.score.weight.zero_()
            model.score.bias.zero_()
            model.score.bias[fixed_class] = 10.0
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"architecture": size, "seed": seed, "kind": "forced-aligner"}))
    return out
