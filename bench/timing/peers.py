"""Side-by-side comparison with the implementations people already use, and the
machine's limits.

    python -m bench peers [--seq-len 256,1024,4096,8192] [--rounds 5] [--out results/peers/peers-cpu.jsonl]

Jobs are timed interleaved, round by round, in one process (so machine noise hits all
alike); medians per job, then ratios ours / peer and ours / sdpa per cell.
- kernel level: q, k, v (B, H, N, d) in, output out, projections excluded:
  functional.linrec_attention vs F.scaled_dot_product_attention (and, on CUDA,
  flash-linear-attention's chunked linear attention when installed);
- on CUDA, Mamba and retention layers on mamba-ssm's / fla's kernels beside their PyTorch paths, when installed;
- layer level: build_attention(...) modules vs performer-pytorch's SelfAttention /
  FastAttention and linformer's LinformerSelfAttention, same shapes and options.
Peers are optional (pip install -e .[peers]); a missing one is reported, not fatal.

Limits (--limits): achieved bandwidth (the minimum bytes LinRec's forward must move,
q, k, v read and the output written, / time) and FLOP rate, as fractions of what this
machine does for a plain copy and a plain matmul of the same size, measured in the
same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from models.attention import build_attention
from models.attention.functional import compiled_linrec_attention, linrec_attention

from ..environment import REPO_ROOT, environment, positive_int
from ..measure import time_interleaved
from ..results import append_row

DEFAULT_OUT = REPO_ROOT / "results" / "peers" / "peers-cpu.jsonl"


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _add_performer_pytorch(add, tag, causal, x, qkv, dim, heads, nb_features, device) -> None:
    """lucidrains' performer-pytorch, layer and kernel, where installed."""
    q, k, v = qkv
    head_dim = dim // heads
    performer_pytorch = _optional("performer_pytorch")
    if performer_pytorch is not None:
        peer = performer_pytorch.SelfAttention(
            dim=dim,
            heads=heads,
            dim_head=head_dim,
            causal=causal,
            nb_features=nb_features,
            feature_redraw_interval=10**9,
        ).to(device)  # fixed features, like ours with redraw_interval=0
        add(f"layer/performer-pytorch/{tag}", lambda m=peer: m(x), (x,))
        fast = performer_pytorch.FastAttention(dim_heads=head_dim, nb_features=nb_features, causal=causal).to(device)
        add(f"kernel/performer-pytorch/{tag}", lambda m=fast: m(q, k, v), (q, k, v))


def _add_cuda_packages(add, tag, x, qkv, dim, heads, device) -> None:
    """On CUDA, causal: flash-linear-attention's chunked kernel, LinRec on it, and Mamba / retention on their
    packages' fused kernels beside their PyTorch paths, where installed."""
    q, k, v = qkv
    fla = _optional("fla.ops.linear_attn")
    if fla is not None:  # fla takes (B, N, H, d): the transposes are part of what a user would pay

        def fla_chunk(fla=fla):
            return fla.chunk_linear_attn(*(t.transpose(1, 2) for t in (q, k, v)), scale=1.0, normalize=False)[0]

        add(f"kernel/fla-chunk-linear/{tag}", fla_chunk, (q, k, v))
        add(f"kernel/linrec-fla/{tag}", lambda: linrec_attention(q, k, v, causal=True, backend="fla"), (q, k, v))
    # the recurrent mixers on their packages' fused kernels beside their PyTorch paths, through our layers
    for name, package, fused in (("mamba", "mamba_ssm", "mamba-ssm"), ("retention", "fla", "fla")):
        if _optional(package) is not None:
            for backend in ("torch", fused):
                layer = build_attention(name, dim, heads, causal=True, backend=backend).to(device)
                add(f"layer/{name}-{backend}/{tag}", lambda m=layer: m(x), (x,))


def peer_jobs(
    seq_len: int,
    batch: int,
    dim: int,
    heads: int,
    mode: str,
    device: str,
    nb_features: int,
    linformer_k: int,
    compiled: bool = False,
) -> dict:
    """name ("level/implementation/causal|bidir") -> zero-arg callable."""
    torch.manual_seed(0)
    head_dim = dim // heads
    grad = mode == "fwd_bwd"
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, device=device, requires_grad=grad) for _ in range(3))
    x = torch.randn(batch, seq_len, dim, device=device, requires_grad=grad)
    jobs = {}

    def add(name, forward, inputs):
        out_grad = None

        def run():
            nonlocal out_grad
            if not grad:
                with torch.inference_mode():
                    forward()
                return
            for t in inputs:
                t.grad = None
            out = forward()
            if out_grad is None:
                out_grad = torch.randn_like(out)
            out.backward(out_grad)

        jobs[name] = run

    for causal in (False, True):
        tag = "causal" if causal else "bidir"
        add(f"kernel/sdpa/{tag}", lambda c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c), (q, k, v))
        add(f"kernel/linrec/{tag}", lambda c=causal: linrec_attention(q, k, v, causal=c), (q, k, v))
        if compiled:
            add(
                f"kernel/linrec-compiled/{tag}",
                lambda c=causal: compiled_linrec_attention()(q, k, v, causal=c),
                (q, k, v),
            )
        ours_sdpa = build_attention("sdpa", dim, heads, causal=causal).to(device)
        add(f"layer/sdpa/{tag}", lambda m=ours_sdpa: m(x), (x,))
        ours_performer = build_attention(
            "performer", dim, heads, causal=causal, nb_features=nb_features, redraw_interval=0
        ).to(device)
        add(f"layer/performer/{tag}", lambda m=ours_performer: m(x), (x,))
        add(f"kernel/performer/{tag}", lambda m=ours_performer: m.attend(q, k, v, None), (q, k, v))
        _add_performer_pytorch(add, tag, causal, x, (q, k, v), dim, heads, nb_features, device)
        if device.startswith("cuda") and causal:
            _add_cuda_packages(add, tag, x, (q, k, v), dim, heads, device)
    ours_linformer = build_attention("linformer", dim, heads, max_len=seq_len, k=linformer_k).to(device)
    add("layer/linformer/bidir", lambda m=ours_linformer: m(x), (x,))
    linformer = _optional("linformer")
    if linformer is not None:
        peer = linformer.LinformerSelfAttention(
            dim=dim, seq_len=seq_len, k=linformer_k, heads=heads, dim_head=head_dim
        ).to(device)
        add("layer/linformer-lucidrains/bidir", lambda m=peer: m(x), (x,))
    return jobs


# Which of our jobs is compared with which peer.
PAIRS = [
    ("layer/performer", "layer/performer-pytorch"),
    ("kernel/performer", "kernel/performer-pytorch"),
    ("layer/linformer", "layer/linformer-lucidrains"),
    ("kernel/linrec", "kernel/fla-chunk-linear"),
    ("kernel/linrec-fla", "kernel/fla-chunk-linear"),
    ("layer/mamba-torch", "layer/mamba-mamba-ssm"),  # our scan against the fused one, same layer around it
    ("layer/retention-torch", "layer/retention-fla"),
]


def _selected(jobs: dict, only: tuple[str, ...] | None) -> dict:
    """Jobs whose name contains one of `only`, plus the sdpa jobs every ratio is taken against."""
    if not only:
        return jobs
    return {name: job for name, job in jobs.items() if "/sdpa/" in name or any(word in name for word in only)}


def run_peers(
    seq_lens,
    *,
    batch=8,
    dim=128,
    heads=8,
    modes=("fwd_bwd", "infer"),
    rounds=5,
    device="cpu",
    nb_features=64,
    linformer_k=256,
    out: Path = DEFAULT_OUT,
    compiled: bool = False,
    only: tuple[str, ...] | None = None,
) -> list[dict]:
    rows = []
    env = environment(device)
    for mode in modes:
        for n in seq_lens:
            jobs = _selected(peer_jobs(n, batch, dim, heads, mode, device, nb_features, linformer_k, compiled), only)
            medians, errors = time_interleaved(jobs, rounds, device)
            for name, seconds in medians.items():
                level, impl, tag = name.split("/")
                sdpa = medians.get(f"{level}/sdpa/{tag}")
                row = {
                    "kind": "peers",
                    "level": level,
                    "implementation": impl,
                    "causal": tag == "causal",
                    "seq_len": n,
                    "batch_size": batch,
                    "dim": dim,
                    "heads": heads,
                    "mode": mode,
                    "dtype": "fp32",
                    "time_ms": seconds * 1e3,
                    "ratio_vs_sdpa": seconds / sdpa if sdpa else None,
                    "rounds": rounds,
                    "nb_features": nb_features,
                    "linformer_k": linformer_k,
                    **env,
                }
                for ours, peer in PAIRS:
                    if f"{level}/{impl}" == ours and f"{peer}/{tag}" in medians:
                        row["peer"] = peer.split("/")[1]
                        row["ours_over_peer"] = seconds / medians[f"{peer}/{tag}"]
                rows.append(row)
                append_row(out, row)
            for name, message in errors.items():
                row = {
                    "kind": "peers",
                    "implementation": name,
                    "seq_len": n,
                    "mode": mode,
                    "status": "error",
                    "message": message,
                    **env,
                }
                rows.append(row)
                append_row(out, row)
            print(f"N={n} {mode}: " + ", ".join(f"{k}={v * 1e3:.1f}ms" for k, v in medians.items()), flush=True)
    return rows


# ------------------------------------------------------------------ limits


def measure_limits(
    seq_len: int = 8192,
    batch: int = 8,
    heads: int = 8,
    head_dim: int = 16,
    rounds: int = 7,
    device: str = "cpu",
    compiled: bool = False,
) -> dict:
    """LinRec forward against a plain copy and a plain matmul measured in the same run."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, device=device) for _ in range(3))
    bytes_min = 4 * q.numel() * q.element_size()  # read q, k, v; write the output
    src = torch.randn(bytes_min // 2 // 4, device=device)  # copying it reads + writes bytes_min
    dst = torch.empty_like(src)
    side = 2048
    a, b = torch.randn(side, side, device=device), torch.randn(side, side, device=device)
    per_head = batch * heads
    chunk = 32
    flops = {
        False: per_head * 4 * seq_len * head_dim**2,
        True: per_head * (4 * seq_len * head_dim**2 + 4 * seq_len * chunk * head_dim),
    }
    jobs = {
        "copy": lambda: dst.copy_(src),
        "matmul": lambda: torch.mm(a, b),
        "linrec-bidir-fwd": lambda: linrec_attention(q, k, v, causal=False),
        "linrec-causal-fwd": lambda: linrec_attention(q, k, v, causal=True),
    }
    if compiled:  # the opt-in torch.compile path, same inputs
        kernel = compiled_linrec_attention()
        jobs["linrec-bidir-fwd-compiled"] = lambda: kernel(q, k, v, causal=False)
        jobs["linrec-causal-fwd-compiled"] = lambda: kernel(q, k, v, causal=True)
    medians, _ = time_interleaved({name: torch.inference_mode()(f) for name, f in jobs.items()}, rounds, device)
    copy_bw = bytes_min / medians["copy"]
    matmul_rate = 2 * side**3 / medians["matmul"]
    result = {
        "kind": "limits",
        "seq_len": seq_len,
        "batch_size": batch,
        "heads": heads,
        "head_dim": head_dim,
        "min_bytes": bytes_min,
        "copy_GBps": copy_bw / 1e9,
        "matmul_GFLOPs": matmul_rate / 1e9,
        **environment(device),
    }
    for name, seconds in medians.items():
        if not name.startswith("linrec-"):
            continue
        causal = name.startswith("linrec-causal")
        result[f"{name}_ms"] = seconds * 1e3
        result[f"{name}_GBps"] = bytes_min / seconds / 1e9
        result[f"{name}_fraction_of_copy"] = (bytes_min / seconds) / copy_bw
        result[f"{name}_GFLOPs"] = flops[causal] / seconds / 1e9
        result[f"{name}_fraction_of_matmul"] = (flops[causal] / seconds) / matmul_rate
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", default="256,1024,4096,8192", help="sequence lengths N, comma-separated")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences per step (B)")
    parser.add_argument("--dim", type=positive_int, default=128, help="model width")
    parser.add_argument("--heads", type=positive_int, default=8, help="attention heads")
    parser.add_argument("--mode", default="fwd_bwd,infer", help="fwd | fwd_bwd | infer, comma-separated")
    parser.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds per cell")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--nb-features", type=positive_int, default=64, help="Performer's random features")
    parser.add_argument("--linformer-k", type=positive_int, default=256, help="Linformer's projected length")
    parser.add_argument("--limits", action="store_true", help="also measure the bandwidth / FLOP-rate limit figure")
    parser.add_argument(
        "--compiled", action="store_true", help="also time LinRec's torch.compile path (peers and limit figure)"
    )
    parser.add_argument("--only", help="comma-separated name parts, e.g. performer,linformer (sdpa is always kept)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results file (JSON lines; the table beside it as .md)")


def main(args) -> list[dict]:
    """Measure (and with --limits, the machine's limits); the rows, for the command's table."""
    out = Path(args.out)
    rows = run_peers(
        [int(n) for n in args.seq_len.split(",")],
        batch=args.batch_size,
        dim=args.dim,
        heads=args.heads,
        modes=tuple(args.mode.split(",")),
        rounds=args.rounds,
        device=args.device,
        nb_features=args.nb_features,
        linformer_k=args.linformer_k,
        out=out,
        compiled=args.compiled,
        only=tuple(args.only.split(",")) if args.only else None,
    )
    if args.limits:
        limits = measure_limits(device=args.device, compiled=args.compiled)
        append_row(out.with_name("limits.jsonl"), limits)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in limits.items()}, indent=1))
    return rows
