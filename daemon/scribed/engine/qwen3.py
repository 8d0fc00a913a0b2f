"""The model: Qwen3-ASR through transformers' native classes (the ``transformers`` backend).

Only this module, :mod:`scribed.engine.checkpoints` and the model parts this module uses
(:mod:`~scribed.engine.kvcache`, :mod:`~scribed.engine.greedy`, :mod:`~scribed.engine.graphstep`,
:mod:`~scribed.engine.prepack`, :mod:`~scribed.engine.encoder`, the aligner) import
torch/transformers in production code
(:mod:`scribed.tools.bench` is the other, outside the engine contract).

Contract:
- :class:`AsrEngine` loads a checkpoint from a local folder (never the network: ``HF_HUB_OFFLINE``
  is set before transformers is imported and every load uses ``local_files_only=True``) and
  turns batches of 16 kHz mono chunks into :class:`ChunkResult`; it implements
  :class:`~scribed.engine.types.Engine`. Callers (:mod:`scribed.engine.pipeline`) decide
  chunking, ordering and text assembly; this module only runs the model.
- ``device="auto"``: CUDA with bfloat16 + SDPA attention when a GPU is present, else CPU float32.
- Decoding: scribed's greedy loop (:mod:`scribed.engine.greedy`, the same tokens as
  ``generate``) on a pre-sized cache (:mod:`scribed.engine.kvcache`); ``generate`` only for a
  generation config that asks for more than greedy decoding. On CUDA the decode steps have
  fixed shapes and replay one CUDA graph per model call (:mod:`scribed.engine.graphstep`).
- A model call takes at most ``batch_size`` requests and no more than the memory budget holds
  (:meth:`AsrEngine.rows_for`); a CUDA out-of-memory error halves the batch and retries; it
  never fails a file by itself. Memory freed by a run is handed back to the system after it.
- On a CPU the thread count follows the cores other processes leave free
  (:mod:`scribed.engine.cpushare`), rechecked between model calls.
- Background behaviour: before torch loads, :mod:`scribed.engine.threadenv` bounds how long
  OpenMP threads spin while they wait (spinning threads collapse under a competing process).
- The audio encoder's convolutional front end runs a few 1 s windows at a time
  (:mod:`scribed.engine.encoder`: bit-identical output, a smaller peak).
- Weights load straight in the target dtype (no full-size float32 copy on the way); checkpoints
  stored in that dtype load without any conversion.
"""

from __future__ import annotations

import os

from scribed.engine import threadenv  # first: it sets OpenMP's wait policy, read when torch loads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from transformers import (
    AutoProcessor,
    Qwen3ASRForConditionalGeneration,
)
from transformers.utils import logging as hf_logging

from scribed.engine import budget, encoder, greedy, kvcache, prepack
from scribed.engine.cpushare import CoreShare
from scribed.engine.types import ChunkRequest, ChunkResult
from scribed.errors import ModelError
from scribed.system.libc import libc

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

# A chat template equivalent to the released Qwen3-ASR one (system prompt = context, one user
# turn holding the audio), written so that ``apply_transcription_request`` can prefill the
# assistant turn with "language X<asr_text>". The original package's template ignores
# assistant messages, so it cannot force a language; checkpoints that ship a template keep theirs.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages if m.role == 'system' -%}"
    "{%- if m.content is string -%}{%- set ns.system = ns.system + m.content -%}"
    "{%- else -%}{%- for c in m.content if c.type == 'text' -%}{%- set ns.system = ns.system + c.text -%}"
    "{%- endfor -%}{%- endif -%}{%- endfor -%}"
    "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' -}}"
    "{%- for m in messages if m.role != 'system' -%}"
    "{{- '<|im_start|>' + m.role + '\\n' -}}"
    "{%- if m.content is string -%}{{- m.content -}}{%- else -%}{%- for c in m.content -%}"
    "{%- if c.type == 'audio' or 'audio' in c or 'audio_url' in c -%}"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- elif c.type == 'text' -%}{{- c.text -}}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

EOS_TOKEN_IDS = (151643, 151645)  # <|endoftext|>, <|im_end|>

# model.batch_size: auto, by device type. CPU: decode steps are bandwidth-bound and the prompt
# runs a row at a time, so 16 rows of 30 s chunks share each weight read within the memory
# budget. CUDA: a replayed decode step (engine.graphstep) costs about the same from 1 to 128
# rows; free GPU memory bounds it further (rows_for), and an out-of-memory error halves it.
AUTO_BATCH_SIZE = {"cpu": 16, "cuda": 128}


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """Map config strings to torch objects; ``auto`` prefers CUDA + bfloat16."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device is {device!r} but no CUDA GPU is available (use 'auto' or 'cpu')")
    dev = torch.device(device)
    if dtype == "auto":
        # bf16 on CPUs that compute it natively (AVX512-BF16/AMX): 2.6x faster than float32 on
        # the 0.6B here (docs/performance.md) with identical fixture output; emulated bf16 on
        # older CPUs is slower, so those keep float32.
        native = dev.type == "cpu" and prepack.native_bf16()
        dtype = "bfloat16" if dev.type == "cuda" or native else "float32"
    return dev, getattr(torch, dtype)


def release_freed_memory() -> None:
    """Give memory freed by a finished batch back to the system (glibc keeps it otherwise, and
    an idle worker would sit on its largest batch's footprint)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


_LIBC = libc() if hasattr(libc(), "malloc_trim") else None  # glibc only


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class AsrEngine:
    """A loaded Qwen3-ASR model. Not thread-safe: one caller at a time (the worker loop)."""

    def __init__(self, model_path: str | os.PathLike[str], *, device: str = "auto", dtype: str = "auto",
                 name: str | None = None) -> None:
        self.model_path = Path(model_path)
        self.name = name or self.model_path.name
        self.device, self.dtype = resolve_device(device, dtype)
        self.model: Any = None
        self.processor: Any = None
        self.load_seconds = 0.0
        self.batch_size_used = 0
        self.greedy_loop = True
        self.stats = greedy.DecodeStats()  # what decoding cost so far (bench, logs); reset freely
        # Prompt rows run together: on a CPU one at a time (compute-bound, and slower per row in
        # a batch: engine.greedy), on a GPU the whole batch.
        self.prefill_rows: int | None = 1 if self.device.type == "cpu" else None
        # On a GPU, decode steps with fixed shapes replayed as one CUDA graph per model call
        # (engine.graphstep: eager steps there are bound by launching kernels from Python)
        self.static_steps = self.device.type == "cuda"
        self.cuda_graphs = True
        # On a CPU: as many threads as other processes leave cores free (engine.cpushare)
        self.core_share: CoreShare | None = CoreShare(cpu_threads()) if self.device.type == "cpu" else None
        self.threads_used: set[int] = set()
        self.memory_budget_bytes: int | None = None  # None: automatic (rows_for); the bench sets one
        # CPU linear layers run by oneDNN (engine.prepack): bf16 weights packed at load (same
        # bits, faster), float32 ones as they are (last-bit differences from MKL, faster)
        self.prepack = True
        self.slice_encoder = True  # engine.encoder: the convolutions in slices of windows
        self.group_attention = True  # engine.encoder: the encoder's attention, one call per window length
        self.packed = prepack.Packed()
        self.routed_float32 = 0

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({cpu_threads()} threads)"

    def load(self) -> None:
        """Load processor and weights (idempotent). Raises ModelError with the fix on failure."""
        if self.loaded:
            return
        start = time.perf_counter()
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads() if self.core_share is None else self.core_share.current)
            if threadenv.TORCH_WAS_LOADED:
                logger.debug("torch was imported before scribed.engine.qwen3: OpenMP keeps its own wait policy")
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
            if not getattr(self.processor, "chat_template", None):
                self.processor.chat_template = CHAT_TEMPLATE
            # dtype: each tensor is converted as it is read, never a whole float32 copy (and a
            # checkpoint stored in the target dtype is not converted at all). device_map would
            # skip the host copy on CUDA but needs accelerate, which scribed does not depend on.
            self.model = Qwen3ASRForConditionalGeneration.from_pretrained(
                self.model_path, local_files_only=True, dtype=self.dtype, attn_implementation="sdpa",
            ).to(self.device)
        except (OSError, ValueError, KeyError) as exc:
            self.processor = self.model = None
            raise ModelError(f"cannot load the model from {str(self.model_path)!r}: {exc}") from exc
        self.model.eval()
        # the decoder's one-token steps read a pre-sized cache (engine.kvcache); the audio
        # encoder and the prompt keep transformers' SDPA
        kvcache.register()
        self.model.set_attn_implementation({"text_config": kvcache.ATTENTION})
        self.greedy_loop = greedy.supports(self.model.generation_config)
        # the audio encoder's convolutions a few windows at a time: same output, a quarter of
        # the largest transient of a call (engine.encoder)
        if self.slice_encoder:
            windows = encoder.CUDA_WINDOWS if self.device.type == "cuda" else encoder.CPU_WINDOWS
            if not encoder.slice_front_end(self.model, windows):
                logger.debug("audio encoder left stock (not the known encoder, or slices gave other bits)")
        # its attention windows of one length in one call each (bit-identical, engine.encoder)
        if self.group_attention and not encoder.group_window_attention(self.model):
            logger.debug("audio encoder attention left stock (not the known encoder, or grouping gave other bits)")
        if self.device.type == "cpu" and self.prepack:
            self.packed = prepack.pack_linears(self.model)
            logger.debug("{} linear weights pre-packed for oneDNN ({:.2f} GB; {:.2f} GB of file pages released)",
                         self.packed.layers, self.packed.weight_bytes / 1e9, self.packed.released_bytes / 1e9)
            self.routed_float32 = prepack.route_float32(self.model)
            if self.routed_float32:
                logger.debug("{} float32 linear layers run by oneDNN", self.routed_float32)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.load_seconds = time.perf_counter() - start

    def unload(self) -> None:
        """Free the weights (and GPU memory); the next :meth:`run` reloads."""
        self.model = self.processor = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def peak_memory_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None

    # -- inference -----------------------------------------------------------------------------
    @property
    def auto_batch_size(self) -> int:
        """The batch size ``model.batch_size: auto`` stands for on this engine's device."""
        return AUTO_BATCH_SIZE.get(self.device.type, 16)

    def run(self, requests: Sequence[ChunkRequest], batch_size: int | None, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        """Transcribe ``requests`` in order-preserving batches of up to ``batch_size``
        (None: :attr:`auto_batch_size`).

        Requests are batched in the order given (callers sort by length so padding stays small);
        only requests with the same language and prompt share a batch, and no more than the
        memory budget allows (:meth:`rows_for`). ``on_done(n)`` is called after each batch with
        the number of requests finished (progress, watchdog pings).
        """
        self.load()
        results: list[ChunkResult | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        size = self.auto_batch_size if batch_size is None else max(1, batch_size)
        while pending:
            head = requests[pending[0]]
            group = [i for i in pending[: size * 4]
                     if requests[i].language == head.language and requests[i].prompt == head.prompt]
            group = group[: self.rows_for([requests[i] for i in group[:size]], size)]
            try:
                outs = self._generate([requests[i] for i in group])
            except torch.OutOfMemoryError:
                if len(group) == 1:
                    raise
                size = max(1, len(group) // 2)
                torch.cuda.empty_cache()
                continue
            self.batch_size_used = max(self.batch_size_used, len(group))
            for i, out in zip(group, outs, strict=True):
                results[i] = out
            taken = set(group)
            pending = [i for i in pending if i not in taken]
            if on_done:
                on_done(len(group))
        release_freed_memory()
        return [r for r in results if r is not None]

    def rows_for(self, batch: Sequence[ChunkRequest], cap: int) -> int:
        """Rows of ``batch`` (longest first) that one call may take: ``cap`` at most, and no more
        than fit the memory budget (CPU: budget.cpu_budget_bytes; CUDA: half the free memory)."""
        if not batch:
            return 0
        longest = max(len(r.audio) for r in batch) / 16000
        positions = budget.prompt_positions(longest) + max(r.max_new_tokens for r in batch)
        text_config = self.model.config.get_text_config(decoder=True)
        per_row = budget.kv_bytes_per_row(text_config, positions, torch.finfo(self.dtype).bits // 8)
        if self.memory_budget_bytes is not None:
            return budget.rows_that_fit(per_row, self.memory_budget_bytes, cap)
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            # the prompt runs all rows at once there: activations cost about as much again
            return budget.rows_that_fit(2 * per_row, free // 2, cap)
        return budget.rows_that_fit(per_row, budget.cpu_budget_bytes(), cap)

    @torch.inference_mode()
    def _generate(self, batch: Sequence[ChunkRequest]) -> list[ChunkResult]:
        language = batch[0].language
        prompt = batch[0].prompt or None
        inputs = self.processor.apply_transcription_request(
            [np.ascontiguousarray(r.audio, dtype=np.float32) for r in batch], language=language, prompt=prompt,
        )
        inputs = inputs.to(self.device)
        inputs["input_features"] = inputs["input_features"].to(self.dtype)
        # One decode serves the batch: the largest limit and the largest minimum; each row is
        # then cut at its own end-of-text token or its own limit.
        limit = max(r.max_new_tokens for r in batch)
        minimum = min(limit, max(r.min_new_tokens for r in batch))
        pad_id = self.processor.tokenizer.pad_token_id
        if self.greedy_loop:
            new_tokens = greedy.greedy_decode(
                self.model, inputs, max_new_tokens=limit, min_new_tokens=minimum, eos_ids=EOS_TOKEN_IDS,
                pad_id=pad_id, prefill_rows=self.prefill_rows, stats=self.stats, between=self._share_cores,
                static=self.static_steps, graph=self.cuda_graphs,
            ).cpu().numpy()
        else:  # a generation config with more than plain greedy decoding: transformers' own loop
            self._share_cores()
            extra: dict[str, Any] = {"min_new_tokens": minimum} if minimum else {}
            text_config = self.model.config.get_text_config(decoder=True)
            out = self.model.generate(
                **inputs, max_new_tokens=limit, do_sample=False, num_beams=1, pad_token_id=pad_id,
                cache=kvcache.presized_cache(text_config.num_hidden_layers, len(batch), limit), **extra,
            )
            new_tokens = out[:, inputs["input_ids"].shape[1]:].cpu().numpy()
        return [self._result(request, row, language) for request, row in zip(batch, new_tokens, strict=True)]

    def restart_core_share(self) -> None:
        """Forget which cores other processes used so far and use every core again
        (:meth:`CoreShare.restart`; nothing on a GPU)."""
        if self.core_share is not None:
            self.core_share.restart(torch.set_num_threads)

    def _share_cores(self) -> None:
        if self.core_share is not None:
            self.threads_used.add(self.core_share.apply(torch.set_num_threads))

    def _result(self, request: ChunkRequest, row: np.ndarray, language: str | None) -> ChunkResult:
        """One row of generated ids -> its result, cut at its own end-of-text or limit."""
        own_limit = request.max_new_tokens
        ends = np.flatnonzero(np.isin(row, EOS_TOKEN_IDS))
        stop = int(ends[0]) if ends.size else len(row)
        # A row that ran to its limit without an end token was truncated or looping, unless a
        # forced minimum (benchmarks) is what kept it going.
        forced = request.min_new_tokens >= own_limit
        hit_limit = not forced and (stop > own_limit or not ends.size)
        ids = row[: min(stop, own_limit)]
        parsed = self.processor.decode(ids, return_format="parsed")
        return ChunkResult(text=parsed["transcription"], language=language or parsed["language"],
                           tokens=len(ids), hit_limit=bool(hit_limit))
