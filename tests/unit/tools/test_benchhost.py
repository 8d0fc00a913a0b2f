"""``scribed.tools.benchhost``: what the bench records about the machine.

Bandwidth is never compared with a number (it depends on the machine and its load); only that the
probe measures something positive, fails to None, and that the floor is the stated arithmetic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scribed.tools import benchhost, benchrun

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 x2apic

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: not the first
flags\t\t: amx_bf16
"""


def test_cpu_facts_come_from_the_first_processor(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert benchhost.cpu_facts(info) == {"model_name": "AMD EPYC 9R14", "family": 25, "model": 17,
                                         "flags": ["avx2", "avx512f", "avx512_bf16"]}
    assert benchhost.cpu_facts(tmp_path / "missing") == {"model_name": None, "family": None, "model": None,
                                                         "flags": []}
    line = benchhost.host_line({**benchhost.cpu_facts(info), "read_gb_per_s": 12.5, "read_threads": 2})
    assert "family 25 model 17" in line and "avx512_bf16" in line and "12.5 GB/s on 2 threads" in line


def test_the_bandwidth_probe_measures_in_a_fresh_process_or_says_none(monkeypatch: pytest.MonkeyPatch) -> None:
    measured = benchhost.read_bandwidth(1, nbytes=8 << 20)
    assert isinstance(measured, float) and measured > 0
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert benchhost.read_bandwidth(1, nbytes=8 << 20) is None


def test_the_step_floor_is_weights_and_cache_over_bandwidth() -> None:
    # 1 GB of weights + 2 (keys, values) x 28 layers x 16 rows x 8 heads x 400 positions x 128 x 2 bytes
    cache = 2 * 28 * 16 * 8 * 400 * 128 * 2
    got = benchhost.step_bound_ms(weight_bytes=10**9, rows=16, context=400, layers=28, kv_heads=8, head_dim=128,
                                  element_bytes=2, gb_per_s=25.0)
    assert got == round(1000 * (10**9 + cache) / 25e9, 1)
    assert benchhost.step_bound_ms(weight_bytes=1, rows=1, context=1, layers=1, kv_heads=1, head_dim=1,
                                   element_bytes=2, gb_per_s=None) is None


def test_a_step_reads_the_decoder_and_output_layer_but_not_the_embedding(tiny_model: Path) -> None:
    from scribed.engine.qwen3 import AsrEngine

    for prepack in (False, True):
        engine = AsrEngine(tiny_model, device="cpu", dtype="bfloat16", name="tiny")
        engine.prepack = prepack
        engine.load()
        model = engine.model
        embed = model.get_input_embeddings().weight
        named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
        read = {id(t): t for name, t in named if name.startswith("model.language_model.") and t is not embed}
        output = getattr(model.lm_head, "packed_weight", None)
        output = model.lm_head.weight if output is None else output  # tied: the embedding, read whole
        read[id(output)] = output
        assert benchrun.step_weight_bytes(model) == sum(t.numel() * t.element_size() for t in read.values())
        assert not any(name.startswith("model.audio_tower.") for name, t in named if id(t) in read)
