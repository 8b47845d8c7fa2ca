"""The in-place decoding cache gives what transformers' DynamicCache gives, bit for bit."""

import inspect

import pytest
import torch

from s2l import decoding_cache as dc

cache_utils = pytest.importorskip("transformers.cache_utils")


def _states(generator, batch, length, heads=2, dim=8):
    return (torch.randn(batch, heads, length, dim, generator=generator),
            torch.randn(batch, heads, length, dim, generator=generator))


@pytest.mark.parametrize("sliding", [False, True])
def test_layer_matches_dynamic_layer_through_growth_row_drops_and_the_window(sliding, monkeypatch):
    monkeypatch.setattr(dc, "ROOM", 3)  # the buffers fill and grow several times
    if sliding:
        reference, roomy = cache_utils.DynamicSlidingWindowLayer(sliding_window=12), dc.RoomySlidingLayer(sliding_window=12)
    else:
        reference, roomy = cache_utils.DynamicLayer(), dc.RoomyLayer()
    generator = torch.Generator().manual_seed(0)
    batch = 6
    for step in range(16):  # a 5-position prefill, then one position a step: past the window of 12
        new = _states(generator, batch, 5 if step == 0 else 1)
        expected, got = reference.update(*new), roomy.update(*new)
        assert all(torch.equal(e, g) for e, g in zip(expected, got)), step
        assert reference.get_seq_length() == roomy.get_seq_length()
        assert reference.get_mask_sizes(1) == roomy.get_mask_sizes(1)
        if step in (4, 9):  # rows leave the batch, as greedy_decode drops finished ones
            kept = torch.tensor([0, 2, 3]) if step == 4 else torch.tensor([1, 2])
            reference.batch_select_indices(kept)
            roomy.batch_select_indices(kept)
            batch = len(kept)


def test_earlier_views_are_not_overwritten():
    layer = dc.RoomyLayer()
    generator = torch.Generator().manual_seed(1)
    first = [t.clone() for t in layer.update(*_states(generator, 2, 4))]
    view = layer.update(*_states(generator, 2, 1))[0]
    snapshot = view.clone()
    layer.update(*_states(generator, 2, 1))
    assert torch.equal(view, snapshot) and torch.equal(view[:, :, :4], first[0])


def _decode_logits(model, input_ids, attention, steps, cache):
    """Every step's last-position logits, greedy, with `cache` (None: the model's own)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    extra = {} if cache is None else {name: cache}
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **extra)
    logits, cache, position = [out.logits[:, -1]], getattr(out, name), positions[:, -1:] + 1
    for _ in range(steps):
        attention = torch.cat([attention, attention.new_ones(len(attention), 1)], dim=1)
        chosen = out.logits[:, -1].argmax(-1)[:, None]
        out = model(input_ids=chosen, attention_mask=attention, position_ids=position, use_cache=True,
                    **{name: cache})
        logits.append(out.logits[:, -1])
        position = position + 1
    return logits


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_model_logits_are_identical(family):
    """A real (tiny, random) model decodes to the same logits with either cache; Gemma-3's sliding-window layers
    (window 6 here) slide during the decode."""
    import transformers

    torch.manual_seed(0)
    if family == "llama":
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                               num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=6,
                                               layer_types=["sliding_attention", "sliding_attention", "full_attention"])
        model = transformers.Gemma3ForCausalLM(config)
    model.eval()
    input_ids = torch.randint(0, 64, (3, 5))
    attention = torch.ones_like(input_ids)
    attention[0, :2] = 0  # left padding
    with torch.inference_mode():
        own = _decode_logits(model, input_ids, attention, 10, None)
        roomy_cache = dc.decoding_cache(model)
        assert roomy_cache is not None
        roomy = _decode_logits(model, input_ids, attention, 10, roomy_cache)
    kinds = {type(layer) for layer in roomy_cache.layers}
    assert dc.RoomyLayer in kinds and (family == "llama" or dc.RoomySlidingLayer in kinds)
    assert all(torch.equal(a, b) for a, b in zip(own, roomy))
