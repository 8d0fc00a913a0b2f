"""Greedy decoding for a batch of Qwen3-ASR prompts: transformers' model forward, scribed's loop.

Contract:
- :func:`greedy_decode` returns the same tokens as ``model.generate(do_sample=False,
  num_beams=1, min_new_tokens=..., max_new_tokens=...)`` with the model's plain greedy
  generation config (tests compare the two): an int64 tensor ``[rows, steps]`` where a row
  that produced an end-of-text token continues with ``pad_id``, and decoding stops once every
  row has ended or ``max_new_tokens`` were produced. Positions follow ``generate``: cumulative
  sum of the attention mask minus one (0 on padding), then one more per step.
- The prompt is run ``prefill_rows`` rows at a time (all rows when None) into one
  :class:`~scribed.engine.kvcache.BatchCache`; every decode step then runs all rows together.
- With ``static`` the decode steps have fixed shapes over the whole reserved cache
  (:mod:`scribed.engine.graphstep`), and with ``graph`` on CUDA they replay one captured CUDA
  graph: the same tokens, without launching every kernel from Python each step.
- :func:`supports` says whether a generation config asks only for what this loop does; the
  caller falls back to ``generate`` otherwise (repetition penalties, suppressed tokens, ...).

Why: on a CPU the prompt (~13 audio tokens per second of audio) is compute-bound and gets
slower per row when batched (activations stop fitting in cache: 1.46 s per 30 s chunk alone,
2.35 s at 16 rows, 0.6B on 2 cores), while decode steps are bandwidth-bound and want the whole
batch; ``generate`` can only do both at one batch size. The loop also skips ``generate``'s
per-step bookkeeping (~17 ms per step at 16 rows here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from scribed.engine import graphstep
from scribed.engine.kvcache import BatchCache

# Generation-config fields that change greedy decoding, with the value that leaves it plain.
PLAIN = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
         "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,),
         "forced_eos_token_id": (None,), "encoder_repetition_penalty": (None, 1.0), "sequence_bias": (None,),
         "exponential_decay_length_penalty": (None,), "renormalize_logits": (None, False),
         "do_sample": (None, False), "num_beams": (None, 1), "logits_processor": (None,)}


@dataclass
class DecodeStats:
    """Where decoding time went, summed over calls (wall seconds; steps are one-token model calls).

    ``steps_by_rows`` maps a batch's row count to ``[steps, seconds]`` of its decode steps, so
    per-step figures by batch size come out of real work (``scribed bench``).
    """

    prompt_s: float = 0.0
    capture_s: float = 0.0  # CUDA graph captures of the decode step (engine.graphstep), warm-up included
    captures: int = 0
    steps_by_rows: dict[int, list[float]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(sum(entry[0] for entry in self.steps_by_rows.values()))

    @property
    def step_s(self) -> float:
        return sum(entry[1] for entry in self.steps_by_rows.values())

    def add_steps(self, rows: int, steps: int, seconds: float) -> None:
        entry = self.steps_by_rows.setdefault(rows, [0, 0.0])
        entry[0] += steps
        entry[1] += seconds


def supports(generation_config: Any) -> bool:
    """True when ``generation_config`` adds nothing to plain greedy decoding."""
    return all(getattr(generation_config, key, None) in plain for key, plain in PLAIN.items())


@torch.inference_mode()
def greedy_decode(model: Any, inputs: Mapping[str, torch.Tensor], *, max_new_tokens: int, min_new_tokens: int,
                  eos_ids: Sequence[int], pad_id: int, prefill_rows: int | None = None,
                  stats: DecodeStats | None = None, between: Callable[[], object] | None = None,
                  static: bool = False, graph: bool = False) -> torch.Tensor:
    """Decode ``inputs`` (a processor's batch: input_ids, attention_mask, input_features, ...);
    times go to ``stats`` when given (the prompt includes the audio encoder); ``between`` is
    called before every model call (the engine adjusts its thread count there).

    ``static``: decode steps with fixed shapes (:class:`~scribed.engine.graphstep.StaticStep`),
    and with ``graph`` on CUDA captured as a CUDA graph when the call has at least
    :data:`~scribed.engine.graphstep.MIN_STEPS` steps; the same tokens either way."""
    started = time.perf_counter()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rows, prompt = ids.shape
    device = ids.device
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    static = static and max_new_tokens > 1 and graphstep.usable(model)
    cache = BatchCache(layers, rows, max_new_tokens, full_span=static)
    positions = mask.long().cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 0)
    step_rows = rows if not prefill_rows else max(1, prefill_rows)
    firsts = []
    for start in range(0, rows, step_rows):
        part = slice(start, min(rows, start + step_rows))
        row_inputs = {key: value[part] for key, value in inputs.items()}
        row_inputs["position_ids"] = positions[part]
        if between:
            between()
        out = model(**row_inputs, cache=cache.view(part.start, part.stop), use_cache=True, logits_to_keep=1)
        firsts.append(out.logits[:, -1])
        del out
    # Every step's logits go to this one float32 buffer. float32: the same values and the same
    # first maximum, but torch's bf16 argmax is not vectorised (16 rows of the 0.6B's 151,936
    # logits: 4.4 ms against 0.8 ms on 2 cores of a Zen 5). One buffer: not a fresh 9.7 MB
    # tensor per step at 16 rows.
    logits = torch.cat(firsts).float()
    del firsts
    eos = torch.tensor(list(eos_ids), device=device)
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    position = positions[:, -1:]
    fixed = graphstep.StaticStep(model, cache, mask, position) if static else None
    if fixed is None:
        step_cache = cache.view(length=prompt)
        # the mask for every step at once; each step reads a longer prefix of it
        full_mask = torch.ones((rows, prompt + max_new_tokens), dtype=mask.dtype, device=device)
        full_mask[:, :prompt] = mask
    if device.type == "cuda":  # the prompt's kernels are queued, not done: time them to the end
        torch.cuda.synchronize(device)
    prompt_done = time.perf_counter()
    if fixed is not None and graph and device.type == "cuda" and max_new_tokens >= graphstep.MIN_STEPS:
        captured = fixed.capture()
        if stats is not None:
            stats.captures += int(captured)
            stats.capture_s += time.perf_counter() - prompt_done
        prompt_done = time.perf_counter()
    steps = 0
    for step in range(max_new_tokens):
        if step < min_new_tokens:
            logits[:, eos] = float("-inf")
        token = torch.where(unfinished, logits.argmax(-1), pad_id)
        tokens[:, step] = token
        steps = step + 1
        unfinished &= ~torch.isin(token, eos)
        # one host sync per step: the loop has to know when to stop
        if steps == max_new_tokens or not bool(unfinished.any()):
            break
        position = position + 1
        if between:
            between()
        if fixed is not None:
            logits.copy_(fixed.step(token, position, step))
            continue
        out = model(input_ids=token[:, None], attention_mask=full_mask[:, : prompt + step + 1],
                    position_ids=position, cache=step_cache, use_cache=True, logits_to_keep=1)
        logits.copy_(out.logits[:, -1])
    if stats is not None:
        # the first token comes from the prompt pass; each further one is a decode step
        stats.prompt_s += prompt_done - started
        stats.add_steps(rows, steps - 1, time.perf_counter() - prompt_done)
    return tokens[:, :steps]
