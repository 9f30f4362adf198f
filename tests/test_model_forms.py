"""The recommenders' building blocks against their reference forms: the chunked item loss, the SASRec block
(against one built on torch's MultiheadAttention), cross-attention context, the port recipe's initialisation and
position numbering."""

import math
import random

import pytest
import torch
from model_inputs import tiny_config

from models import SASRec


@pytest.mark.parametrize("chunk_rows", [1, 7, 512])
def test_chunked_item_loss_matches_cross_entropy_in_value_and_fp64_gradients(chunk_rows):
    from models.item_loss import full_softmax_cross_entropy

    torch.manual_seed(0)
    states = torch.randn(23, 8, dtype=torch.float64, requires_grad=True)
    items = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (23,))
    expected = torch.nn.functional.cross_entropy(states @ items.T, targets)
    got = full_softmax_cross_entropy(states, items, targets, chunk_rows)
    assert torch.allclose(got, expected, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda s, i: full_softmax_cross_entropy(s, i, targets, chunk_rows), (states, items))
    (2.5 * got).backward()  # an upstream gradient other than 1 is applied
    grads = (states.grad.clone(), items.grad.clone())
    states.grad = items.grad = None
    (2.5 * expected).backward()
    assert torch.allclose(grads[0], states.grad) and torch.allclose(grads[1], items.grad)


def test_chunked_item_loss_refuses_mismatched_shapes():
    from models.item_loss import full_softmax_cross_entropy

    with pytest.raises(ValueError, match=r"expected states \(T, d\)"):
        full_softmax_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 6), torch.zeros(3, dtype=torch.long))


def test_the_sasrec_block_form_is_causal_and_trains():
    torch.manual_seed(0)
    model = SASRec(tiny_config(attention="linrec", norm="sasrec")).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    changed = items.clone()
    changed[0, 8:] = torch.tensor([20, 21, 22, 23])
    with torch.no_grad():
        assert torch.allclose(model.encoder(items)[0, :8], model.encoder(changed)[0, :8], atol=1e-5)
    model.train()
    loss = model.training_loss(model.make_batch([[1, 2, 3, 4], [5, 6, 7]], random.Random(0)))
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="norm must be 'pre', 'post' or 'sasrec'"):
        tiny_config(attention="sdpa", norm="sideways")


def test_the_sasrec_block_equals_the_reference_form_built_on_torch_multihead_attention():
    """The SASRec code's block: Q = LN(x); x = Q + MHA(Q, x, x); x = LN(x); x = x + FFN(x), with
    nn.MultiheadAttention (keys and values from the un-normalised x) as the independent reference."""
    from models.encoder import TransformerBlock

    torch.manual_seed(0)
    config = tiny_config(attention="sdpa", norm="sasrec", feed_forward_dropout=True, attention_init="xavier")
    block = TransformerBlock(config, causal=True).eval()
    reference = torch.nn.MultiheadAttention(config.hidden, config.heads, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(block.attention.qkv.weight)
        reference.in_proj_bias.copy_(block.attention.qkv.bias)
        reference.out_proj.weight.copy_(block.attention.out.weight)
        reference.out_proj.bias.copy_(block.attention.out.bias)
    x = torch.randn(3, 12, config.hidden)
    future = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        queries = block.norm_attention(x)
        attended, _ = reference(queries, x, x, attn_mask=future, need_weights=False)
        expected = block.norm_feed_forward(queries + attended)
        expected = expected + block.feed_forward(expected)
        got = block(x, torch.ones(3, 12, dtype=torch.bool))
    assert torch.allclose(got, expected, atol=1e-5)
    # keys and values really come from x: normalising them too gives something else
    with torch.no_grad():
        attended_normalised, _ = reference(queries, queries, queries, attn_mask=future, need_weights=False)
    assert not torch.allclose(attended, attended_normalised, atol=1e-3)


def test_attention_context_is_the_same_function_as_self_attention_when_it_is_x():
    from models.attention import build_attention

    torch.manual_seed(0)
    for name in ("sdpa", "linrec", "efficient"):
        layer = build_attention(name, 16, 2, causal=True, max_len=12).eval()
        x, mask = torch.randn(2, 12, 16), torch.ones(2, 12, dtype=torch.bool)
        mask[0, :4] = False
        with torch.no_grad():
            assert torch.allclose(layer(x, mask, context=x), layer(x, mask), atol=1e-6), name
    with pytest.raises(ValueError, match="context must have x's shape"):
        layer(x, mask, context=x[:, :5])


def test_the_port_recipe_sets_its_initialisation_and_feed_forward_dropout():
    from bench.training.config import with_recipe
    from bench.training.train import build_model

    config = with_recipe("sasrec-plus-port", dataset="synthetic")
    assert (config.norm, config.batching, config.attention_init, config.feed_forward_dropout) == (
        "sasrec",
        "random",
        "xavier",
        True,
    )
    torch.manual_seed(0)
    port = build_model(config, num_items=100)
    plain = build_model(with_recipe("sasrec-plus", dataset="synthetic"), num_items=100)
    bound = math.sqrt(6 / (64 + 3 * 64))  # xavier uniform over the stacked (3d, d) matrix
    for block_port, block_plain in zip(port.encoder.blocks, plain.encoder.blocks, strict=True):
        weight = block_port.attention.qkv.weight
        assert weight.abs().max() <= bound and weight.std() > 0.6 * bound / math.sqrt(3)
        assert block_plain.attention.qkv.weight.std() < 0.03  # normal(0, 0.02)
        assert any(isinstance(m, torch.nn.Dropout) for m in block_port.feed_forward)
        assert not any(isinstance(m, torch.nn.Dropout) for m in block_plain.feed_forward)
    with pytest.raises(ValueError, match="attention_init must be"):
        tiny_config(attention="sdpa", attention_init="kaiming")


@pytest.mark.parametrize("attention", ["sdpa", "linrec"])
def test_positions_from_oldest_number_each_row_from_its_first_real_item(attention):
    """SASRec's code pads on the right, so a window's oldest item has position 0 whatever the length; from_oldest
    gives the same numbering on left-padded rows. With it the first item's causal state is the same alone or
    followed by more items (and padded more or less); counted from the newest item, its position moves."""
    from models.encoder import SequenceEncoder

    torch.manual_seed(0)
    states = {}
    for positions in ("from_oldest", "from_newest"):
        encoder = SequenceEncoder(tiny_config(attention=attention, positions=positions), causal=True).eval()
        with torch.no_grad():
            states[positions] = (
                encoder(torch.tensor([[0, 0, 5, 7, 9]]))[0, 2],  # the first real item of a longer row
                encoder(torch.tensor([[0, 0, 0, 0, 5]]))[0, 4],  # the same item alone
            )
    assert torch.allclose(*states["from_oldest"], atol=1e-5)
    assert not torch.allclose(*states["from_newest"], atol=1e-3)
    with pytest.raises(ValueError, match="positions must be"):
        tiny_config(attention="sdpa", positions="from_left")
