"""One measurement cell: what to run (a `Cell`) and how to time and size it.

Levels:
  attention  one layer from the registry: projections + kernel, input x (B, N, dim)
  kernel     the layer's per-head kernel only: q, k, v (B, H, N, d) in, output out
  model      one recommender step at ML-1M's catalogue size (3,706 items), 2 layers:
             causal -> SASRec (all positions), bidirectional -> BERT4Rec (Cloze);
             fwd_bwd = a training step (forward, cross-entropy over all items,
             backward, Adam step), infer = scoring the next item for every user in the batch
Modes: fwd (forward with autograd recording), fwd_bwd (forward + backward),
infer (torch.inference_mode, eval mode).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psutil
import torch

from models.attention import attention_class, build_attention

from ..measure import peak_memory, synchronize, time_callable
from ..schema import MODEL_DROPOUT, attention_label, effective_attention_dropout

LEVELS = ("attention", "kernel", "model")
MODEL_ITEMS, MODEL_LAYERS = 3706, 2
MODES = ("fwd", "fwd_bwd", "infer")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STATUSES = ("ok", "oom", "timeout", "unsupported", "error", "skipped")


@dataclass(frozen=True)
class Cell:
    level: str
    attention: str
    causal: bool
    seq_len: int
    batch_size: int
    dim: int
    heads: int
    mode: str
    dtype: str
    device: str  # "cpu" or "cuda[:i]"
    options: dict = field(default_factory=dict, hash=False)
    padding: float = 0.0  # fraction of every sequence left-padded (masked), attention and kernel levels
    # the layer's dropout (softmax: on the probabilities, which takes sdpa off its fused CPU kernel; kernels
    # without a probability matrix: on the output); None: the level's default (effective_attention_dropout)
    attention_dropout: float | None = None
    compile: bool = False  # through torch.compile(dynamic=False): the layer, the kernel, or the model's encoder

    def key(self) -> str:
        """Identity of the cell in a results file (what resume compares)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def of_row(cls, row: dict) -> Cell:
        """The cell a result row measured (rows store the device kind as device_type)."""
        later = {"padding": 0.0, "attention_dropout": None, "compile": False}  # axes added later: their defaults
        fields = {k: row.get(k, later[k]) if k in later else row[k] for k in cls.__dataclass_fields__ if k != "device"}
        return cls(**fields, device=row["device_type"])

    @property
    def label(self) -> str:
        return attention_label(self.attention, self.options, self.compile)


def unsupported_reason(cell: Cell) -> str | None:
    """Why this cell cannot run at all (recorded as status 'unsupported'), or None."""
    try:
        caps = attention_class(cell.attention).capabilities
    except KeyError as err:
        return str(err.args[0])
    if cell.causal and not caps.causal:
        return f"{cell.attention} has no causal form"
    if cell.level not in LEVELS:
        return f"level {cell.level!r} is not one of {LEVELS}"
    if cell.mode not in MODES:
        return f"mode {cell.mode!r} is not one of {MODES}"
    if cell.dtype not in DTYPES:
        return f"dtype {cell.dtype!r} is not one of {tuple(DTYPES)}"
    if cell.device.startswith("cuda") and not torch.cuda.is_available():
        return "CUDA requested but torch.cuda.is_available() is False"
    if cell.dim % cell.heads:
        return f"dim {cell.dim} is not divisible by heads {cell.heads}"
    if cell.attention_dropout is not None and not 0.0 <= cell.attention_dropout < 1.0:
        return f"attention dropout {cell.attention_dropout} is not a probability in [0, 1)"
    if not 0.0 <= cell.padding < 1.0:
        return f"padding {cell.padding} is not a fraction in [0, 1)"
    if cell.padding and cell.level == "model":
        return "padding applies to the attention and kernel levels (model cells draw their own sequences)"
    if cell.padding and not caps.padding_mask:
        return f"{cell.attention} does not support padding masks"
    return _over_memory(cell, caps)


# activations a layer step keeps per token and width (input, q/k/v, output, their gradients, projections): a
# deliberately generous count, so only cells that cannot fit are refused
_LINEAR_COPIES = 16


def estimated_bytes(cell: Cell, caps) -> int:
    """A rough upper estimate of a cell's memory: the per-token activations, and the N x N matrices of a
    mechanism that materialises attention (its capability record says O(N^2) memory)."""
    element = torch.finfo(DTYPES[cell.dtype]).bits // 8
    tokens = cell.batch_size * cell.seq_len
    total = _LINEAR_COPIES * tokens * cell.dim * element
    if "N^2" in caps.memory.replace(" ", ""):
        matrices = 4 if cell.mode == "fwd_bwd" else 2  # scores and weights, and their gradients in a backward
        total += matrices * cell.batch_size * cell.heads * cell.seq_len**2 * element
    return total


def _over_memory(cell: Cell, caps) -> str | None:
    if cell.device != "cpu":
        return None  # the card's memory is the card's to report (an OOM row)
    available = psutil.virtual_memory().total
    needed = estimated_bytes(cell, caps)
    if needed > available:
        return (
            f"needs an estimated {needed / 2**30:.1f} GiB, more than this machine's {available / 2**30:.1f} GiB "
            "of memory: refused before it starts"
        )
    return None


def make_workload(cell: Cell, seed: int = 0) -> Callable[[], None]:
    """A zero-argument callable running the cell once (inputs and module prebuilt)."""
    torch.manual_seed(seed)
    device, dtype = torch.device(cell.device), DTYPES[cell.dtype]
    layer = build_attention(
        cell.attention,
        cell.dim,
        cell.heads,
        causal=cell.causal,
        max_len=cell.seq_len,
        dropout=effective_attention_dropout(cell.level, cell.attention_dropout),
        **cell.options,
    )
    layer = layer.to(device=device, dtype=dtype).train(cell.mode != "infer")
    grad = cell.mode != "infer"
    if cell.level == "model":
        return _model_workload(cell, device, dtype)
    attend = layer.attend
    if cell.compile:
        _allow_recompiles()
        layer, attend = _compiled(layer), _compiled(layer.attend)
    mask = None  # (B, N), True = real item: the first padding x N positions of every row are padding
    if cell.padding:
        mask = torch.ones(cell.batch_size, cell.seq_len, dtype=torch.bool, device=device)
        mask[:, : round(cell.padding * cell.seq_len)] = False
    if cell.level == "attention":
        inputs = [torch.randn(cell.batch_size, cell.seq_len, cell.dim, device=device, dtype=dtype, requires_grad=grad)]

        def forward():
            return layer(*inputs, mask)
    else:
        head_dim = cell.dim // cell.heads
        shape = (cell.batch_size, cell.heads, cell.seq_len, head_dim)
        inputs = [torch.randn(shape, device=device, dtype=dtype, requires_grad=grad) for _ in range(3)]

        def forward():
            return attend(*inputs, mask)

    if cell.mode == "infer":

        def run():
            with torch.inference_mode():
                return forward()

        return run
    if cell.mode == "fwd":
        return forward  # the graph is built, then dropped
    out_grad = torch.randn_like(forward())

    def run_fwd_bwd():
        for tensor in inputs:
            tensor.grad = None
        layer.zero_grad(set_to_none=True)
        out = forward()
        out.backward(out_grad)
        return out.detach()

    return run_fwd_bwd


def _model_workload(cell: Cell, device, dtype) -> Callable[[], None]:
    import random

    from models import BERT4Rec, EncoderConfig, SASRec

    config = EncoderConfig(
        num_items=MODEL_ITEMS,
        seq_len=cell.seq_len,
        hidden=cell.dim,
        heads=cell.heads,
        layers=MODEL_LAYERS,
        inner=2 * cell.dim,
        dropout=MODEL_DROPOUT,
        attention_dropout=effective_attention_dropout(cell.level, cell.attention_dropout),
        attention=cell.attention,
        attention_options=dict(cell.options),
    )
    model = (SASRec(config) if cell.causal else BERT4Rec(config)).to(device=device, dtype=dtype)
    if cell.compile:
        _allow_recompiles()
        model.encoder = _compiled(model.encoder)
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randint(1, MODEL_ITEMS + 1, (cell.batch_size, cell.seq_len + 1), generator=generator).tolist()
    if cell.mode == "infer":
        model.eval()

        def score():
            with torch.inference_mode():
                return model.score_next(sequences, device)

        return score
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = model.make_batch(sequences, random.Random(0), device)

    def step():
        loss = model.training_loss(batch)
        if cell.mode == "fwd":
            return loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _compiled(fn):
    # NOTE: static shapes: each cell is one shape, and after a recompile for a new length Dynamo would otherwise
    # switch to a dynamic-shape graph, a slower general form than what a user compiling one model gets
    return torch.compile(fn, dynamic=False)


def _allow_recompiles() -> None:
    """One worker builds a module per cell: every new instance or shape is a recompile, and past Dynamo's cache
    limit (8) it silently runs eager; a sweep needs every cell compiled."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4096)
    torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit, 4096)


def tokens(cell: Cell) -> int:
    return cell.batch_size * cell.seq_len


def measure_cell(cell: Cell, *, seed: int = 0, timing: dict | None = None) -> dict:
    """Time and peak memory of one cell: the measured part of a result row."""
    run = make_workload(cell, seed)
    started = time.perf_counter()
    out = run()  # the first call: compiles what torch.compile or a kernel build compiles, so it is recorded apart
    synchronize(cell.device)
    first_call_ms = (time.perf_counter() - started) * 1e3
    if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
        # a time for a mechanism that computes NaN or inf is no result: say so instead of timing it
        return {"status": "error", "message": "the output is not finite (NaN or inf): not timed"}
    del out
    timing = time_callable(run, cell.device, **{"warmup": 0, **(timing or {})})  # the first call warmed up
    with peak_memory(cell.device) as peak:
        run()
    return {
        "status": "ok",
        "message": "",
        "time_ms": timing.median_ms,
        "time_ms_p25": timing.p25_ms,
        "time_ms_p75": timing.p75_ms,
        "repeats": timing.repeats,
        "peak_mem_bytes": peak["bytes"],
        "mem_method": peak["method"],
        "tokens_per_s": tokens(cell) / (timing.median_ms / 1e3),
        "first_call_ms": first_call_ms,
    }


def backend_ran(cell: Cell) -> str | None:
    """Which kernel a cell runs here, for mechanisms with more than one (LinRec, retention, Mamba); else None."""
    from models.attention import attention_class

    options = {**cell.options, "causal": cell.causal}
    return attention_class(cell.attention).backend_for(options, cell.device, DTYPES[cell.dtype], cell.compile)
