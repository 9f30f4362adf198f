"""Command line: python -m bench {main,sweep,report,gate,...} --help"""

from __future__ import annotations

import argparse
import errno
import sys

from ..environment import non_negative_float, positive_float, positive_int, raise_on_sigterm, stop_code, stop_name
from ..plugins import PluginError, load_plugins
from ..results import parse_attention_spec
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


# a full disk, a read-only or forbidden folder, a quota: said in one line naming the path
_STORAGE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


class UnknownAttention(ValueError):
    """An --attention value that names no registered mechanism or configuration."""


def resolve_attention(spec: str, flag: str = "--attention") -> tuple[str, dict]:
    """A named configuration ('linrec-official') or 'name:key=value:...' -> (mechanism, options), through the one
    registry. Called after --plugin modules are imported, so their names resolve like the built-in ones."""
    import difflib

    from models.attention import available_attentions, list_attentions

    named = list_attentions()
    if spec in named:
        return named[spec]
    try:
        name, options = parse_attention_spec(spec)
    except ValueError as err:
        raise UnknownAttention(f"{flag} {err}") from None
    if name not in available_attentions():
        known = sorted({*named, *available_attentions()})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UnknownAttention(
            f"{flag} {spec!r}: no such mechanism or named configuration; {hint}registered: {', '.join(known)} "
            "(a --plugin module adds its own)"
        )
    return name, options


def _resolve_attention_flags(args) -> None:
    """Turn every command's --attention strings into (mechanism, options) now that plugins are loaded; an unknown
    name exits with status 2 before anything runs."""
    specs = getattr(args, "attention", None)
    if not specs:
        return
    try:
        if args.command == "train":  # one mechanism; a named configuration's options join --option / --variant
            name, options = resolve_attention(specs)
            args.attention, args.option = name, [*options.items(), *(args.option or [])]
        else:
            args.attention = [resolve_attention(spec) for spec in specs]
    except UnknownAttention as err:
        print(f"python -m bench {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)


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
    parser.add_argument("--seq-len", type=_csv(int), default=[64, 256, 1024, 4096])
    parser.add_argument("--batch-size", type=_csv(int), default=[8])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mode", type=_csv(str), default=["fwd_bwd"], help="fwd,fwd_bwd,infer")
    parser.add_argument("--causal", type=_csv(_bool), default=[False, True])
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
    parser.add_argument("--level", default="attention", choices=["attention", "kernel", "model"])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1")
    parser.add_argument("--dtype", type=_csv(str), default=["fp32"], help="fp32,bf16,fp16")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads in the worker (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-cell-s", type=positive_float, default=120.0, help="time budget per cell; longer series stop growing N"
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=non_negative_float,
        default=None,
        help="how long a group timed under load waits for quiet before its one re-measurement (default 60)",
    )
    parser.add_argument("--no-progress", action="store_true")


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
    parser.add_argument("--no-progress", action="store_true")
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

    main = sub.add_parser(
        "main",
        parents=[plugin],
        help="the main job: quick sweep + plots and tables into a fresh run folder, compared with the reference",
    )
    _add_sweep_args(main)
    main.add_argument("--out", default=None, help="run folder (default: a fresh runs/main-DATE-TIME)")
    main.add_argument("--resume", action="store_true", help="continue the cells already in OUT/sweep.jsonl")
    main.set_defaults(func=commands.cmd_main)

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

    merge = sub.add_parser(
        "merge", help="one results file from shards or several runs: one row per cell, the latest wins"
    )
    merge.add_argument("out", help="the merged results file")
    merge.add_argument("sources", nargs="+", help="results files to merge (e.g. OUT.shard-*-of-N.jsonl)")
    merge.set_defaults(func=commands.cmd_merge)

    rep = sub.add_parser("report", help="plots and tables from stored results")
    rep.add_argument("results", nargs="*", help="JSON-lines results files (or training results.json)")
    rep.add_argument("--out", help="output folder")
    rep.add_argument("--committed", action="store_true", help="regenerate every committed report (results/reports/)")
    rep.set_defaults(func=commands.cmd_report)

    tr = sub.add_parser(
        "train", parents=[plugin], help="train SASRec / BERT4Rec with any attention; leave-one-out evaluation"
    )
    _add_train_args(tr)
    tr.set_defaults(func=commands.cmd_train)

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
        "taste, a learning rate per mechanism, 3 seeds)",
    )
    acc.add_argument("--out", help="results file (default results/sweeps/accuracy-PRESET-DEVICE.jsonl)")
    acc.add_argument("--work-dir", help="checkpoints and logs per cell (default runs/accuracy)")
    acc.add_argument("--jobs", type=positive_int, default=1, help="cells trained at once (each in its own process)")
    acc.add_argument("--threads", type=positive_int, default=None, help="torch threads per cell (default: torch's)")
    acc.add_argument("--device", default="cpu")
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

    peers = sub.add_parser(
        "peers",
        parents=[plugin],
        help="ours vs performer-pytorch / linformer / sdpa, interleaved; --limits for bandwidth and FLOP rate",
    )
    from ..timing.peers import add_arguments as add_peer_arguments

    add_peer_arguments(peers)
    peers.set_defaults(func=commands.cmd_peers)

    gate = sub.add_parser(
        "gate", parents=[plugin], help="CI speed gate: time ratios vs sdpa against a committed baseline"
    )
    from ..timing.gate import add_arguments

    add_arguments(gate)
    gate.set_defaults(func=commands.cmd_gate)

    kernels = sub.add_parser(
        "kernels", help="say in one line whether the C++ kernels are built (pip hides what the install printed)"
    )
    kernels.add_argument("--build", action="store_true", help="build the missing ones now instead of on first use")
    kernels.set_defaults(func=commands.cmd_kernels)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        load_plugins(getattr(args, "plugin", None) or [])
    except PluginError as err:
        sys.exit(str(err))
    _resolve_attention_flags(args)
    raise_on_sigterm()  # SIGTERM stops every command as Ctrl-C does: children stopped, what was kept said
    try:
        args.func(args)
    except KeyboardInterrupt as stop:  # commands that keep something say what and how to resume themselves
        print(f"\n{args.command}: {stop_name(stop)}", file=sys.stderr)
        sys.exit(stop_code(stop))
    except OSError as err:
        if err.errno not in _STORAGE_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        sys.exit(
            f"{args.command}: cannot write{where}: {err.strerror or err} (rows and checkpoints written before are "
            "kept; free space or choose another --out, then run the same command again)"
        )
