"""One interface for every attention: registry, capabilities, the shared layer.

A mechanism is a subclass of `AttentionLayer` that implements `attend(q, k, v, mask)`
on per-head tensors and declares what it can do in a `Capabilities` record. The base
class owns the Q/K/V/output projections, the head split and the input checks, so
model code only ever calls `layer(x, padding_mask)`.

    @register_attention("mine")
    class MyAttention(AttentionLayer):
        capabilities = Capabilities(causal=True, ...)
        def attend(self, q, k, v, key_padding_mask): ...

    build_attention("mine", dim=128, heads=8, causal=True)
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Capabilities:
    causal: bool  # has an exact causal (no future leak) mode
    padding_mask: bool  # honours key_padding_mask
    needs_max_len: bool  # parameters are sized by a maximum sequence length
    exact_softmax: bool  # computes softmax attention exactly (else: another kernel or an approximation)
    family: str  # what it computes, in words
    time: str  # complexity per head, N = length, d = head dim
    memory: str
    reference: str  # paper
    # a training forward pass changes the layer (Performer counts passes to redraw its features), so a training
    # step must stay one pass: training does not split such a batch into groups of similar length
    stateful_training: bool = False


_REGISTRY: dict[str, type[AttentionLayer]] = {}
_CONFIGS: dict[str, tuple[str, dict]] = {}  # label -> (mechanism, options), in registration order


def register_attention(name: str, *, configs: dict[str, dict] | None = None):
    """Class decorator: make a mechanism buildable by name.

    configs: its named configurations (label -> options) that the sweep presets, the CI gate, the
    benchmarks and the tests run; default {name: {}}. Registering is all it takes to appear there.
    """

    def decorator(cls: type[AttentionLayer]) -> type[AttentionLayer]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is already registered by {_REGISTRY[name].__name__}")
        if not isinstance(getattr(cls, "capabilities", None), Capabilities):
            raise TypeError(f"{cls.__name__} must define a Capabilities record as `capabilities`")
        for label in configs or {}:
            if label in _CONFIGS:
                raise ValueError(f"configuration {label!r} is already registered for {_CONFIGS[label][0]!r}")
        cls.name = name
        _REGISTRY[name] = cls
        for label, options in (configs or {name: {}}).items():
            _CONFIGS[label] = (name, dict(options))
        return cls

    return decorator


def list_attentions(pattern: str = "*") -> dict[str, tuple[str, dict]]:
    """Named configurations whose label matches the shell-style pattern: label -> (mechanism, options)."""
    return {
        label: (name, dict(options))
        for label, (name, options) in _CONFIGS.items()
        if fnmatch.fnmatchcase(label, pattern)
    }


def available_attentions() -> dict[str, dict]:
    """Every registered mechanism -> its capabilities and options (with defaults)."""
    return {
        name: {**asdict(cls.capabilities), "options": cls.option_defaults()} for name, cls in sorted(_REGISTRY.items())
    }


def attention_class(name: str) -> type[AttentionLayer]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown attention {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


class UnsupportedAttentionConfig(ValueError):
    """A mechanism was asked for something it cannot do (never silently replaced)."""


def build_attention(
    name: str,
    dim: int,
    heads: int,
    *,
    causal: bool = False,
    max_len: int | None = None,
    dropout: float = 0.0,
    **options,
) -> AttentionLayer:
    """Multi-head self-attention layer `name` with its projections: (B, N, dim) -> (B, N, dim)."""
    cls = attention_class(name)
    caps = cls.capabilities
    if causal and not caps.causal:
        raise UnsupportedAttentionConfig(f"attention {name!r} has no causal form (capabilities: causal=False)")
    if caps.needs_max_len and max_len is None:
        raise UnsupportedAttentionConfig(
            f"attention {name!r} needs max_len (its parameters are sized by the maximum sequence length)"
        )
    known = cls.option_defaults()
    unknown = sorted(set(options) - set(known))
    if unknown:
        valid = ", ".join(known) or "none"
        raise UnsupportedAttentionConfig(
            f"attention {name!r} does not take option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    gpu_only = options.get("backend") in GPU_ONLY_BACKENDS
    if gpu_only and not torch.cuda.is_available():
        raise UnsupportedAttentionConfig(
            f"attention {name!r}: backend={options['backend']!r} runs on CUDA only, and torch {torch.__version__} "
            "sees no CUDA device here; use backend='auto' (it takes the fastest path this machine has)"
        )
    return cls(dim, heads, causal=causal, max_len=max_len, dropout=dropout, **options)


GPU_ONLY_BACKENDS = ("fla", "mamba-ssm")  # Triton / CUDA packages: refused when the layer is built on a CPU machine


class AttentionLayer(nn.Module):
    """Multi-head self-attention: projections + head split around a per-head kernel."""

    name: str = "?"
    capabilities: Capabilities

    def __init__(self, dim: int, heads: int, *, causal: bool = False, max_len: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim < 1 or heads < 1:
            raise ValueError(f"{self.name}: dim and heads must be >= 1, got dim={dim}, heads={heads}")
        if dim % heads:
            raise ValueError(f"{self.name}: dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.causal, self.max_len, self.dropout = causal, max_len, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    @classmethod
    def option_defaults(cls) -> dict:
        """Keyword options of this mechanism beyond the common ones, with defaults."""
        common = {"self", "dim", "heads", "causal", "max_len", "dropout"}
        params = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in params if p.name not in common and p.kind is p.KEYWORD_ONLY}

    @classmethod
    def backend_for(cls, options: dict, device, dtype=torch.float32, compiled: bool = False) -> str | None:
        """The kernel a layer built with `options` runs on `device`, for mechanisms with more than one (what result
        rows record: an "auto" choice depends on the machine). None: one path only. options may carry "causal"."""
        return None

    @property
    def backend_in_use(self) -> str | None:
        """The kernel this layer runs where its weights are now ("auto" resolved: cpp, torch, fla, ...); None for
        mechanisms with one path only. Moving the layer (`.to("cuda")`) can change it."""
        options = {k: getattr(self, k) for k in self.option_defaults() if not callable(getattr(self, k, len))}
        options["compile"] = getattr(self, "compiled", False)
        options["causal"] = self.causal  # a mechanism whose fast path is the causal form's (efficient) asks
        weight = self.qkv.weight
        return type(self).backend_for(options, weight.device.type, weight.dtype)

    @classmethod
    def prepare(cls, device: str) -> None:
        """Do now what the first call on `device` would (build a compiled kernel), so that no timed call pays."""

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, H, N, d) x3 -> (B, H, N, d). Implemented by each mechanism."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, N, dim); padding_mask (B, N) bool, True = real item. Returns (B, N, dim).

        context (B, N, dim), optional: keys and values are projected from it instead of x (queries from x), as in
        SASRec's reference block, where only the queries see the LayerNorm."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"{self.name}: x must be (B, N, {self.dim}), got {tuple(x.shape)}")
        if context is not None and context.shape != x.shape:
            raise ValueError(f"{self.name}: context must have x's shape {tuple(x.shape)}, got {tuple(context.shape)}")
        batch, length, _ = x.shape
        if self.max_len is not None and length > self.max_len:
            raise ValueError(f"{self.name}: sequence length {length} exceeds max_len {self.max_len}")
        if padding_mask is not None:
            if not self.capabilities.padding_mask:
                raise UnsupportedAttentionConfig(f"attention {self.name!r} does not support padding masks")
            if padding_mask.dtype != torch.bool or padding_mask.shape != (batch, length):
                raise ValueError(
                    f"{self.name}: padding_mask must be a bool tensor of shape (B, N) = {(batch, length)} with True "
                    "= real item, "
                    f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
                )
            # padded positions must not reach anything, whatever they hold (a NaN times a zero weight is still NaN)
            x = x.masked_fill(~padding_mask[..., None], 0.0)
            if context is not None:
                context = context.masked_fill(~padding_mask[..., None], 0.0)
        if batch == 0 or length == 0:
            return self.out(x)  # (B, N, dim), empty
        if context is None:
            qkv = self.qkv(x)  # (B, N, 3 dim), one matmul
        else:
            weight, bias = self.qkv.weight, self.qkv.bias  # rows: q, then k and v
            q_part = nn.functional.linear(x, weight[: self.dim], bias[: self.dim])  # (B, N, dim)
            kv_part = nn.functional.linear(context, weight[self.dim :], bias[self.dim :])  # (B, N, 2 dim)
            qkv = torch.cat([q_part, kv_part], dim=-1)  # (B, N, 3 dim)
        out = self.attend_packed(qkv.view(batch, length, 3, self.heads, self.head_dim), padding_mask)  # (B, N, H, d)
        return self.out(out.reshape(batch, length, self.dim))  # (B, N, dim)

    def attend_packed(self, qkv: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, N, 3, H, d) -> (B, N, H, d): the head split around `attend`. A mechanism whose kernel reads the
        packed projection directly overrides it (no copy into per-head tensors, no concatenated gradient)."""
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, d)
        return self.attend(q, k, v, key_padding_mask).transpose(1, 2)  # (B, N, H, d)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, causal={self.causal}, max_len={self.max_len}"


class PackedMixerMixin:
    """For mixers that read the packed projection as a whole (its three parts are not queries, keys and values):
    per-head tensors, for callers that split heads themselves, are packed back first."""

    def attend(self, q, k, v, key_padding_mask):
        packed = torch.stack([q, k, v], dim=2).permute(0, 3, 2, 1, 4)  # (B, N, 3, H, d)
        return self.attend_packed(packed, key_padding_mask).transpose(1, 2)  # (B, H, N, d)


class CppScanMixin:
    """Layers whose CPU path is a fused C++ scan or walk (kernels/scan_cpp.py): it is built once per machine, in
    prepare(), never inside a timed call."""

    @classmethod
    def prepare(cls, device: str) -> None:
        from .kernels.scan_cpp import prepare_scans

        prepare_scans(device)


class PackedWalkMixin:
    """Causal layers whose CPU walk (kernels/scan_cpp.py) reads the packed projection where it lies and writes its
    gradient back packed, so autograd neither stacks three per-head gradients nor copies them into the projection's
    layout; the walk's output is already laid out (B, N, H, d). `walk_packed` returns None where the walk does not
    run (another device, backend="torch"); the bidirectional form and other dtypes (cast by the per-head path) take
    the per-head path too."""

    def walk_packed(self, qkv: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
        raise NotImplementedError

    def attend_packed(self, qkv, key_padding_mask):
        walks = self.causal and qkv.dtype in (torch.float32, torch.float64)  # the walks' dtypes
        out = self.walk_packed(qkv, key_padding_mask) if walks else None  # (B, H, N, d)
        if out is None:
            return super().attend_packed(qkv, key_padding_mask)
        return self._output_dropout(out).transpose(1, 2)  # (B, N, H, d), contiguous


class OutputDropoutMixin:
    """NOTE: kernels without an attention matrix cannot drop attention weights; they
    apply `dropout` to the attention output before the output projection instead."""

    def _output_dropout(self, out: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(out, self.dropout, self.training) if self.dropout > 0 else out
