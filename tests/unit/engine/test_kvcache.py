"""Tests for scribed.engine.kvcache: the pre-sized cache and the one-token attention."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from scribed.engine.kvcache import ATTENTION, BatchCache, decode_attention, presized_cache, register


class _Module(torch.nn.Module):
    """What transformers' attention functions read off the attention module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True
        self.training = False


def _kv(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 8, generator=g), torch.randn(rows, 2, length, 8, generator=g)


def test_rows_filled_apart_then_decoded_together_equal_a_growing_cache() -> None:
    cache = BatchCache(num_layers=1, rows=3, new_tokens=4)
    reference = DynamicLayer()
    prompt_k, prompt_v = _kv(3, 5, seed=1)
    for row in range(3):  # prefill one row at a time
        keys, _ = cache.view(row, row + 1).layers[0].update(prompt_k[row:row + 1], prompt_v[row:row + 1])
        assert keys.shape == (1, 2, 5, 8)
    reference.update(prompt_k, prompt_v)
    step = cache.view(length=5)
    assert step.get_seq_length() == 5
    for i in range(4):
        k, v = _kv(3, 1, seed=10 + i)
        got = step.layers[0].update(k, v)
        want = reference.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert step.get_seq_length() == 9


def test_every_layer_of_a_batch_shares_one_allocation_and_keeps_its_own_positions() -> None:
    layers, rows = 3, 2
    cache = BatchCache(num_layers=layers, rows=rows, new_tokens=3)
    references = [DynamicLayer() for _ in range(layers)]
    for row in range(rows):  # prefill one row at a time, every layer
        view = cache.view(row, row + 1)
        for n in range(layers):
            k, v = _kv(1, 4, seed=100 * n + row)
            view.layers[n].update(k, v)
    for n in range(layers):
        k = torch.cat([_kv(1, 4, seed=100 * n + row)[0] for row in range(rows)])
        v = torch.cat([_kv(1, 4, seed=100 * n + row)[1] for row in range(rows)])
        references[n].update(k, v)
    step = cache.view(length=4)
    for i in range(3):
        for n in range(layers):
            k, v = _kv(rows, 1, seed=1000 + 10 * i + n)
            got, want = step.layers[n].update(k, v), references[n].update(k, v)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # one block for all layers' keys and values: it is mapped apart from the heap and freed whole
    buffers = [t for store in cache.stores for t in (store.key_buffer, store.value_buffer)]
    storages = {t.untyped_storage().data_ptr() for t in buffers if t is not None}
    assert len(storages) == 1


def test_going_past_the_reserved_room_grows_and_keeps_what_was_written() -> None:
    layer = presized_cache(num_layers=1, rows=2, new_tokens=1).layers[0]
    reference = DynamicLayer()
    for i, length in enumerate((3, 1, 1, 1, 4)):  # reserved: 3 + 1; then doubling
        k, v = _kv(2, length, seed=i)
        got, want = layer.update(k, v), reference.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert layer.get_seq_length() == 10


def test_keys_and_values_stay_tight_across_bucket_boundaries_and_keep_every_position() -> None:
    # 30 prompt positions, then 40 steps: the keys' layout moves apart at 32 and 64 positions
    from scribed.engine.kvcache import BUCKET

    rows, kv_heads, dim = 3, 2, 8
    cache = BatchCache(num_layers=1, rows=rows, new_tokens=40)
    reference = DynamicLayer()
    prompt_k, prompt_v = _kv(rows, 30, seed=7)
    for row in range(rows):
        cache.view(row, row + 1).layers[0].update(prompt_k[row:row + 1], prompt_v[row:row + 1])
    reference.update(prompt_k, prompt_v)
    step = cache.view(length=30)
    store = cache.stores[0]
    g = torch.Generator().manual_seed(9)
    for i in range(40):
        k, v = _kv(rows, 1, seed=200 + i)
        keys, values = step.layers[0].update(k, v)
        want_k, want_v = reference.update(k, v)
        assert torch.equal(keys, want_k) and torch.equal(values, want_v)
        length = 31 + i
        assert store.span == min(70, -(-length // BUCKET) * BUCKET)  # the next bucket, within the room (70)
        assert keys.stride()[:2] == (kv_heads * store.span * dim, store.span * dim)  # rows one span apart
        assert values.stride() == keys.stride()  # values as tight: read in place by the second product
        query = torch.randn(rows, kv_heads * 2, 1, dim, generator=g)
        got, _ = decode_attention(_Module(2), query, keys, values, None, scaling=0.3)
        want, _ = sdpa_attention_forward(_Module(2), query, want_k, want_v, None, scaling=0.3)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_greedy_only_operations_refuse_instead_of_corrupting() -> None:
    layer = presized_cache(1, 1, 2).layers[0]
    with pytest.raises(NotImplementedError):
        layer.batch_select_indices(torch.tensor([0]))
    with pytest.raises(NotImplementedError):
        layer.reorder_cache(torch.tensor([0]))


@pytest.mark.parametrize("masked", [False, True])
def test_one_token_attention_equals_sdpa_with_grouped_heads_on_cache_views(masked: bool) -> None:
    rows, kv_heads, groups, length, dim = 3, 2, 4, 7, 8
    g = torch.Generator().manual_seed(0)
    cache = presized_cache(1, rows, new_tokens=2)
    k, v = torch.randn(rows, kv_heads, length, dim, generator=g), torch.randn(rows, kv_heads, length, dim, generator=g)
    keys, values = cache.layers[0].update(k, v)
    assert not keys.is_contiguous()  # a view of the store (rows a bucket apart): the case that must not copy or break
    query = torch.randn(rows, kv_heads * groups, 1, dim, generator=g)
    mask = None
    if masked:  # left padding: row 0 has two padded positions
        mask = torch.ones(rows, 1, 1, length, dtype=torch.bool)
        mask[0, ..., :2] = False
    module = _Module(groups)
    got, _ = decode_attention(module, query, keys, values, mask, scaling=dim ** -0.5)
    want, _ = sdpa_attention_forward(module, query, k, v, mask, scaling=dim ** -0.5)
    assert got.shape == want.shape == (rows, 1, kv_heads * groups, dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("length", "new_tokens", "span"), [(7, 100, 32), (32, 100, 32), (33, 100, 64), (33, 4, 37)])
def test_one_token_attention_reads_a_bucketed_span_and_still_equals_sdpa(length: int, new_tokens: int,
                                                                          span: int) -> None:
    from scribed.engine.kvcache import _bucketed

    g = torch.Generator().manual_seed(length)
    cache = presized_cache(1, 2, new_tokens=new_tokens)
    k, v = torch.randn(2, 2, length, 8, generator=g), torch.randn(2, 2, length, 8, generator=g)
    keys, values = cache.layers[0].update(k, v)
    wide_k, wide_v, got_span = _bucketed(keys, values)
    assert got_span == span == wide_k.shape[-2] == wide_v.shape[-2]  # capped by the store's capacity
    assert torch.equal(wide_k[..., :length, :], k) and torch.equal(wide_v[..., :length, :], v)
    assert not wide_k[..., length:, :].any() and not wide_v[..., length:, :].any()  # unwritten: zeros
    query = torch.randn(2, 4, 1, 8, generator=g)
    got, _ = decode_attention(_Module(2), query, keys, values, None, scaling=0.25)
    want, _ = sdpa_attention_forward(_Module(2), query, k, v, None, scaling=0.25)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_tensors_not_from_the_store_are_not_widened() -> None:
    from scribed.engine.kvcache import _bucketed

    k, v = _kv(2, 5, seed=3)
    assert _bucketed(k, v)[2] == 5


def test_prompts_and_encoder_windows_go_to_sdpa_unchanged() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 6, 8, generator=g) for _ in range(3))
    module = _Module(1)
    module.is_causal = False
    got, _ = decode_attention(module, q, k, v, None, scaling=0.3, is_causal=False)
    want, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.3, is_causal=False)
    assert torch.equal(got, want)


def test_register_makes_the_name_a_valid_attention_implementation() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    register()
    register()  # idempotent
    assert AttentionInterface()[ATTENTION] is decode_attention
    assert ATTENTION in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping


def test_attention_works_inside_and_outside_inference_mode_in_any_order() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 1, 8, generator=g)
    k, v = torch.randn(2, 2, 5, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g)
    module = _Module(2)
    with torch.inference_mode():
        inside, _ = decode_attention(module, q, k, v, None)
    outside, _ = decode_attention(module, q, k, v, None)
    torch.testing.assert_close(inside, outside)
