"""Plots and tables regenerated from stored results only (nothing is re-measured).

    python -m bench report results/sweeps/paper-cpu.jsonl --out results/reports/paper-cpu
    python -m bench report --committed        # every committed report, from the committed rows (COMMITTED_REPORTS)

For every series over sequence length (same device, dtype, level, mode, width,
batch): time vs N and peak memory vs N (log-log, one line per mechanism, bidirectional
and causal panels), speed-up over `sdpa` vs N with the crossover marked, and tables in
the LRA style "time ms (x speed-up vs sdpa)" as Markdown, CSV and LaTeX. Series over
batch size get a throughput plot.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from .accuracy_report import accuracy_report, train_row
from .results import ResultsFileError, attention_label, duplicate_keys, effective_attention_dropout, load_rows

BASELINE = "sdpa"
SERIES_KEYS = ["device", "dtype", "level", "mode", "dim", "heads", "padding", "attention_dropout"]
PANELS = [(False, "bidirectional"), (True, "causal")]


TIMING_KEYS = (
    "level",
    "attention",
    "options",
    "causal",
    "seq_len",
    "batch_size",
    "dim",
    "heads",
    "mode",
    "dtype",
    "device",
    "status",
    "time_ms",
    "peak_mem_bytes",
    "timestamp",
)
TRAIN_KEYS = (
    "level",
    "attention",
    "max_len",
    "batch_size",
    "seed",
    "status",
    "dataset",
    "model",
    "objective",
    "recipe",
)


# key -> what a row must hold there (when the key is present): a row that holds something else is named and left out
_COUNTS = ("seq_len", "batch_size", "dim", "heads", "max_len", "seed", "repeats")
_MEASURES = ("time_ms", "time_ms_p25", "time_ms_p75", "peak_mem_bytes", "tokens_per_s", "padding")


def _type_problem(row: dict) -> str | None:
    for key in _COUNTS:
        if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int)):
            return f"key {key!r} is {row[key]!r} ({type(row[key]).__name__}), expected a whole number"
    for key in _MEASURES:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"key {key!r} is {value!r} ({type(value).__name__}), expected a number"
        if not math.isfinite(value):
            return f"key {key!r} is {value}, expected a finite number"
    if "causal" in row and not isinstance(row["causal"], bool):
        return f"key 'causal' is {row['causal']!r}, expected true or false"
    return None


def _typed_rows(path: Path, rows: list[dict], warn=lambda text: print(text, file=sys.stderr)) -> list[dict]:
    """The rows whose values have the types a report reads; each other row is named (file, row, key) and left
    out, so one hand-edited or damaged row neither stops the report nor lands in the wrong cell."""
    kept = []
    for number, row in enumerate(rows, 1):
        problem = _type_problem(row)
        if problem:
            warn(f"report: warning: {path}: row {number}: {problem}; row left out")
        else:
            kept.append(row)
    return kept


def _rows(path: Path) -> list[dict]:
    """The rows of a JSON-lines results file, or of a training run's results.json; malformed input names the file."""
    if path.suffix == ".json" and path.is_file():
        try:
            return [train_row(json.loads(path.read_text()))]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ResultsFileError(f"{path}: not a training run's results.json ({type(err).__name__}: {err})") from None
    rows = _typed_rows(path, load_rows(path))
    for number, row in enumerate(rows, 1):
        if row.get("ranks_file"):  # stored relative to its results file; a report may run from anywhere
            row["ranks_path"] = str(path.parent / row["ranks_file"])
        required = TRAIN_KEYS if row.get("level") == "train" else TIMING_KEYS
        missing = [key for key in required if key not in row]
        if missing and row.get("status", "ok") == "ok" or missing and "level" not in row:
            raise ResultsFileError(
                f"{path}: row {number} lacks {', '.join(missing)}; expected rows written by 'python -m bench sweep' "
                "or 'accuracy'"
            )
    return rows


def load_frame(paths: list[Path]) -> pd.DataFrame:
    rows = [row for path in paths for row in _rows(Path(path)) if row.get("level") != "train"]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    # axes added later: rows written before them hold the defaults (no padding, the level's attention dropout)
    frame["padding"] = frame["padding"].fillna(0.0) if "padding" in frame else 0.0
    given = frame["attention_dropout"] if "attention_dropout" in frame else [None] * len(frame)
    frame["attention_dropout"] = [
        effective_attention_dropout(level, None if pd.isna(p) else p)
        for level, p in zip(frame["level"], given, strict=True)
    ]
    compiled = frame["compile"].fillna(False) if "compile" in frame else [False] * len(frame)
    frame["mechanism"] = [
        attention_label(a, o or {}, bool(c))
        for a, o, c in zip(frame["attention"], frame["options"], compiled, strict=True)
    ]
    identity = ["level", "mechanism", "causal", "seq_len", "batch_size", "dim", "heads", "mode", "dtype", "device"]
    identity += ["padding", "attention_dropout"] + (["dataset"] if "dataset" in frame else [])
    frame["cell"] = frame[identity].astype(object).fillna("").astype(str).agg("|".join, axis=1)
    repeated = duplicate_keys(frame.to_dict("records"), lambda row: row["cell"])
    if repeated:
        print(
            f"report: warning: {len(repeated)} cell(s) measured more than once (the latest row is used), e.g. "
            f"{repeated[0]}",
            file=sys.stderr,
        )
    return frame.sort_values("timestamp").drop_duplicates("cell", keep="last")  # the latest measurement wins


def _slug(values: dict) -> str:
    return "_".join(f"{v}" for v in values.values()).replace(" ", "").replace("/", "-")


def _conditions(key: dict) -> str:
    """What a series was measured under beyond its shape, when it is not the default."""
    text = f", {key['padding']:.0%} padded" if key.get("padding") else ""
    if "attention_dropout" in key and key["attention_dropout"] != effective_attention_dropout(key["level"], None):
        text += f", attention dropout {key['attention_dropout']:g}"
    return text


def _title(kind: str, key: dict, batch: int | None = None) -> str:
    shape = f"dim {key['dim']}, {key['heads']} heads" + (f", batch {batch}" if batch is not None else "")
    shape += _conditions(key)
    return f"{kind} — {key['level']} {key['mode']}, {key['dtype']}, {shape}\n{key['device']}"


def crossover(seq_lens: list[int], speedups: list[float]) -> float | None:
    """First N (log-interpolated) where the speed-up over sdpa reaches 1."""
    points = [(n, s) for n, s in zip(seq_lens, speedups, strict=False) if s is not None and not math.isnan(s)]
    for (n0, s0), (n1, s1) in itertools.pairwise(points):
        if s0 < 1 <= s1:
            t = (0 - math.log(s0)) / (math.log(s1) - math.log(s0))
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    if points and points[0][1] >= 1:
        return float(points[0][0])
    return None


def _with_speedup(series: pd.DataFrame) -> pd.DataFrame:
    ok = series[series["status"] == "ok"]
    base = ok[ok["mechanism"] == BASELINE].set_index(["causal", "seq_len", "batch_size"])["time_ms"]
    series = series.copy()
    series["speedup"] = [
        base.get((c, n, b), float("nan")) / t if s == "ok" else float("nan")
        for c, n, b, t, s in zip(
            series["causal"], series["seq_len"], series["batch_size"], series["time_ms"], series["status"], strict=False
        )
    ]
    return series


def _colors(mechanisms) -> dict[str, str]:
    """One colour per mechanism, the same in every panel; sdpa in black."""
    palette = plt.get_cmap("tab10").colors
    others = sorted(m for m in set(mechanisms) if m != BASELINE)
    colors = {m: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(others)}
    colors[BASELINE] = "black"
    return colors


def _panels(series: pd.DataFrame, order_by: str):
    """Bidirectional and causal panels: (figure, [(ax, causal, title, {mechanism: rows})], colours)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    colors = _colors(series["mechanism"])
    panels = []
    for ax, (causal, name) in zip(axes, PANELS, strict=False):
        panel = series[(series["causal"] == causal) & (series["status"] == "ok")]
        lines = {m: rows.sort_values(order_by) for m, rows in sorted(panel.groupby("mechanism"), key=lambda kv: kv[0])}
        panels.append((ax, causal, name, lines))
    return fig, panels, colors


def _finish(fig, axes, ylabel: str, title: str, path: Path) -> None:
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _line_panels(
    series: pd.DataFrame, value: str, ylabel: str, title: str, path: Path, *, scale: float = 1.0, speedup: bool = False
) -> None:
    fig, panels, colors = _panels(series, "seq_len")
    for ax, causal, name, lines in panels:
        for mechanism, line in lines.items():
            values = line[value] * scale
            if values.notna().sum() == 0:
                continue
            ax.plot(
                line["seq_len"],
                values,
                marker="o",
                label=mechanism,
                color=colors[mechanism],
                linewidth=2.5 if mechanism == BASELINE else 1.5,
            )
            busy = line.apply(_busy, axis=1) if not line.empty else []
            if any(busy):  # measured while other processes used the CPU: hollow grey rings
                ax.scatter(
                    line["seq_len"][busy],
                    values[busy],
                    s=110,
                    facecolors="none",
                    edgecolors="grey",
                    linewidths=1.5,
                    zorder=3,
                )
            if speedup and mechanism != BASELINE:
                cross = crossover(line["seq_len"].tolist(), line["speedup"].tolist())
                if cross is not None:
                    ax.axvline(cross, color=colors[mechanism], linestyle=":", alpha=0.7)
        failed = series[(series["causal"] == causal) & series["status"].isin(["oom", "timeout", "skipped", "error"])]
        if not failed.empty:
            first = failed.groupby("mechanism")["seq_len"].min()
            ax.text(
                0.01,
                0.01,
                "not measured: "
                + ", ".join(
                    f"{m} N>={n} ({failed[failed['mechanism'] == m]['status'].iloc[0]})" for m, n in first.items()
                ),
                transform=ax.transAxes,
                fontsize=7,
                va="bottom",
                wrap=True,
            )
        if speedup:
            ax.axhline(1.0, color="black", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name} (dotted: crossover with sdpa)" if speedup else name)
        ax.set_xlabel("sequence length N (tokens)")
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=8)
    _finish(fig, [p[0] for p in panels], ylabel, title, path)


def _busy(row) -> bool:
    """Measured while other processes used the CPU (see bench.sweep.BUSY_CORES)."""
    value = row.get("busy") if hasattr(row, "get") else None
    return bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False


def _table(series: pd.DataFrame) -> pd.DataFrame:
    """Rows: mechanism x causal; columns: N; cells 'time ms (x speed-up)' or the status."""

    def cell(row):
        if row["status"] != "ok":
            return row["status"]
        text = f"{row['time_ms']:.1f}" if row["time_ms"] >= 10 else f"{row['time_ms']:.2f}"
        text = f"{text} ({row['speedup']:.2f}x)" if not math.isnan(row["speedup"]) else text
        return text + " †" if _busy(row) else text

    frame = series.assign(
        text=series.apply(cell, axis=1), attention_mode=series["causal"].map({True: "causal", False: "bidirectional"})
    )
    table = frame.pivot_table(index=["attention_mode", "mechanism"], columns="seq_len", values="text", aggfunc="first")
    table.columns = [f"N={n}" for n in table.columns]
    return table.fillna("—")


def _memory_table(series: pd.DataFrame) -> pd.DataFrame:
    frame = series.assign(
        mb=[
            f"{b / 2**20:.0f}" if s == "ok" and b is not None and not pd.isna(b) else s
            for b, s in zip(series["peak_mem_bytes"], series["status"], strict=False)
        ],
        attention_mode=series["causal"].map({True: "causal", False: "bidirectional"}),
    )
    table = frame.pivot_table(index=["attention_mode", "mechanism"], columns="seq_len", values="mb", aggfunc="first")
    table.columns = [f"N={n}" for n in table.columns]
    return table.fillna("—")


def markdown_table(table: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown would pull in `tabulate`)."""
    index_names = [str(n) for n in table.index.names]
    header = index_names + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        index = index if isinstance(index, tuple) else (index,)
        lines.append("| " + " | ".join([str(i) for i in index] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


def _write_tables(table: pd.DataFrame, stem: Path, caption: str) -> None:
    stem.with_suffix(".csv").write_text(table.to_csv())
    stem.with_suffix(".md").write_text(f"{caption}\n\n" + markdown_table(table) + "\n")
    latex = table.to_latex(escape=True, caption=caption)
    stem.with_suffix(".tex").write_text(latex)


# results/reports/<name>/ is generated from these rows (globs under results/); raw rows never live beside reports
COMMITTED_REPORTS: dict[str, list[str]] = {
    "paper-cpu": ["sweeps/paper-cpu.jsonl"],
    "short-n-cpu": ["sweeps/short-n-cpu.jsonl"],
    "quick-cpu": ["sweeps/quick-cpu.jsonl"],
    "accuracy": ["sweeps/accuracy-*-cpu.jsonl", "sweeps/accuracy-*-cpu.*.jsonl", "runs/*/*/results.json"],
    "two-shards-cpu": ["distributed/two-shards/quick.jsonl"],
    "cpp-cpu": ["sweeps/cpp-cpu.jsonl"],
    "fused-cpu": ["sweeps/fused-cpu.jsonl"],
    "fused-cpu-2threads": ["sweeps/fused-cpu-2threads.jsonl"],
    "compile-cpu": ["sweeps/compile-cpu.jsonl"],
    "compile-dynamic-cpu": ["sweeps/compile-dynamic-cpu.jsonl"],
}


def committed_sources(name: str, root: Path) -> list[Path]:
    return sorted(path for pattern in COMMITTED_REPORTS[name] for path in root.glob(pattern))


def regenerate_committed(root: Path, out_root: Path | None = None) -> dict[str, list[Path]]:
    """Every committed report from its committed rows (into out_root/<name>, default root/reports/<name>)."""
    out_root = out_root or root / "reports"
    written = {}
    for name in COMMITTED_REPORTS:
        sources = committed_sources(name, root)
        if sources:
            written[name] = report(sources, out_root / name)
    (root / "README.md").write_text(results_index(root, out_root, written))
    return written


def results_index(root: Path, out_root: Path, written: dict[str, list[Path]]) -> str:
    """results/README.md: every committed report, the rows it comes from and its tables, generated."""
    lines = [
        "# Committed results",
        "",
        "Generated by `python -m bench report --committed` from the rows listed under each "
        "report; edit the rows (or re-run what made them), never this file.",
        "",
    ]
    for name, files in written.items():
        lines += [f"## {name}", "", "Rows:"]
        for source in committed_sources(name, root):
            rows = _rows(source)
            commits = {str(r.get("run_commit") or r.get("commit", "?"))[:8] for r in rows}
            devices = sorted({str(r.get("device", "?")) for r in rows})
            stamps = sorted(str(r.get("timestamp", "")) for r in rows if r.get("timestamp"))
            span = f", {stamps[0][:10]} … {stamps[-1][:10]}" if stamps else ""
            lines.append(
                f"- `{source.relative_to(root)}`: {len(rows)} row(s), {len(commits)} commit(s), "
                f"{'; '.join(devices)}{span}"
            )
        lines += ["", "Tables:", ""]
        for table in sorted(p for p in files if p.suffix == ".md"):
            relative = table.relative_to(root)
            lines += [f"### [{table.stem}]({relative.as_posix()})", ""]
            body = [line for line in table.read_text().splitlines() if not line.startswith("#")]
            lines += [*body, ""]
    return "\n".join(lines).rstrip() + "\n"


def _stem_prefix(key: dict) -> str:
    padded = f"_pad{round(100 * key['padding'])}" if key.get("padding") else ""
    if "attention_dropout" in key and key["attention_dropout"] != effective_attention_dropout(key["level"], None):
        padded += f"_adrop{round(100 * key['attention_dropout'])}"
    return f"{key['level']}_{key['mode']}_{key['dtype']}_d{key['dim']}h{key['heads']}{padded}"


SERIES_PLOTS = [  # column, y label, title, file suffix, _line_panels options
    ("time_ms", "median time per step (ms)", "Time vs sequence length", "_time.png", {}),
    (
        "peak_mem_bytes",
        "peak memory over inputs (MiB)",
        "Peak memory vs sequence length",
        "_memory.png",
        {"scale": 2**-20},
    ),
    (
        "speedup",
        "speed-up over sdpa (x, >1 = faster)",
        "Speed-up over torch fused attention (sdpa)",
        "_speedup.png",
        {"speedup": True},
    ),
]


def _plot_series(series: pd.DataFrame, key: dict, batch: int, stem: Path) -> list[Path]:
    """Time, memory and speed-up against N for one series; returns the files."""
    paths = []
    for column, label, kind, suffix, options in SERIES_PLOTS:
        paths.append(stem.with_name(stem.name + suffix))
        _line_panels(series, column, label, _title(kind, key, batch), paths[-1], **options)
    return paths


def report(paths: list[Path], out: Path) -> list[Path]:
    """Write every plot and table for the given results files into `out`; returns the files."""
    all_rows = [row for path in paths for row in _rows(Path(path))]
    if not all_rows:
        raise ValueError(f"no result rows in {', '.join(map(str, paths))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = accuracy_report([r for r in all_rows if r.get("level") == "train"], out)
    frame = load_frame(paths)
    if frame.empty:
        return written
    measured = frame[frame["level"].isin(["attention", "kernel", "model"])]
    if "host" in measured:
        mixed = [g for g, rows in measured.groupby(GROUP_KEYS) if rows["host"].nunique() > 1]
        if mixed:
            print(
                f"report: warning: {len(mixed)} speed-up group(s) compare cells measured on different hosts "
                "(shard with --shard-by family to keep a group on one host), e.g. "
                + str(dict(zip(GROUP_KEYS, mixed[0], strict=True))),
                file=sys.stderr,
            )
    for key_values, group in measured.groupby(SERIES_KEYS):
        key = dict(zip(SERIES_KEYS, key_values, strict=False))
        for batch, series in group.groupby("batch_size"):
            series = _with_speedup(series)
            device = "cuda" if "cpu" not in key["device"].lower() else "cpu"
            stem = out / f"{_stem_prefix(key)}_B{batch}_{device}"
            if series["seq_len"].nunique() >= 2:  # one length: tables only
                written += _plot_series(series, key, batch, stem)
            _write_tables(
                _table(series),
                stem.with_name(stem.name + "_time"),
                f"Median time in ms (speed-up vs sdpa) — {key['level']} {key['mode']}, {key['dtype']}, batch "
                f"{batch}{_conditions(key)}, {key['device']}"
                + (
                    ". †: measured while other processes used the CPU (hollow rings in the plots)"
                    if series.apply(_busy, axis=1).any()
                    else ""
                ),
            )
            _write_tables(
                _memory_table(series),
                stem.with_name(stem.name + "_memory"),
                f"Peak memory in MiB over inputs — {key['level']} {key['mode']}, {key['dtype']}, batch {batch}"
                f"{_conditions(key)}, {key['device']}",
            )
            written += [stem.with_name(stem.name + s) for s in ("_time.md", "_memory.md")]
        for seq_len, series in group.groupby("seq_len"):
            if series["batch_size"].nunique() < 2:
                continue
            path = out / f"{_stem_prefix(key)}_N{seq_len}_batch_scaling.png"
            _batch_plot(series, _title(f"Throughput vs batch size at N={seq_len}", key), path)
            written.append(path)
    return written


def _batch_plot(series: pd.DataFrame, title: str, path: Path) -> None:
    fig, panels, colors = _panels(series, "batch_size")
    for ax, _, name, lines in panels:
        for mechanism, line in lines.items():
            ax.plot(line["batch_size"], line["tokens_per_s"], marker="o", label=mechanism, color=colors[mechanism])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (sequences)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=8)
    _finish(fig, [p[0] for p in panels], "throughput (tokens / s)", title, path)


# a comparison group (speed-ups divide its times) is one point of a series, whatever the device's name
GROUP_KEYS = [key for key in SERIES_KEYS if key != "device"] + ["causal", "seq_len", "batch_size"]


def _speedups(frame: pd.DataFrame) -> dict[tuple, float]:
    """(mechanism, group...) -> time of sdpa / time of the mechanism, for ok rows with an sdpa beside them."""
    ok = frame[frame["status"] == "ok"]
    speedups = {}
    for group, rows in ok.groupby(GROUP_KEYS):
        base = rows[rows["mechanism"] == BASELINE]["time_ms"]
        if base.empty:
            continue
        for _, row in rows[rows["mechanism"] != BASELINE].iterrows():
            speedups[(row["mechanism"], *group)] = float(base.iloc[0]) / row["time_ms"]
    return speedups


# What a speed-up vs sdpa depends on beyond the code: a reference judges a run only where these match.
SETUP_KEYS = ("device", "threads", "torch", "backend")
REFERENCE_GLOB = "quick-cpu*.jsonl"  # committed references of the main job, one per CPU model (results/sweeps/)


def measured_setup(frame: pd.DataFrame) -> dict:
    """The setup a sweep was timed on: CPU model, torch threads, torch version and LinRec's backend (the most
    common value of each; None where the rows do not record it, e.g. the backend before it was recorded)."""

    def common(column: pd.Series):
        column = column.dropna()
        if column.empty:
            return None
        value = column.mode().iloc[0]
        return value.item() if hasattr(value, "item") else value  # a plain int / str, as a row holds it

    setup = {key: common(frame[key]) if key in frame else None for key in SETUP_KEYS}
    if "backend" in frame:
        setup["backend"] = common(frame[frame["attention"] == "linrec"]["backend"])
    return setup


def setup_differences(ours: dict, theirs: dict) -> list[str]:
    """What differs between two setups, as 'threads 2 there, 1 here'; a value one side does not record is not
    counted as a difference."""
    return [
        f"{key} {theirs[key]} there, {ours[key]} here"
        for key in SETUP_KEYS
        if ours.get(key) is not None and theirs.get(key) is not None and ours[key] != theirs[key]
    ]


def choose_reference(new: Path, candidates: list[Path]) -> tuple[Path, list[str], list[tuple[Path, list[str]]]]:
    """The committed reference for a run: the one whose setup matches (no difference), else the closest (same CPU
    model first, then fewest differences). Returns it, its differences, and every other candidate with its own."""
    ours = measured_setup(load_frame([new]))
    scored = []
    for path in sorted(candidates):
        differences = setup_differences(ours, measured_setup(load_frame([path])))
        same_cpu = not any(d.startswith("device ") for d in differences)
        scored.append(((not same_cpu, len(differences)), path, differences))
    scored.sort(key=lambda item: (item[0], str(item[1])))
    (_, best, differences), others = scored[0], [(p, d) for _, p, d in scored[1:]]
    return best, differences, others


def compare_speedups(new: Path, references: Path | list[Path], tolerance: float = 1.5) -> list[str]:
    """Lines comparing this run's speed-ups vs sdpa with the committed reference of the same setup, cell by cell.

    Against a reference of another setup (CPU model, threads, torch, LinRec backend) the differences are counted
    and named as such, never judged: sdpa's CPU kernel runs differently on another CPU (docs/measurement.md)."""
    references = [references] if isinstance(references, Path | str) else list(references)
    if not references:
        return ["no committed reference to compare with"]
    reference, differences, others = choose_reference(Path(new), [Path(r) for r in references])
    ours, theirs = _speedups(load_frame([new])), _speedups(load_frame([reference]))
    common = sorted(set(ours) & set(theirs), key=str)
    if not common:
        return [f"no cell in common with the reference {reference}"]
    differ = [key for key in common if not 1 / tolerance <= ours[key] / theirs[key] <= tolerance]
    if differences:
        lines = [
            f"no committed reference matches this setup; the closest, {reference}, was measured on another "
            f"({'; '.join(differences)}): {len(differ)} of {len(common)} speed-ups differ by more than {tolerance}x, "
            "expected between setups and not judged. Add one for this machine: python -m bench sweep --preset "
            "quick --threads 1 --out results/sweeps/quick-cpu-<cpu model>.jsonl (docs/measurement.md)"
        ]
    else:
        lines = [
            f"speed-ups vs sdpa against the reference of this setup ({reference}): {len(common)} cell(s) compared, "
            f"{len(differ)} differ by more than {tolerance}x (the noise allowed between runs on one setup)"
        ]
        for key in differ:
            cell = dict(zip(["mechanism", *GROUP_KEYS], key, strict=True))
            lines.append(
                f"  {cell['mechanism']} {'causal' if cell['causal'] else 'bidir'} N={cell['seq_len']} "
                f"B={cell['batch_size']}: {ours[key]:.2f}x here, {theirs[key]:.2f}x in the reference"
            )
    lines += [f"not compared: {path} ({'; '.join(d) or 'the same setup'})" for path, d in others]
    return lines
