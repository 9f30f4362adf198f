"""What each command does, over the packages that do the work (timing, training, data, reports): argument checks,
defaults and one-line refusals live here; the parser and name resolution are in __init__.py."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..environment import REPO_ROOT, stop_code, stop_name
from ..results import ResultsFileBusy, ResultsFileError


def _sweep_cells(args) -> list:
    from ..timing.grid import Grid, mechanisms, preset_cells

    if args.preset:
        try:
            return preset_cells(args.preset, args.device)
        except ValueError as err:
            sys.exit(f"{args.command}: {err}")
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
    from ..environment import check_device

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
    from ..timing.sweep import run_sweep

    _check_grid(args)
    if args.quiet_wait_s is not None:
        from ..timing import sweep

        sweep.QUIET_WAIT_S = max(0.0, args.quiet_wait_s)
    cells = _sweep_cells(args)
    if getattr(args, "shard", None):
        from ..timing.shard import parse_shard, shard_cells, shard_path

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
            from ..timing.ray_executor import run_sweep_on_ray

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
    from ..reports import report
    from ..reports.committed import regenerate_committed

    try:
        if args.committed:
            from ..reports.docs_tables import write_doc_tables
            from ..reports.readme import write_readme_block

            for name, written in regenerate_committed(REPO_ROOT / "results").items():
                print(f"results/reports/{name}: {len(written)} plot(s)/table(s)")
            changed = write_readme_block(REPO_ROOT / "README.md", REPO_ROOT / "results")
            print(f"README.md: results block {'rewritten' if changed else 'unchanged'}")
            pages = write_doc_tables(REPO_ROOT / "docs", REPO_ROOT / "results")
            rewritten = ", ".join(page.name for page in pages)
            print(f"docs: generated tables {'rewritten in ' + rewritten if pages else 'unchanged'}")
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


def _batch_of(name: str) -> int:
    import re

    found = re.search(r"_B(\d+)_", name)
    return int(found.group(1)) if found else 0


def cmd_main(args) -> None:
    """Quick sweep into a fresh run folder, plots and tables there, then speed-ups against the committed reference."""
    from ..reports.committed import REFERENCE_GLOB, compare_speedups

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
    # the widest table (the most mechanisms), then the smallest batch by number, not by name ("B16" < "B4")
    tables = sorted(
        out_dir.glob("attention_fwd_bwd_fp32_*_time.md"),
        key=lambda p: (-len(p.read_text(encoding="utf-8").splitlines()), _batch_of(p.name)),
    )
    if tables:
        print("\n" + tables[0].read_text(encoding="utf-8"))
    references = [
        path for path in (REPO_ROOT / "results" / "sweeps").glob(REFERENCE_GLOB) if path.resolve() != results.resolve()
    ]
    if args.preset == "quick" and references:
        print("\n".join(compare_speedups(results, references)))
    print(f"\nthis run: {out_dir} (rows, plots, tables); committed reference results are left as they are")


def cmd_peers(args) -> None:
    from ..reports.peers import write_peers_table
    from ..timing.peers import main as peers_main

    rows = peers_main(args)
    print("\n" + write_peers_table(rows, Path(args.out).with_suffix(".md")))


def cmd_gate(args) -> None:
    from ..timing.gate import main as gate_main

    sys.exit(gate_main(args))


def cmd_train(args) -> None:
    from dataclasses import fields

    from ..data import DataFormatError, DatasetNotFound
    from ..training.config import TrainConfig, with_recipe
    from ..training.train import train

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
        checkpoint = Path(config.out) / "checkpoint.pt"
        kept = (
            f"every finished epoch is in {checkpoint}: run the same command with --resume to continue"
            if checkpoint.exists()
            else "no epoch had finished, nothing was kept: run the same command again to start over"
        )
        print(f"\ntrain: {stop_name(stop)}; {kept}", file=sys.stderr)
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
    from ..data import DatasetNotFound
    from ..training.accuracy import DEFAULT_WORK_DIR, CellsInUse, run_accuracy_sweep, snapshot_unfinished
    from ..training.presets import preset_cells

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
    longrange = args.preset.startswith("longrange")  # its own results file and work folder: runs beside the others
    stem = args.preset if longrange else f"accuracy-{args.preset}"
    out = Path(args.out) if args.out else REPO_ROOT / "results" / "sweeps" / f"{stem}-{args.device.split(':')[0]}.jsonl"
    if args.skip_done_in is None and not args.out:
        # the committed results of this kind and device in results/sweeps: a cell finished in another preset's
        # file (the seeds preset shares the paper preset's cells) is shown and skipped as finished, not retrained
        pattern = f"{'longrange' if longrange else 'accuracy'}*-{args.device.split(':')[0]}*.jsonl"
        args.skip_done_in = [
            str(p)
            for p in sorted((REPO_ROOT / "results" / "sweeps").glob(pattern))
            if p.resolve() != out.resolve() and ".shard-" not in p.name
        ]
    where = {
        "work_dir": Path(args.work_dir or (REPO_ROOT / "runs" / args.preset if longrange else DEFAULT_WORK_DIR)),
        "threads": args.threads,
        "device": args.device,
        "data_dir": args.data_dir,
    }
    try:
        if args.status:
            from ..training.progress import cell_progress, format_progress

            progress = cell_progress(cells, out, where["work_dir"], done_in=args.skip_done_in or ())
            print(format_progress(progress, out, where["work_dir"]))
            return
        if args.snapshot:
            rows = snapshot_unfinished(cells, out, done_in=args.skip_done_in or (), **where)
            print(f"{len(rows)} partial row(s) in {out}")
            return
        rows = run_accuracy_sweep(cells, out, jobs=args.jobs, done_in=args.skip_done_in or (), **where)
    except (ResultsFileBusy, ValueError, DatasetNotFound, CellsInUse) as err:
        sys.exit(f"accuracy: {err}")
    print(f"{len(rows)} new training cell(s) in {out}" if rows else f"nothing to do: every cell is already in {out}")


def cmd_data_stats(args) -> None:
    from ..data import DataFormatError, DatasetNotFound, load_dataset
    from ..data.longrange import is_longrange, longrange_dataset

    try:
        if is_longrange(args.dataset):  # generated: its sizes, ceiling and chance
            dataset = longrange_dataset(args.dataset)
        else:
            dataset = load_dataset(args.dataset, args.data_dir, min_count=args.min_count, fmt=args.format)
    except (DataFormatError, DatasetNotFound, ValueError) as err:
        sys.exit(f"data stats: {err}")
    stats = dataset.stats()
    width = max(map(len, stats))
    for key, value in stats.items():
        print(f"{key:{width}}  {value:.6g}" if isinstance(value, float) else f"{key:{width}}  {value}")


def cmd_merge(args) -> None:
    from ..timing.shard import merge

    missing = [p for p in args.sources if not Path(p).is_file()]
    if missing:
        sys.exit(f"merge: not found: {', '.join(missing)}")
    try:
        count = merge(Path(args.out), [Path(p) for p in args.sources])
    except (ResultsFileError, ResultsFileBusy) as err:
        sys.exit(f"merge: {err}")
    print(f"{count} row(s), one per cell, in {args.out}")


def cmd_kernels(args) -> None:
    from models.attention.kernels.cpp_build import status_line

    print(status_line(build=args.build))


def cmd_data_prepare(args) -> None:
    import os

    from ..data import DataFormatError, DatasetNotFound, load_dataset
    from ..data.prepare import prepare

    data_dir = args.data_dir or os.environ.get("LINREC_DATA")
    if not data_dir:
        sys.exit("data prepare: say where the datasets live: --data-dir DIR (or set LINREC_DATA)")
    try:
        target = prepare(args.dataset, Path(args.source), Path(data_dir))
        stats = load_dataset(args.dataset, data_dir).stats()
    except (DataFormatError, DatasetNotFound, OSError) as err:
        sys.exit(f"data prepare: {err}")
    print(f"wrote {target}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions")
