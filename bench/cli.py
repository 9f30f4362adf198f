"""Command line: python -m bench {main,sweep,report,gate,...} --help"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path

from .environment import REPO_ROOT, positive_int, raise_on_sigterm, stop_code, stop_name
from .plugins import PluginError, load_plugins
from .results import ResultsFileBusy, ResultsFileError, parse_attention_spec


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
    parser.add_argument("--preset", help="quick | paper | gpu (axes flags are ignored when given)")
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
        "--max-cell-s", type=float, default=120.0, help="time budget per cell; longer series stop growing N"
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=None,
        help="how long a group timed under load waits for quiet before its one re-measurement (default 60)",
    )
    parser.add_argument("--no-progress", action="store_true")


def _sweep_cells(args) -> list:
    from .sweep import Grid, mechanisms, preset_cells

    if args.preset:
        return preset_cells(args.preset, args.device)
    grid = Grid(
        args.attention or mechanisms(),
        args.seq_len,
        args.batch_size,
        args.causal,
        args.mode,
        args.dtype,
        args.dim,
        args.heads,
        args.level,
        args.padding,
        args.attention_dropout,
        args.compile,
    )
    return grid.cells(args.device)


def _check_grid(args) -> None:
    """Refuse impossible grids at the command line, before any cell runs."""
    from .environment import check_device

    problems = [f"--seq-len {n}" for n in args.seq_len if n < 1] + [
        f"--batch-size {b}" for b in args.batch_size if b < 1
    ]
    problems += [f"--padding {p}" for p in args.padding if not 0.0 <= p < 1.0]
    problems += [f"--attention-dropout {p}" for p in args.attention_dropout if p is not None and not 0.0 <= p < 1.0]
    problems += [f"--{name} {getattr(args, name)}" for name in ("dim", "heads") if getattr(args, name) < 1]
    if problems:
        sys.exit(
            f"sweep: {', '.join(problems)}: sequence lengths, batch sizes, --dim and --heads must be >= 1, "
            "--padding and --attention-dropout in [0, 1)"
        )
    if args.dim % args.heads:
        sys.exit(f"sweep: --dim {args.dim} is not divisible by --heads {args.heads}")
    if args.max_cell_s <= 0:
        sys.exit(f"sweep: --max-cell-s must be > 0, got {args.max_cell_s}")
    try:
        check_device(args.device)
    except ValueError as err:
        sys.exit(f"sweep: {err}")


def _run_sweep(args, out: Path) -> None:
    from .sweep import run_sweep

    _check_grid(args)
    if args.quiet_wait_s is not None:
        from . import sweep

        sweep.QUIET_WAIT_S = max(0.0, args.quiet_wait_s)
    cells = _sweep_cells(args)
    if getattr(args, "shard", None):
        from .shard import parse_shard, shard_cells, shard_path

        try:
            index, count = parse_shard(args.shard)
            cells = shard_cells(cells, index, count, args.shard_by)
        except ValueError as err:
            sys.exit(f"sweep: {err}")
        out = shard_path(out, index, count)
        print(f"shard {index} of {count}: {len(cells)} cell(s) -> {out}")
    config = {
        k: v
        for k, v in vars(args).items()
        if k not in ("func", "no_progress", "quiet_wait_s", "executor", "address", "cpus_per_task", "gpus_per_task")
    }
    config["attention"] = [list(a) for a in config["attention"]] if config.get("attention") else None
    common = {
        "config": config,
        "seed": args.seed,
        "threads": args.threads,
        "max_cell_s": args.max_cell_s,
        "progress": not args.no_progress,
    }
    try:
        if getattr(args, "executor", "local") == "ray":
            from .ray_executor import run_sweep_on_ray

            rows = run_sweep_on_ray(
                cells,
                out,
                **common,
                address=args.address,
                cpus_per_task=args.cpus_per_task,
                gpus_per_task=args.gpus_per_task,
            )
        else:
            rows = run_sweep(cells, out, **common)
    except ResultsFileBusy as err:
        sys.exit(f"sweep: {err}")
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(
        f"{len(rows)} new cell(s) in {out}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        if rows
        else f"nothing to do: every cell is already in {out}"
    )


def cmd_sweep(args) -> None:
    out = (
        Path(args.out)
        if args.out
        else REPO_ROOT / "results" / "sweeps" / f"{args.preset or 'custom'}-{args.device.split(':')[0]}.jsonl"
    )
    _run_sweep(args, out)


def cmd_report(args) -> None:
    from .report import regenerate_committed, report

    try:
        if args.committed:
            for name, written in regenerate_committed(REPO_ROOT / "results").items():
                print(f"results/reports/{name}: {len(written)} plot(s)/table(s)")
            return
        if not args.results or not args.out:
            sys.exit("report: give results files and --out, or --committed")
        missing = [p for p in args.results if not Path(p).exists()]
        if missing:
            sys.exit(f"report: results file(s) not found: {', '.join(missing)}")
        written = report([Path(p) for p in args.results], Path(args.out))
    except ResultsFileError as err:
        sys.exit(f"report: {err}")
    print(f"wrote {len(written)} plot(s)/table(s) to {args.out}")


def cmd_main(args) -> None:
    """Quick sweep into a fresh run folder, plots and tables there, then speed-ups against the committed reference."""
    from .report import REFERENCE_GLOB, compare_speedups

    out_dir = Path(args.out) if args.out else REPO_ROOT / "runs" / f"main-{time.strftime('%Y%m%d-%H%M%S')}"
    results = out_dir / "sweep.jsonl"
    if results.exists() and not args.resume:
        sys.exit(f"main: {results} exists; --resume continues it, or leave out --out for a fresh run folder")
    args.preset = args.preset or "quick"
    if args.threads is None:
        # one thread, as the gate: with several, an OpenMP thread that loses its core to another process stalls
        # the rest at every barrier, and many-op kernels suffer far more than one fused op (speed-ups go wrong)
        args.threads = 1
    _run_sweep(args, results)
    cmd_report(argparse.Namespace(results=[str(results)], out=str(out_dir), committed=False))
    table = sorted(out_dir.glob("attention_fwd_bwd_fp32_*_time.md"))
    if table:
        print("\n" + table[0].read_text())
    references = [
        path for path in (REPO_ROOT / "results" / "sweeps").glob(REFERENCE_GLOB) if path.resolve() != results.resolve()
    ]
    if args.preset == "quick" and references:
        print("\n".join(compare_speedups(results, references)))
    print(f"\nthis run: {out_dir} (rows, plots, tables); committed reference results are left as they are")


def cmd_peers(args) -> None:
    from .peers import main as peers_main

    sys.exit(peers_main(args))


def cmd_gate(args) -> None:
    from .gate import main as gate_main

    sys.exit(gate_main(args))


def cmd_train(args) -> None:
    from dataclasses import fields

    from .data import DataFormatError, DatasetNotFound
    from .train import TrainConfig, train, with_recipe

    values = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if hasattr(args, f.name) and getattr(args, f.name) is not None
    }
    options = dict(args.option or [])
    if args.variant:
        options["variant"] = args.variant
    values["attention_options"] = options
    try:
        config = with_recipe(values.pop("recipe", None), **values)
        results = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (DataFormatError, DatasetNotFound, ValueError, ResultsFileBusy) as err:
        sys.exit(f"train: {err}")
    except KeyboardInterrupt as stop:
        print(
            f"\ntrain: {stop_name(stop)}; every finished epoch is in {Path(config.out) / 'checkpoint.pt'}: run the "
            "same command with --resume to continue",
            file=sys.stderr,
        )
        sys.exit(stop_code(stop))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    print(
        f"best epoch {results['best_epoch']} of {results['epochs_run']} ({results['stop_reason']}, selected on "
        f"{config.select_protocol}); "
        f"-> {Path(config.out) / 'results.json'}"
    )
    for name, test in results["test"].items():
        print(
            f"  test [{name}]  NDCG@10 {test['ndcg@10']:.4f}  Recall@10 {test['recall@10']:.4f}  MRR@10 "
            f"{test['mrr@10']:.4f}"
        )


def cmd_accuracy(args) -> None:
    from .accuracy import DEFAULT_WORK_DIR, preset_cells, run_accuracy_sweep, snapshot_unfinished
    from .data import DatasetNotFound

    try:
        cells = preset_cells(args.preset)
    except ValueError as err:
        sys.exit(f"accuracy: {err}")
    if args.attention:
        cells = [c for c in cells if (c.attention, dict(c.options)) in args.attention]
        if not cells:
            sys.exit(f"accuracy: --attention: no cell of preset {args.preset!r} trains those mechanisms")
    if args.only:
        cells = [c for c in cells if any(part in c.slug() for part in args.only)]
        if not cells:
            sys.exit(f"accuracy: --only {','.join(args.only)}: no cell of preset {args.preset!r} matches")
    out = (
        Path(args.out)
        if args.out
        else REPO_ROOT / "results" / "sweeps" / f"accuracy-{args.preset}-{args.device.split(':')[0]}.jsonl"
    )
    where = {
        "work_dir": Path(args.work_dir or DEFAULT_WORK_DIR),
        "threads": args.threads,
        "device": args.device,
        "data_dir": args.data_dir,
    }
    try:
        if args.snapshot:
            rows = snapshot_unfinished(cells, out, **where)
            print(f"{len(rows)} partial row(s) in {out}")
            return
        rows = run_accuracy_sweep(cells, out, jobs=args.jobs, **where)
    except (ResultsFileBusy, ValueError, DatasetNotFound) as err:
        sys.exit(f"accuracy: {err}")
    print(f"{len(rows)} new training cell(s) in {out}" if rows else f"nothing to do: every cell is already in {out}")


def cmd_data_stats(args) -> None:
    from .data import DataFormatError, DatasetNotFound, load_dataset

    try:
        dataset = load_dataset(args.dataset, args.data_dir, min_count=args.min_count, fmt=args.format)
    except (DataFormatError, DatasetNotFound) as err:
        sys.exit(f"data stats: {err}")
    stats = dataset.stats()
    width = max(map(len, stats))
    for key, value in stats.items():
        print(f"{key:{width}}  {value:.6g}" if isinstance(value, float) else f"{key:{width}}  {value}")


def cmd_merge(args) -> None:
    from .shard import merge

    missing = [p for p in args.sources if not Path(p).is_file()]
    if missing:
        sys.exit(f"merge: not found: {', '.join(missing)}")
    try:
        count = merge(Path(args.out), [Path(p) for p in args.sources])
    except ResultsFileError as err:
        sys.exit(f"merge: {err}")
    print(f"{count} row(s), one per cell, in {args.out}")


def cmd_data_prepare(args) -> None:
    import os

    from .data import DataFormatError, DatasetNotFound, load_dataset
    from .prepare import prepare

    data_dir = args.data_dir or os.environ.get("LINREC_DATA")
    if not data_dir:
        sys.exit("data prepare: say where the datasets live: --data-dir DIR (or set LINREC_DATA)")
    try:
        target = prepare(args.dataset, Path(args.source), Path(data_dir))
        stats = load_dataset(args.dataset, data_dir).stats()
    except (DataFormatError, DatasetNotFound, OSError) as err:
        sys.exit(f"data prepare: {err}")
    print(f"wrote {target}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions")


def _option_pair(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option {text!r} must be key=value")
    key, value = text.split("=", 1)
    return parse_attention_spec(f"option:{key}={value}")[1].popitem()


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    from dataclasses import MISSING, fields

    from .train import TrainConfig

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
            kind = float if f.name == "max_minutes" else (int if f.name == "threads" else kind)
            parser.add_argument(flag, type=kind, default=None, help=f"default: {default}")


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
    main.set_defaults(func=cmd_main)

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
        "--cpus-per-task", type=float, default=None, help="ray: CPUs each task reserves (default: --threads or 1)"
    )
    sweep.add_argument("--gpus-per-task", type=float, default=None, help="ray: GPUs each task reserves (e.g. 1)")
    sweep.set_defaults(func=cmd_sweep)

    merge = sub.add_parser(
        "merge", help="one results file from shards or several runs: one row per cell, the latest wins"
    )
    merge.add_argument("out", help="the merged results file")
    merge.add_argument("sources", nargs="+", help="results files to merge (e.g. OUT.shard-*-of-N.jsonl)")
    merge.set_defaults(func=cmd_merge)

    rep = sub.add_parser("report", help="plots and tables from stored results")
    rep.add_argument("results", nargs="*", help="JSON-lines results files (or training results.json)")
    rep.add_argument("--out", help="output folder")
    rep.add_argument("--committed", action="store_true", help="regenerate every committed report (results/reports/)")
    rep.set_defaults(func=cmd_report)

    tr = sub.add_parser(
        "train", parents=[plugin], help="train SASRec / BERT4Rec with any attention; leave-one-out evaluation"
    )
    _add_train_args(tr)
    tr.set_defaults(func=cmd_train)

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
        "ablation-ml-1m (ML-1M: position numbering, tie order)",
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
    acc.set_defaults(func=cmd_accuracy)

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
    stats.set_defaults(func=cmd_data_stats)
    prep = data_sub.add_parser("prepare", help="turn a dataset's public download into the file the suite reads")
    prep.add_argument("dataset", help="registered name (ml-1m, ml-100k, beauty, ...)")
    prep.add_argument("source", help="the downloaded file (e.g. ml-1m.zip, ml-100k.zip, Beauty.txt)")
    prep.add_argument("--data-dir", default=None, help="where datasets live (else $LINREC_DATA)")
    prep.set_defaults(func=cmd_data_prepare)

    peers = sub.add_parser(
        "peers",
        parents=[plugin],
        help="ours vs performer-pytorch / linformer / sdpa, interleaved; --limits for bandwidth and FLOP rate",
    )
    from .peers import add_arguments as add_peer_arguments

    add_peer_arguments(peers)
    peers.set_defaults(func=cmd_peers)

    gate = sub.add_parser(
        "gate", parents=[plugin], help="CI speed gate: time ratios vs sdpa against a committed baseline"
    )
    from .gate import add_arguments

    add_arguments(gate)
    gate.set_defaults(func=cmd_gate)
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
