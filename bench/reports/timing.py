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
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..schema import effective_attention_dropout
from . import style
from .style import BASELINE

SERIES_KEYS = ["device", "dtype", "level", "mode", "dim", "heads", "padding", "attention_dropout"]
PANELS = [(False, "bidirectional"), (True, "causal")]


def _slug(values: dict) -> str:
    return "_".join(f"{v}" for v in values.values()).replace(" ", "").replace("/", "-")


def _conditions(key: dict) -> str:
    """What a series was measured under beyond its shape, when it is not the default."""
    text = f", {key['padding']:.0%} padded" if key.get("padding") else ""
    if "attention_dropout" in key and key["attention_dropout"] != effective_attention_dropout(key["level"], None):
        text += f", attention dropout {key['attention_dropout']:g}"
    return text


def _title(kind: str, key: dict, batch: int | None = None, series: pd.DataFrame | None = None) -> str:
    shape = f"dim {key['dim']}, {key['heads']} heads" + (f", batch {batch}" if batch is not None else "")
    shape += _conditions(key)
    return f"{kind} — {key['level']} {key['mode']}, {key['dtype']}, {shape}\n{key['device']}{_machine(series)}"


def _machine(series: pd.DataFrame | None) -> str:
    """', AVX2, 1 thread': what else the times depend on, from the rows (both when they differ)."""
    if series is None:
        return ""
    parts = []
    for column, unit in (("cpu_capability", ""), ("threads", " thread(s)")):
        if column in series:
            values = sorted({str(v) for v in series[column].dropna()})
            if values:
                parts.append("/".join(values) + unit)
    return (", " + ", ".join(parts)) if parts else ""


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


def _panels(series: pd.DataFrame, order_by: str):
    """Bidirectional and causal panels: (figure, [(ax, causal, title, {mechanism: rows})], colours)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    colors = style.colors(series["mechanism"])
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
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend right of the panels stays in the picture
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
                if cross is not None:  # a mark on the break-even line, in the mechanism's colour
                    ax.scatter([cross], [1.0], marker="^", s=70, color=colors[mechanism], zorder=4)
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
        ax.set_title(f"{name} (▲: where it overtakes sdpa)" if speedup else name)
        ax.set_xlabel("sequence length N (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    _legend_outside(fig, panels, colors, busy=series.apply(_busy, axis=1).any() if not series.empty else False)
    _finish(fig, [p[0] for p in panels], ylabel, title, path)


def _legend_outside(fig, panels, colors: dict, busy: bool = False) -> None:
    """One legend for both panels, right of them (never over the data); the busy ring gets its entry."""
    shown = sorted({m for _, _, _, lines in panels for m in lines}, key=lambda m: (m != BASELINE, m))
    handles = [plt.Line2D([], [], color=colors[m], marker="o", label=m) for m in shown]
    if busy:
        handles.append(
            plt.Line2D([], [], color="grey", marker="o", markerfacecolor="none", markersize=10, linestyle="",
                       label="measured under load (†)")
        )  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def _busy(row) -> bool:
    """Measured while other processes used the CPU (see bench.timing.sweep.BUSY_CORES)."""
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
        _line_panels(series, column, label, _title(kind, key, batch, series), paths[-1], **options)
    return paths


def timing_report(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Every speed and memory plot and table of the timing rows in `frame` (rows.timing_frame) into `out`."""
    written: list[Path] = []
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
    # rows of two CPU kinds (model or vector capability) or two torch builds never share a table or a file name:
    # their times do not compare, and one machine's files would overwrite the other's
    splits = [k for k in ("cpu_capability", "torch") if k in measured and measured[k].nunique(dropna=False) > 1]
    measured = measured.assign(**{k: measured[k].fillna("unrecorded") for k in splits})
    several = measured["device"].nunique() > 1 or bool(splits)
    for key_values, group in measured.groupby(SERIES_KEYS + splits):
        key = dict(zip(SERIES_KEYS + splits, key_values, strict=False))
        for batch, series in group.groupby("batch_size"):
            series = _with_speedup(series)
            device = "cuda" if "cpu" not in key["device"].lower() else "cpu"
            if several:  # the name says which machine: 'cpu' alone would be written once per kind
                # no dots or pluses: the name takes suffixes (.md, .png) after it ("2.13.0+cpu" -> "2-13-0-cpu")
                device = _slug({k: key[k] for k in ("device", *splits)}).lower().replace(".", "-").replace("+", "-")
            stem = out / f"{_stem_prefix(key)}_B{batch}_{device}"
            if series["seq_len"].nunique() >= 2:  # one length: tables only
                written += _plot_series(series, key, batch, stem)
            style.write_table(
                stem.with_name(stem.name + "_time"),
                _table(series),
                f"Median time in ms (speed-up vs sdpa) — {key['level']} {key['mode']}, {key['dtype']}, batch "
                f"{batch}{_conditions(key)}, {key['device']}"
                + (
                    ". †: measured while other processes used the CPU (hollow rings in the plots)"
                    if series.apply(_busy, axis=1).any()
                    else ""
                ),
            )
            style.write_table(
                stem.with_name(stem.name + "_memory"),
                _memory_table(series),
                f"Peak memory in MiB over inputs — {key['level']} {key['mode']}, {key['dtype']}, batch {batch}"
                f"{_conditions(key)}, {key['device']}",
            )
            written += [stem.with_name(stem.name + s) for s in ("_time.md", "_memory.md")]
        for seq_len, series in group.groupby("seq_len"):
            if series["batch_size"].nunique() < 2:
                continue
            path = out / f"{_stem_prefix(key)}_N{seq_len}_batch_scaling.png"
            _batch_plot(series, _title(f"Throughput vs batch size at N={seq_len}", key, series=series), path)
            written.append(path)
    return written


def _batch_plot(series: pd.DataFrame, title: str, path: Path) -> None:
    fig, panels, colors = _panels(series, "batch_size")
    for ax, _, name, lines in panels:
        if not any(line["batch_size"].nunique() > 1 for line in lines.values()):  # one column of dots says nothing
            ax.set_visible(False)
            continue
        for mechanism, line in lines.items():
            ax.plot(line["batch_size"], line["tokens_per_s"], marker="o", label=mechanism, color=colors[mechanism])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (sequences)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    _legend_outside(fig, panels, colors)
    visible = [p[0] for p in panels if p[0].get_visible()] or [panels[0][0]]
    _finish(fig, visible, "throughput (tokens / s)", title, path)


# a comparison group (speed-ups divide its times) is one point of a series, whatever the device's name
GROUP_KEYS = [key for key in SERIES_KEYS if key != "device"] + ["causal", "seq_len", "batch_size"]
