"""Every registered mechanism, in every mode it claims, through build_attention."""

import dense_reference as dense
import pytest
import torch
from attention_properties import causality_violation, extra_padding_violation, padded_content_violation

from models.attention import (
    UnsupportedAttentionConfig,
    attention_class,
    available_attentions,
    build_attention,
    list_attentions,
)

DIM, HEADS, N, MAX_LEN = 16, 2, 12, 40
TOL = 1e-5

SMALL = {"performer": {"nb_features": 16}, "linformer": {"k": 6}}  # test-sized options of the named configurations


def _test_configs() -> dict[str, tuple[str, dict]]:
    """Every registered configuration (plugins included) at test size, plus LinRec's recompute path."""
    configs = {}
    for label, (name, options) in list_attentions().items():
        options = {**options, **SMALL.get(name, {})}
        if "chunk_size" in attention_class(name).option_defaults():
            options["chunk_size"] = 4  # several chunks even at N = 12
        configs[label] = (name, options)
    configs["linrec-recompute"] = ("linrec", {"chunk_size": 4, "recompute_heads": 1})
    return configs


CONFIGS = _test_configs()
CASES = [
    pytest.param(key, causal, id=f"{key}-{'causal' if causal else 'bidir'}")
    for key, (name, _) in CONFIGS.items()
    for causal in (False, True)
    if not causal or available_attentions()[name]["causal"]
]


def _layer(key, causal, **extra):
    name, options = CONFIGS[key]
    layer = build_attention(name, DIM, HEADS, causal=causal, max_len=MAX_LEN, **{**options, **extra})
    return layer.eval()


def _batch(batch=3, length=N):
    x = torch.randn(batch, length, DIM)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, :5] = False  # left padding
    mask[1, -4:] = False  # right padding
    return x, mask


def test_every_mechanism_is_covered():
    assert {name for name, _ in CONFIGS.values()} == set(available_attentions())


# ------------------------------------------------------------------ exactness


@pytest.mark.parametrize("name", ["softmax", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_exact_mechanisms_equal_softmax_reference(name, causal, padded):
    layer = _layer(name, causal)
    x, mask = _batch()
    mask = mask if padded else None
    q, k, v = layer.qkv(x).view(3, N, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
    expected = dense.softmax(q, k, v, causal, mask)
    with torch.no_grad():
        got = layer.attend(q, k, v, mask)
    assert ((got - expected).abs().max() / expected.abs().max()) < 1e-4


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("key,causal", [c for c in CASES if "causal" in c.id])
def test_causal_modes_do_not_see_the_future(key, causal):
    x, mask = _batch()
    layer = _layer(key, causal)
    assert causality_violation(layer, x) < TOL
    assert causality_violation(layer, x, mask) < TOL


@pytest.mark.parametrize("key,causal", [c for c in CASES if "bidir" in c.id])
def test_causality_check_bites_on_bidirectional_modes(key, causal):
    x, _ = _batch()
    assert causality_violation(_layer(key, causal), x) > 1e-3


@pytest.mark.parametrize("key,causal", CASES)
def test_padded_content_is_ignored(key, causal):
    x, mask = _batch()
    assert padded_content_violation(_layer(key, causal), x, mask) < TOL


@pytest.mark.parametrize("key,causal", CASES)
def test_padding_check_bites_when_the_mask_is_dropped(key, causal):
    x, mask = _batch()
    layer = _layer(key, causal)
    assert padded_content_violation(lambda inp, m: layer(inp, None), x, mask) > 1e-3


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("key,causal", CASES)
def test_extra_padding_is_ignored(key, causal, side):
    if key == "linformer" and side == "left":
        pytest.skip("Linformer projects by absolute position: shifting real items changes it (documented)")
    x, mask = _batch()
    assert extra_padding_violation(_layer(key, causal), x, mask, extra=7, side=side) < TOL


def test_linformer_is_position_bound_under_left_padding():
    x, mask = _batch()
    assert extra_padding_violation(_layer("linformer", False), x, mask, extra=7, side="left") > 1e-3


# ------------------------------------------------------------------ numerical edge cases


def _finite_forward_backward(layer, x, mask):
    x = x.clone().requires_grad_(True)
    out = layer(x, mask)
    assert torch.isfinite(out).all(), "non-finite output"
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all(), "non-finite input gradient"
    for name, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"


@pytest.mark.parametrize("key,causal", CASES)
@pytest.mark.parametrize("case", ["zeros", "zero-weights", "one-token", "fully-padded-row", "large"])
def test_no_nan_or_inf(key, causal, case):
    layer = _layer(key, causal).train()
    x, mask = _batch()
    if case == "zeros":
        x = torch.zeros_like(x)
    elif case == "zero-weights":  # q = k = v = 0 exactly
        with torch.no_grad():
            layer.qkv.weight.zero_()
            layer.qkv.bias.zero_()
    elif case == "one-token":
        x, mask = x[:, :1], torch.ones(3, 1, dtype=torch.bool)
    elif case == "fully-padded-row":
        mask[2] = False
    elif case == "large":
        x = x * 1e3
    _finite_forward_backward(layer, x, mask)


@pytest.mark.parametrize("key,causal", CASES)
def test_bf16_runs_on_cpu(key, causal):
    layer32 = _layer(key, causal)
    layer16 = _layer(key, causal)
    layer16.load_state_dict(layer32.state_dict())
    layer16 = layer16.to(torch.bfloat16)
    x, mask = _batch()
    with torch.no_grad():
        out16 = layer16(x.bfloat16(), mask).float()
        out32 = layer32(x, mask)
    assert torch.isfinite(out16).all()
    assert ((out16 - out32).abs().max() / out32.abs().max()) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("key,causal", CASES)
def test_cuda_matches_cpu(key, causal):
    layer = _layer(key, causal)
    x, mask = _batch()
    with torch.no_grad():
        cpu = layer(x, mask)
        gpu = layer.cuda()(x.cuda(), mask.cuda()).cpu()
    assert ((gpu - cpu).abs().max() / cpu.abs().max()) < 1e-3


# ------------------------------------------------------------------ interface


def test_capabilities_listing_has_every_field():
    for name, info in available_attentions().items():
        for field in (
            "causal",
            "padding_mask",
            "needs_max_len",
            "exact_softmax",
            "time",
            "memory",
            "reference",
            "options",
        ):
            assert field in info, (name, field)


def test_drop_in_usage_from_the_readme():
    layer = build_attention("linrec", 128, 8, causal=True)
    x = torch.randn(2, 50, 128)
    assert layer(x).shape == (2, 50, 128)
    assert layer(x, torch.ones(2, 50, dtype=torch.bool)).shape == (2, 50, 128)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": "nope", "dim": 16, "heads": 2}, "unknown attention 'nope'"),
        ({"name": "linformer", "dim": 16, "heads": 2, "causal": True, "max_len": 8}, "'linformer' has no causal form"),
        ({"name": "linformer", "dim": 16, "heads": 2}, "'linformer' needs max_len"),
        ({"name": "linrec", "dim": 16, "heads": 2, "k": 3}, "'linrec' does not take option"),
        ({"name": "performer", "dim": 16, "heads": 2, "variant": "paper"}, "valid options: nb_features"),
        ({"name": "linrec", "dim": 15, "heads": 2}, "divisible by heads"),
    ],
)
def test_unsupported_requests_are_refused_by_name(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises((UnsupportedAttentionConfig, KeyError, ValueError), match=message):
        build_attention(name, **kwargs)


def test_too_long_sequence_is_refused():
    layer = build_attention("linformer", DIM, HEADS, max_len=8)
    with pytest.raises(ValueError, match="exceeds max_len 8"):
        layer(torch.randn(1, 9, DIM))


def test_performer_redraws_in_training_only():
    layer = build_attention("performer", DIM, HEADS, nb_features=8, redraw_interval=2)
    x = torch.randn(1, 5, DIM)
    first = layer.projection.clone()
    layer.train()
    layer(x)
    layer(x)
    assert torch.equal(layer.projection, first)  # 2 calls: not yet
    layer(x)
    assert not torch.equal(layer.projection, first)
    frozen = layer.projection.clone()
    layer.eval()
    for _ in range(5):
        layer(x)
    assert torch.equal(layer.projection, frozen)


def test_dropout_is_applied_in_training_only():
    for name, options in [("softmax", {}), ("linrec", {})]:
        layer = build_attention(name, DIM, HEADS, dropout=0.5, **options)
        x = torch.randn(2, 6, DIM)
        layer.train()
        assert not torch.equal(layer(x), layer(x))
        layer.eval()
        assert torch.equal(layer(x), layer(x))


def test_a_layer_says_which_backend_it_runs():
    from models.attention.kernels import linrec_cpp, scan_cpp

    fused = "cpp" if linrec_cpp.extension_error() is None else "torch"
    assert build_attention("linrec", 32, 2, causal=True).backend_in_use == fused
    assert build_attention("linrec", 32, 2, causal=True, backend="torch").backend_in_use == "torch"
    assert build_attention("linrec", 32, 2, causal=True, variant="official").backend_in_use == "torch"
    scans = "cpp" if scan_cpp.extension_error() is None else "torch"
    assert build_attention("mamba", 32, 2, causal=True).backend_in_use == scans
    assert build_attention("sdpa", 32, 2, causal=True).backend_in_use is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine can run them")
@pytest.mark.parametrize("name, backend", [("linrec", "fla"), ("retention", "fla"), ("mamba", "mamba-ssm")])
def test_a_gpu_only_backend_is_refused_when_the_layer_is_built(name, backend):
    with pytest.raises(UnsupportedAttentionConfig, match="runs on CUDA only"):
        build_attention(name, 32, 2, causal=True, backend=backend)
