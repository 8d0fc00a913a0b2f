"""Qwen3-ASR's audio encoder with its convolutional front end run a few windows at a time.

Contract:
- :func:`slice_front_end` makes ``model``'s audio encoder (a transformers ``Qwen3ASREncoder``)
  run its three convolutions (and their GELUs) on at most ``windows`` of its 100-frame windows
  at a time (never on a single window when there are more: oneDNN picks another float32
  kernel for a batch of one), writing each slice's result into one output, and otherwise do
  exactly what the stock ``forward`` does (same cu_seqlens, positional embedding, packing,
  layers, final norm). Windows never depend on each other, so the output is the stock one bit
  for bit as long as the convolution kernels give the same bits for a slice as for the whole
  batch: a probe checks that once at patch time (random windows, whole vs sliced) and nothing
  is patched when it fails; tests compare whole models. It returns whether it patched:
  False, changing nothing, also for a model without that encoder.
- Only the encoder's last hidden state is returned (no recorded hidden states or attentions:
  nothing in scribed asks for them).
- :func:`group_window_attention` makes the encoder layers' self-attention run all attention
  windows of one length in one call, instead of one call per window (transformers does that for
  every attention implementation but flash-attention's), with the stock output bit for bit: a
  probe compares the two once at patch time, random windows of mixed lengths, and nothing is
  patched when they differ. The grouping is computed once per encoder call and shared by its
  layers.

Why (windows): the stock forward runs the first convolution on every window of the chunk at once; for a
30 s chunk that is one [30, 480, 64, 50] activation (184 MB in float32) plus its GELU's copy,
the largest transient of a whole model call -- larger than one row's key/value cache. Eight
windows at a time hold a quarter of it (docs/performance.md).
Why (attention): a 30 s chunk has four 8 s attention windows, so a GPU batch of 58 chunks made
232 attention calls in each of the 18 layers (plus the splits and the join), each a few
launches from Python; grouped, about two per layer.
"""

from __future__ import annotations

import itertools
import types
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen3_asr import modeling_qwen3_asr as stock

#: 100-frame windows (1 s of audio each) through the convolutions at a time: on a CPU (one
#: prompt row per call) and on a GPU (every row of the batch at once: wider slices keep the
#: kernels large there).
CPU_WINDOWS = 8
CUDA_WINDOWS = 64


def slice_front_end(model: Any, windows: int = CPU_WINDOWS) -> bool:
    """Patch ``model``'s audio encoder in place (see the module contract); True when done."""
    tower = _tower(model)
    if tower is None or not all(hasattr(tower, name) for name in ("conv2d1", "conv2d2", "conv2d3", "conv_out")):
        return False
    step = max(2, int(windows))
    if not _same_bits(tower, step):
        return False
    tower.scribed_windows = step
    tower.forward = types.MethodType(_forward, tower)
    return True


def _tower(model: Any) -> Any:
    return next((m for m in model.modules() if isinstance(m, stock.Qwen3ASREncoder)), None)


def _slices(total: int, step: int) -> list[slice]:
    """``[0, total)`` in slices of ``step``; a last slice of one window joins the one before."""
    starts = list(range(0, total, step))
    if len(starts) > 1 and total - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], total], strict=True)]


def _stack(tower: Any, x: torch.Tensor) -> torch.Tensor:
    x = F.gelu(tower.conv2d1(x))
    x = F.gelu(tower.conv2d2(x))
    return F.gelu(tower.conv2d3(x))


def _front_end(tower: Any, chunked: torch.Tensor) -> torch.Tensor:
    """The convolutions + GELUs on ``chunked`` ([windows, 1, mel, frames]) slice by slice, into one tensor."""
    out: torch.Tensor | None = None
    for part in _slices(chunked.shape[0], tower.scribed_windows):
        done = _stack(tower, chunked[part])
        if out is None:
            out = done.new_empty((chunked.shape[0], *done.shape[1:]))
        out[part] = done
    assert out is not None
    return out


def _same_bits(tower: Any, step: int) -> bool:
    """Whether slices of ``step`` and of 2 windows give the whole batch's bits (random probe windows)."""
    weight = tower.conv2d1.weight
    g = torch.Generator().manual_seed(0)
    probe = torch.randn((step + 2, 1, tower.config.num_mel_bins, 2 * tower.n_window), generator=g)
    probe = probe.to(device=weight.device, dtype=weight.dtype)
    with torch.inference_mode():
        whole = _stack(tower, probe)
        return all(torch.equal(_stack(tower, probe[part]), whole[part]) for part in (slice(0, step), slice(step, None)))


def _forward(self: Any, input_features: torch.Tensor, input_features_mask: torch.Tensor,
             **kwargs: Any) -> BaseModelOutputWithPooling:
    # transformers' Qwen3ASREncoder.forward (5.x), with the convolutions in slices
    batch_size, num_mel_bins, padded_feature_length = input_features.shape
    chunk_len = self.n_window * 2
    if padded_feature_length % chunk_len != 0:
        raise ValueError(f"Qwen3ASREncoder expects `padded_feature_length` to be a multiple of "
                         f"`n_window * 2` ({chunk_len}), but got {padded_feature_length}.")
    num_chunks = padded_feature_length // chunk_len
    feature_lens = input_features_mask.sum(-1).to(torch.long)
    chunk_lengths = input_features_mask.view(batch_size, num_chunks, chunk_len).sum(dim=-1).reshape(-1).to(torch.long)
    cu_seqlens = stock.get_audio_cu_seqlens(chunk_lengths, feature_lens, self.n_window_infer, self.n_window,
                                            kwargs=kwargs)
    max_seqlen = stock.get_max_seqlen(cu_seqlens, self.config, kwargs=kwargs)
    chunked = (input_features.view(batch_size, num_mel_bins, num_chunks, chunk_len).permute(0, 2, 1, 3)
               .reshape(batch_size * num_chunks, 1, num_mel_bins, chunk_len))
    conv_out = _front_end(self, chunked)
    total_chunks, conv_channels, freq_bins, time_steps = conv_out.size()
    conv_out = self.conv_out(
        conv_out.permute(0, 3, 1, 2).contiguous().view(total_chunks, time_steps, conv_channels * freq_bins))
    conv_out += self.positional_embedding.positional_embedding[:time_steps].to(conv_out.dtype)
    chunk_post_cnn_lens = self._post_cnn_length(chunk_lengths)
    valid_mask = torch.arange(time_steps, device=input_features.device) < chunk_post_cnn_lens.unsqueeze(1)
    valid_indices = valid_mask.flatten().nonzero().squeeze(-1)
    hidden_states = torch.index_select(conv_out.reshape(-1, conv_out.shape[-1]), 0, valid_indices)
    for encoder_layer in self.layers:
        hidden_states = encoder_layer(hidden_states, cu_seqlens, max_seqlen=max_seqlen, **kwargs)[0]
    return BaseModelOutputWithPooling(last_hidden_state=self.ln_post(hidden_states))


@dataclass
class _Groups:
    """The windows of the last ``cu_seqlens`` seen, by length: ``(length, count, row index)``."""

    key: torch.Tensor | None = None
    groups: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)

    def of(self, cu_seqlens: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        if self.key is not cu_seqlens:  # one encoder call: every layer gets the same tensor
            bounds = cu_seqlens.tolist()
            starts: dict[int, list[int]] = {}
            for a, b in itertools.pairwise(bounds):
                if b > a:
                    starts.setdefault(b - a, []).append(a)
            self.groups = [(length, len(first), (torch.tensor(first)[:, None] + torch.arange(length)).reshape(-1)
                            .to(cu_seqlens.device)) for length, first in starts.items()]
            self.key = cu_seqlens
        return self.groups


def _grouped(self: Any, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int | None = None,
             **kwargs: Any) -> torch.Tensor:
    # transformers' Qwen3ASRAudioAttention.forward (5.x) without flash-attention, one call per window length
    seq_length = hidden_states.shape[0]
    q, k, v = (proj(hidden_states).reshape(seq_length, self.num_heads, -1)
               for proj in (self.q_proj, self.k_proj, self.v_proj))
    out = torch.empty_like(q)
    for length, count, index in self.scribed_groups.of(cu_seqlens):
        q_w, k_w, v_w = (t.index_select(0, index).view(count, length, self.num_heads, -1).transpose(1, 2)
                         for t in (q, k, v))
        done = F.scaled_dot_product_attention(q_w, k_w, v_w, dropout_p=0.0, scale=self.scaling, is_causal=False)
        out.index_copy_(0, index, done.transpose(1, 2).reshape(count * length, self.num_heads, -1))
    return self.out_proj(out.reshape(seq_length, -1))


def group_window_attention(model: Any) -> bool:
    """Patch ``model``'s audio encoder layers in place (see the module contract); True when done."""
    tower = _tower(model)
    layers = getattr(tower, "layers", None)
    if tower is None or not layers:
        return False
    attention = layers[0].self_attn
    names = ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "embed_dim", "config")
    if not all(hasattr(attention, name) for name in names):
        return False
    if stock.is_flash_attention_requested(attention.config):  # varlen flash-attention: one call already
        return False
    like = next(attention.parameters())  # a bias: weights may be packed away (engine.prepack)
    g = torch.Generator().manual_seed(0)
    probe = torch.randn((37, attention.embed_dim), generator=g).to(device=like.device, dtype=like.dtype)
    cu_seqlens = torch.tensor([0, 13, 26, 30, 37], dtype=torch.int32, device=like.device)  # 13, 13, 4, 7
    attention.scribed_groups = _Groups()
    try:
        with torch.inference_mode():
            same = torch.equal(_grouped(attention, probe, cu_seqlens), attention(probe, cu_seqlens))
    except RuntimeError:
        same = False
    if not same:
        del attention.scribed_groups
        return False
    shared = _Groups()
    for layer in layers:
        layer.self_attn.scribed_groups = shared
        layer.self_attn.forward = types.MethodType(_grouped, layer.self_attn)
    return True
