"""CI speed gate: machine-independent time ratios against a committed baseline.

Each mechanism is timed at one fixed kernel-level shape together with torch's fused
attention (`sdpa`), interleaved round by round in one process, so that load on a
shared machine hits both alike. The gate compares median(mechanism) / median(sdpa)
with the ratio stored in a committed baseline and fails when it grew by more than the
tolerance (default 1.6x: slower by 60% relative to sdpa).

Ratios to sdpa are not the same on every CPU (sdpa's vector code differs: one mechanism's
ratio measured 1.25 on an Intel Xeon and 0.59 on an AVX2 AMD EPYC), so there is one
baseline per CPU kind, results/gate/baseline-<kind>.json. The gate takes the one of this
machine's kind (CPU model and torch's vector capability); a ratio it lacks, or every ratio
on a kind with no baseline, comes from the other kinds (the largest), with twice the
tolerance, and the table says so.

    python -m bench gate                     # check (exit 1 on a regression)
    python -m bench gate --update-baseline   # re-measure and store this CPU kind's baseline
    python -m bench gate --slowdown linrec=3 # LinRec's workloads run 3 times: must fail
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from models.attention import build_attention

from ..environment import REPO_ROOT, environment, positive_float, positive_int
from ..measure import time_interleaved
from ..schema import attention_label

BASELINE_DIR = REPO_ROOT / "results" / "gate"
CROSS_KIND_FACTOR = 2.0  # the tolerance of a ratio taken from another CPU kind's baseline is this much wider
SHAPE = {"batch_size": 4, "heads": 8, "head_dim": 16, "seq_len": 1024}
GATE_OPTIONS = {"linformer": {"k": 128}}  # the gate's shape (N = 1024) takes a smaller Linformer rank
FAST_INFERENCE = ("linrec", "linformer")  # mechanisms whose inference takes its own code path: gated in infer mode too


def gated(selected: list[tuple[str, dict]] | None = None) -> list[tuple[str, dict, bool, str]]:
    """(mechanism, options, causal, mode) for every registered configuration (plugins included) but the baselines,
    or for the `selected` ones (--attention): a training step in each direction it supports, and inference where it
    has its own path."""
    from models.attention import available_attentions, list_attentions

    capable = available_attentions()
    jobs = []
    for label, (name, options) in list_attentions().items():
        if name in ("sdpa", "softmax") or (selected is not None and (name, options) not in selected):
            continue
        options = {**options, **GATE_OPTIONS.get(name, {})}
        directions = [True, False] if capable[name]["causal"] else [False]
        modes = ["fwd_bwd", "infer"] if name in FAST_INFERENCE and label == name else ["fwd_bwd"]
        jobs += [(name, options, causal, mode) for mode in modes for causal in directions]
    return jobs


REFERENCES = [("sdpa", {}, causal, mode) for mode in ("fwd_bwd", "infer") for causal in (True, False)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        default=None,
        help="baseline JSON (default: results/gate/baseline-<this CPU kind>.json, other kinds' for what it lacks)",
    )
    parser.add_argument(
        "--update-baseline", action="store_true", help="measure and write the baseline instead of checking"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=15, help="interleaved timing rounds (after one warm-up round)"
    )
    parser.add_argument(
        "--tolerance",
        type=positive_float,
        default=None,
        help="allowed growth of a ratio (default: the baseline's, else 1.6)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads (default 1: with several, OpenMP threads that lose their core to another "
        "process spin at barriers and many-op kernels suffer far more than one fused op)",
    )
    parser.add_argument(
        "--attention",
        type=lambda text: [item.strip() for item in text.split(",") if item.strip()],
        default=None,
        help="gate only these mechanisms or named configurations (default: every registered one)",
    )
    parser.add_argument(
        "--slowdown",
        default=None,
        metavar="MECHANISM=N",
        help="demonstration only: run every workload of MECHANISM N times, so the gate must fail",
    )


def _key(name: str, options: dict, causal: bool, mode: str = "fwd_bwd") -> str:
    """Baseline key; fwd_bwd keys keep their original form so older baselines still match."""
    return f"{attention_label(name, options)}|{'causal' if causal else 'bidir'}" + (
        "" if mode == "fwd_bwd" else f"|{mode}"
    )


def _workloads(slowdown: str | None = None, selected=None) -> dict[str, callable]:
    torch.manual_seed(0)
    b, h, d, n = SHAPE["batch_size"], SHAPE["heads"], SHAPE["head_dim"], SHAPE["seq_len"]
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, n, d)
    jobs = {}
    for name, options, causal, mode in REFERENCES + gated(selected):
        layer = build_attention(name, h * d, h, causal=causal, max_len=n, **options)

        def run(layer=layer, mode=mode):
            if mode == "infer":
                with torch.inference_mode():
                    layer.attend(q, k, v, None)
                return
            for t in (q, k, v):
                t.grad = None
            layer.attend(q, k, v, None).backward(grad)

        jobs[_key(name, options, causal, mode)] = run
    if slowdown:  # the gate wraps its own workloads: nothing in the mechanisms knows about it
        mechanism, _, copies = slowdown.partition("=")
        for key in [k for k in jobs if k.split("|")[0].split("[")[0] == mechanism]:
            jobs[key] = lambda run=jobs[key], n=int(copies or 2): [run() for _ in range(n)]
    return jobs


def measure_ratios(
    rounds: int, slowdown: str | None = None, selected=None
) -> tuple[dict[str, float], dict[str, float]]:
    medians, errors = time_interleaved(_workloads(slowdown, selected), rounds)
    if errors:
        raise RuntimeError(f"gate: workloads failed: {errors}")
    ratios = {}
    for name, options, causal, mode in gated(selected):
        key = _key(name, options, causal, mode)
        ratios[key] = medians[key] / medians[_key("sdpa", {}, causal, mode)]
    return ratios, medians


class GateRefused(ValueError):
    """What the gate cannot check, said before anything is measured (exit 2, not a slowdown's 1)."""


def read_baseline(path: Path, keys: list[str]) -> dict:
    """The baseline at `path`, refused in one line when it cannot be read or does not cover `keys`."""
    if path.is_dir():
        raise GateRefused(f"--baseline {path} is a directory; expected a baseline JSON file")
    if not path.exists():
        raise GateRefused(f"baseline {path} not found; create it with --update-baseline")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GateRefused(f"baseline {path} is not readable JSON ({err}); restore it or --update-baseline") from None
    ratios = baseline.get("ratios") if isinstance(baseline, dict) else None
    if not isinstance(ratios, dict) or not ratios:
        raise GateRefused(f"baseline {path} has no 'ratios' (expected an object of mechanism keys -> ratio to sdpa)")
    bad = [k for k, v in ratios.items() if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0]
    if bad:
        raise GateRefused(f"baseline {path}: ratios that are not positive numbers: {', '.join(sorted(bad))}")
    missing = [key for key in keys if key not in ratios]
    if missing:
        raise GateRefused(
            f"baseline {path} does not cover {', '.join(missing)}: nothing to compare them with; "
            "measure a baseline that does (--update-baseline) or leave them out (--attention)"
        )
    return baseline


def _check_slowdown(slowdown: str | None) -> None:
    if not slowdown:
        return
    mechanism, _, copies = slowdown.partition("=")
    names = {name for name, _, _, _ in gated()}
    if mechanism not in names or not copies.isdigit() or int(copies) < 2:
        raise GateRefused(
            f"--slowdown {slowdown!r}: expected MECHANISM=N with N >= 2 and MECHANISM one of {', '.join(sorted(names))}"
        )


def main(args) -> int:
    try:
        return _main(args)
    except GateRefused as err:
        print(f"gate: {err}")
        return 2


def _main(args) -> int:
    torch.set_num_threads(args.threads)
    baseline_path = (
        Path(args.baseline) if args.baseline else BASELINE_DIR / f"baseline-{kind_slug(machine_kind())}.json"
    )
    slowdown = getattr(args, "slowdown", None)
    if slowdown and args.update_baseline:
        raise GateRefused("--slowdown only demonstrates a failure; it cannot write a baseline")
    _check_slowdown(slowdown)
    selected = getattr(args, "attention", None)
    if selected is not None and not gated(selected):
        raise GateRefused("--attention names only baselines (sdpa, softmax); nothing to gate")
    if selected is not None and args.update_baseline:
        raise GateRefused("a baseline covers every mechanism; drop --attention with --update-baseline")
    if args.tolerance is not None and not (1 <= args.tolerance < float("inf")):
        raise GateRefused(f"--tolerance must be a finite number >= 1, got {args.tolerance}")
    if not args.update_baseline:  # everything the check needs, before a minute of measuring
        keys = [_key(*job) for job in gated(selected)]
        if args.baseline:
            baseline = read_baseline(baseline_path, keys)
            reference = {key: (baseline["ratios"][key], 1.0, baseline_path.name) for key in keys}
        else:
            baseline, reference = committed_reference(keys)
        if baseline.get("gate_threads", args.threads) != args.threads:
            raise GateRefused(
                f"the baseline was measured with {baseline['gate_threads']} thread(s), this run uses "
                f"{args.threads}: ratios differ; pass --threads {baseline['gate_threads']}"
            )
    ratios, medians = measure_ratios(args.rounds, slowdown, selected)
    if args.update_baseline:
        payload = {
            "shape": SHAPE,
            "mode": "kernel fp32, fwd_bwd (keys without a mode) and infer",
            "rounds": args.rounds,
            "tolerance": args.tolerance or 1.6,
            "gate_threads": args.threads,
            "ratios": ratios,
            "medians_ms": {k: v * 1e3 for k, v in medians.items()},
            **environment("cpu"),
        }
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        baseline_path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        print(f"baseline written to {baseline_path}")
        _print_table(
            ratios, {k: (r, 1.0, baseline_path.name) for k, r in ratios.items()}, payload["tolerance"], medians
        )
        return 0
    tolerance = args.tolerance or baseline.get("tolerance", 1.6)
    failures = _print_table(ratios, reference, tolerance, medians)
    if failures:  # a burst of load can hit one mechanism: a real regression fails twice
        print(f"\n{len(failures)} ratio(s) over the limit; measuring again (a ratio fails only if both runs fail)\n")
        again, medians = measure_ratios(args.rounds, slowdown, selected)
        ratios = {key: min(ratios[key], again[key]) for key in ratios}
        failures = _print_table(ratios, reference, tolerance, medians)
    if failures:
        print(f"\nSPEED GATE FAILED: {', '.join(failures)} slower than {tolerance:.2f}x their baseline ratio to sdpa")
        return 1
    print(f"\nspeed gate passed ({len(ratios)} ratios within {tolerance:.2f}x of baseline)")
    return 0


def machine_kind() -> dict:
    """This machine's CPU kind: its model name and the vector code torch dispatches to (AVX2, AVX512, ...)."""
    from ..environment import device_name

    return {"device": device_name("cpu"), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def kind_slug(kind: dict) -> str:
    name = kind["device"].removeprefix("CPU ").replace("(R)", "").replace("(TM)", "").replace("Processor", "")
    words = [w for w in name.lower().replace("/", " ").split() if w not in ("cpu", "@")]
    capability = str(kind.get("cpu_capability") or "").lower()
    return "-".join(words + ([capability] if capability and capability != "default" else []))


def committed_reference(keys: list[str], folder: Path = BASELINE_DIR) -> tuple[dict, dict]:
    """(the baseline of this machine's kind, or the first; key -> (ratio, tolerance factor, source file)) from
    every committed baseline: this kind's ratio where it has one, else the largest of the other kinds', whose
    tolerance is CROSS_KIND_FACTOR wider."""
    paths = sorted(folder.glob("baseline*.json"))
    if not paths:
        raise GateRefused(f"no baseline in {folder}; create this machine's with --update-baseline")
    baselines = [(path, read_baseline(path, [])) for path in paths]
    kind = machine_kind()

    def same_kind(baseline: dict) -> bool:
        capability = baseline.get("cpu_capability")
        return baseline.get("device") == kind["device"] and capability in (None, kind["cpu_capability"])

    own = [(path, b) for path, b in baselines if same_kind(b)]
    reference, missing = {}, []
    for key in keys:
        mine = [(b["ratios"][key], path.name) for path, b in own if key in b["ratios"]]
        others = [(b["ratios"][key], path.name) for path, b in baselines if key in b["ratios"]]
        if mine:
            reference[key] = (mine[0][0], 1.0, mine[0][1])
        elif others:
            ratio, source = max(others)
            reference[key] = (ratio, CROSS_KIND_FACTOR, source)
        else:
            missing.append(key)
    if missing:
        raise GateRefused(
            f"no committed baseline covers {', '.join(missing)}: nothing to compare them with; measure one that "
            "does (--update-baseline) or leave them out (--attention)"
        )
    return (own or baselines)[0][1], reference


def _print_table(ratios: dict, reference: dict, tolerance: float, medians: dict) -> list[str]:
    shape = ", ".join(f"{k}={v}" for k, v in SHAPE.items())
    print(f"speed gate — kernel fp32 (fwd+bwd unless marked |infer), {shape}, torch threads {torch.get_num_threads()}")
    print(f"{'mechanism':38} {'time ms':>9} {'ratio/sdpa':>11} {'baseline':>9} {'limit':>8}  status")
    failures = []
    for key, ratio in ratios.items():
        base, factor, source = reference.get(key, (None, 1.0, ""))
        if base is None:
            status, limit = "new (no baseline)", float("nan")
        else:
            limit = base * tolerance * factor
            status = "ok" if ratio <= limit else "SLOWER"
            if status != "ok":
                failures.append(key)
            if factor != 1.0:
                status += f" (another CPU kind's baseline, {source}: {factor:g}x the tolerance)"
        print(
            f"{key:38} {medians[key] * 1e3:9.2f} {ratio:11.3f} {base if base is not None else float('nan'):9.3f} "
            f"{limit:8.3f}  {status}"
        )
    for reference in REFERENCES:
        key = _key(*reference)
        print(f"{key:38} {medians[key] * 1e3:9.2f}")
    return failures
