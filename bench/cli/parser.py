"""The command line's parser: one small function per command, each adding its flags (with a sentence and the choices
for every one); `build_parser` puts them together."""

from __future__ import annotations

import argparse

from ..environment import non_negative_float, positive_float, positive_int
from ..schema import parse_attention_spec
from . import commands


def _csv(cast):
    def parse(text: str):
        try:
            return [cast(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {cast.__name__}: {err}") from None

    return parse


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "causal"):
        return True
    if lowered in ("false", "0", "no", "bidir", "bidirectional"):
        return False
    raise ValueError(f"{text!r} is not true/false")


def _add_sweep_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        help="quick | paper | mixers (causal mixers to N = 16,384, batch 1) | short-n (N = 50, 200 at width 64, batch "
        "128) | gpu (axes flags are ignored when given)",
    )
    parser.add_argument(
        "--attention",
        type=_csv(str),
        default=None,
        help="e.g. sdpa,linrec,linrec-official,performer:nb_features=64 (plugin names too)",
    )
    parser.add_argument("--seq-len", type=_csv(int), default=[64, 256, 1024, 4096], help="sequence lengths N")
    parser.add_argument("--batch-size", type=_csv(int), default=[8], help="batch sizes B")
    parser.add_argument("--dim", type=int, default=128, help="model width")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--mode", type=_csv(str), default=["fwd_bwd"], help="fwd,fwd_bwd,infer")
    parser.add_argument("--causal", type=_csv(_bool), default=[False, True], help="false,true: bidirectional, causal")
    parser.add_argument(
        "--padding",
        type=_csv(float),
        default=[0.0],
        help="fractions of every sequence left-padded (masked), e.g. 0,0.33; attention and kernel levels",
    )
    parser.add_argument(
        "--compile",
        type=_csv(_bool),
        default=[False],
        help="false,true: eager and torch.compile'd (static shapes) side by side; the first call, which compiles, "
        "is recorded apart (first_call_ms)",
    )
    parser.add_argument(
        "--attention-dropout",
        type=_csv(float),
        default=[None],
        help="the layers' dropout, e.g. 0,0.2 (softmax: on the probabilities); default: none for layers, "
        "0.2 (RecBole's) in model cells",
    )
    parser.add_argument(
        "--level",
        default="attention",
        choices=["attention", "kernel", "model"],
        help="what is timed: the layer with projections, the bare kernel, or a whole SASRec/BERT4Rec step",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1")
    parser.add_argument("--dtype", type=_csv(str), default=["fp32"], help="fp32,bf16,fp16")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads in the worker (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and weights")
    parser.add_argument(
        "--max-cell-s", type=positive_float, default=120.0, help="time budget per cell; longer series stop growing N"
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=non_negative_float,
        default=None,
        help="how long a group timed under load waits for quiet before its one re-measurement (default 60)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")


def _option_pair(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option {text!r} must be key=value")
    key, value = text.split("=", 1)
    return parse_attention_spec(f"option:{key}={value}")[1].popitem()


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    from dataclasses import MISSING, fields

    from ..training.config import SETTING_CHOICES, TrainConfig, field_notes

    notes = field_notes()

    parser.add_argument("--variant", help="attention variant (linrec: paper | official)")
    parser.add_argument(
        "--option", action="append", type=_option_pair, help="extra attention option key=value (repeatable)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (refused without it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    for f in fields(TrainConfig):
        if f.name in ("attention_options",):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if f.name == "causal":
            parser.add_argument(
                flag, action="store_true", default=None, help="causal attention (SASRec all_positions: always)"
            )
        elif isinstance(default, bool):
            parser.add_argument(flag, type=_bool, default=None, help=f"true/false (default: {default})")
        elif f.name == "attention_dropout":
            parser.add_argument(flag, type=float, default=None, help="default: the same as --dropout")
        else:
            kind = type(default) if default is not None else str
            # --max-minutes 0: stop at once (test the checkpoint's best epoch); NaN and inf refused
            kind = non_negative_float if f.name == "max_minutes" else (int if f.name == "threads" else kind)
            note = f"{notes[f.name]}; " if notes.get(f.name) else ""
            listed = f.name in SETTING_CHOICES and SETTING_CHOICES[f.name] not in note
            choices = f"{SETTING_CHOICES[f.name]}; " if listed else ""
            parser.add_argument(flag, type=kind, default=None, help=f"{note}{choices}default: {default}")


def _add_main(sub, plugin) -> None:
    main = sub.add_parser(
        "main",
        parents=[plugin],
        help="the main job: quick sweep + plots and tables into a fresh run folder, compared with the reference",
    )
    _add_sweep_args(main)
    main.add_argument("--out", default=None, help="run folder (default: a fresh runs/main-DATE-TIME)")
    main.add_argument("--resume", action="store_true", help="continue the cells already in OUT/sweep.jsonl")
    main.set_defaults(func=commands.cmd_main)


def _add_sweep(sub, plugin) -> None:
    sweep = sub.add_parser("sweep", parents=[plugin], help="measure a grid of cells into a JSON-lines file (resumable)")
    _add_sweep_args(sweep)
    sweep.add_argument("--out", help="results file (default results/sweeps/PRESET-DEVICE.jsonl)")
    sweep.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="measure shard I of N (0-based; a SLURM array task) into OUT.shard-I-of-N.jsonl",
    )
    sweep.add_argument(
        "--shard-by",
        default="series",
        choices=["series", "family"],
        help="deal series round robin, or keep every mechanism of a shape on one host",
    )
    sweep.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="local: one worker process here; ray: one task per family on a Ray cluster (pip install ray)",
    )
    sweep.add_argument(
        "--address", default=None, help="ray: the cluster to join (e.g. auto); default: start a local instance"
    )
    sweep.add_argument(
        "--cpus-per-task",
        type=non_negative_float,
        default=None,
        help="ray: CPUs each task reserves (default: --threads or 1)",
    )
    sweep.add_argument(
        "--gpus-per-task", type=non_negative_float, default=None, help="ray: GPUs each task reserves (e.g. 1)"
    )
    sweep.set_defaults(func=commands.cmd_sweep)


def _add_merge(sub, plugin) -> None:
    merge = sub.add_parser(
        "merge", help="one results file from shards or several runs: one row per cell, the latest wins"
    )
    merge.add_argument("out", help="the merged results file")
    merge.add_argument("sources", nargs="+", help="results files to merge (e.g. OUT.shard-*-of-N.jsonl)")
    merge.set_defaults(func=commands.cmd_merge)


def _add_report(sub, plugin) -> None:
    rep = sub.add_parser("report", help="plots and tables from stored results")
    rep.add_argument("results", nargs="*", help="JSON-lines results files (or training results.json)")
    rep.add_argument("--out", help="output folder")
    rep.add_argument("--committed", action="store_true", help="regenerate every committed report (results/reports/)")
    rep.set_defaults(func=commands.cmd_report)


def _add_train(sub, plugin) -> None:
    tr = sub.add_parser(
        "train", parents=[plugin], help="train SASRec / BERT4Rec with any attention; leave-one-out evaluation"
    )
    _add_train_args(tr)
    tr.set_defaults(func=commands.cmd_train)


def _add_accuracy(sub, plugin) -> None:
    acc = sub.add_parser(
        "accuracy",
        parents=[plugin],
        help="the sweep's training level: one training run per cell, accuracy rows (resumable)",
    )
    acc.add_argument(
        "--attention",
        type=_csv(str),
        default=None,
        help="keep the preset's cells of these mechanisms or named configurations (e.g. sdpa,linrec-official)",
    )
    acc.add_argument(
        "--preset",
        default="quick",
        help="quick (synthetic, minutes) | paper (ML-1M, width 64) | gpu (ML-1M, width 128 x 8 heads) | "
        "ablation (ML-100K, one recipe choice at a time) | "
        "ablation-ml-1m (ML-1M: position numbering, tie order) | "
        "longrange (recall / repeat / taste at distances 8-4096, generated) | longrange-gpu (8,192 items) | "
        "longrange-budget (recall at k = 64 and 256, 4x the epochs, for those below the ceiling) | "
        "seeds (ML-1M N = 200: sdpa and LinRec 5 seeds, the others 3; Beauty N = 50) | longrange-round2 (mqar and "
        "taste, a learning rate per mechanism, 3 seeds) | longrange-diagnosis (recall at k = 64: Mamba and retention, "
        "one change at a time)",
    )
    acc.add_argument("--out", help="results file (default results/sweeps/accuracy-PRESET-DEVICE.jsonl)")
    acc.add_argument("--work-dir", help="checkpoints and logs per cell (default runs/accuracy)")
    acc.add_argument("--jobs", type=positive_int, default=1, help="cells trained at once (each in its own process)")
    acc.add_argument("--threads", type=positive_int, default=None, help="torch threads per cell (default: torch's)")
    acc.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    acc.add_argument(
        "--data-dir", default=None, help="folder holding the datasets (else $LINREC_DATA, then ../shared/data)"
    )
    acc.add_argument(
        "--only", type=_csv(str), default=None, help="keep cells whose name contains one of these substrings"
    )
    acc.add_argument(
        "--snapshot",
        action="store_true",
        help="no training: a 'partial' row (best epoch so far, tested) for each cell stopped mid-training",
    )
    acc.add_argument(
        "--skip-done-in",
        type=_csv(str),
        default=None,
        metavar="FILES",
        help="results files (comma-separated) whose finished cells are skipped too: rows another machine or "
        "another driver wrote (default without --out: every committed results file of this kind and device)",
    )
    acc.add_argument(
        "--status",
        action="store_true",
        help="no training: each cell's state (finished with its test reading, part-way with its epoch and what is "
        "left, waiting) and whether a driver is training now",
    )
    acc.set_defaults(func=commands.cmd_accuracy)


def _add_data(sub, plugin) -> None:
    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="users, items, interactions, length percentiles")
    stats.add_argument("dataset", help="registered name (e.g. ml-1m) or a file path")
    stats.add_argument(
        "--data-dir", default=None, help="folder holding the datasets (else $LINREC_DATA, then ../shared/data)"
    )
    stats.add_argument("--min-count", type=int, default=0, help="k-core filtering")
    stats.add_argument(
        "--format",
        default=None,
        help="the file's format when it cannot be told from its name and lines "
        "(user_lines, user_item_pairs, recbole_inter, movielens_dat, movielens_udata, checkins)",
    )
    stats.set_defaults(func=commands.cmd_data_stats)
    prep = data_sub.add_parser("prepare", help="turn a dataset's public download into the file the suite reads")
    prep.add_argument("dataset", help="registered name (ml-1m, ml-100k, beauty, ...)")
    prep.add_argument("source", help="the downloaded file (e.g. ml-1m.zip, ml-100k.zip, Beauty.txt)")
    prep.add_argument("--data-dir", default=None, help="where datasets live (else $LINREC_DATA)")
    prep.set_defaults(func=commands.cmd_data_prepare)


def _add_peers(sub, plugin) -> None:
    peers = sub.add_parser(
        "peers",
        parents=[plugin],
        help="ours vs performer-pytorch / linformer / sdpa, interleaved; --limits for bandwidth and FLOP rate",
    )
    from ..timing.peers import add_arguments as add_peer_arguments

    add_peer_arguments(peers)
    peers.set_defaults(func=commands.cmd_peers)


def _add_gate(sub, plugin) -> None:
    gate = sub.add_parser(
        "gate", parents=[plugin], help="CI speed gate: time ratios vs sdpa against a committed baseline"
    )
    from ..timing.gate import add_arguments

    add_arguments(gate)
    gate.set_defaults(func=commands.cmd_gate)


def _add_kernels(sub, plugin) -> None:
    kernels = sub.add_parser(
        "kernels", help="say in one line whether the C++ kernels are built (pip hides what the install printed)"
    )
    kernels.add_argument("--build", action="store_true", help="build the missing ones now instead of on first use")
    kernels.set_defaults(func=commands.cmd_kernels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="LinRec attention benchmark suite")
    sub = parser.add_subparsers(dest="command", required=True)
    plugin = argparse.ArgumentParser(add_help=False)
    plugin.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import MODULE (repeatable) here and in every worker: mechanisms it registers join the run",
    )
    adders = [
        _add_main,
        _add_sweep,
        _add_merge,
        _add_report,
        _add_train,
        _add_accuracy,
        _add_data,
        _add_peers,
        _add_gate,
        _add_kernels,
    ]
    for add in adders:
        add(sub, plugin)
    return parser
