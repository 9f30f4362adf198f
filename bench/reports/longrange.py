"""The long-range report: test accuracy against the distance k of the planted dependency, one plot per task with its
ceiling and chance drawn, and each mechanism's effective context in one table.

Effective context: the largest distance at which a mechanism keeps at least half of its accuracy at the shortest
distance, counted above chance (chance falls as k grows: recall's is 0.49 at k = 8, 0.002 at k = 4096, so raw
accuracy would credit guessing). Distances are read from the shortest up; the first one that falls below half ends
it; a later distance where the share is kept again is named ('64; again at 1024'), not counted. '-': no skill even
at the shortest distance (less than a tenth of the way from chance to the ceiling).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..schema import STOPPED_AT_MAXIMUM, attention_label, fallback_note
from . import style
from .style import pipe_table

METRIC = "ndcg@10"
PROTOCOL = "all"  # the target was seen before: excluding seen items would remove it
KEPT = 0.5  # the share of the short-distance skill that counts as still looking that far back
SKILL = 0.1  # below this share of the way from chance to the ceiling, a mechanism has no skill to keep


def is_longrange_row(row: dict) -> bool:
    return str(row.get("dataset", "")).startswith("longrange-")


def _task_and_distance(dataset: str) -> tuple[str, int]:
    """'longrange-recall-k64[-i8192]' -> ('recall', 64): the name bench.data.longrange gives a task (read here
    from the row, so reports need not import the data package, which imports torch)."""
    _, task, distance, *_ = dataset.split("-")
    return task, int(distance[1:])


def longrange_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per finished long-range cell (the latest row of a cell wins), seeds kept apart."""
    from ..training.presets import is_round2

    records = []
    for row in rows:
        if row.get("level") != "train" or row.get("status") not in ("ok", "partial") or not is_longrange_row(row):
            continue
        task, distance = _task_and_distance(row["dataset"])
        levels = row["dataset_stats"]["levels"]
        history = row.get("history") or []
        records.append(
            {
                "task": task,
                "distance": distance,
                "items": row["dataset_stats"]["items"],
                "mechanism": attention_label(row["attention"], row.get("options") or {}) + fallback_note(row),
                "seed": row["seed"],
                "accuracy": row["test"][PROTOCOL][METRIC],
                "valid": (row.get("valid") or {}).get(PROTOCOL, {}).get(METRIC, float("nan")),
                # every test position whose evidence is k back (rows from before it was recorded: none)
                "probes": (row.get("test_probes") or {}).get(METRIC, float("nan")),
                "recall@10": row["test"][PROTOCOL]["recall@10"],
                "ceiling": levels["ceiling_ndcg@10"],
                "chance": levels["chance_ndcg@10"],
                "best_epoch": row["best_epoch"],
                "epochs_run": row["epochs_run"],
                "budget": (row.get("config") or {}).get("epochs") or row["epochs_run"],  # epochs allowed
                # learnt in the last quarter of the epochs run: more epochs might still move it (not when its
                # validation reached the metric's maximum, which no later epoch can beat)
                "late": row["best_epoch"] > 0.75 * row["epochs_run"]
                and len(history) > 1
                and row.get("stop_reason") != STOPPED_AT_MAXIMUM,
                "partial": row["status"] == "partial",
                # what a cell changed from its preset's recipe besides the budget (a learning rate, a width): the
                # round-1 tables keep the unchanged cells; round 2 and the diagnosis read the others
                "round2": is_round2(row.get("settings") or {}),
                "variant": ",".join(
                    f"{key}={value}"
                    for key, value in sorted((row.get("settings") or {}).items())
                    if key not in ("epochs", "patience")
                ),
                "minutes": (row["seconds_per_epoch"] or 0) * (row["epochs_run"] or 0) / 60,
                "device": row.get("device", ""),
                "timestamp": row.get("timestamp", ""),
            }
        )
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    key = ["task", "distance", "items", "mechanism", "seed", "budget", "variant"]
    # stable: of two rows with one timestamp, the later in the file wins
    return frame.sort_values("timestamp", kind="stable").drop_duplicates(key, keep="last").reset_index(drop=True)


def split_budgets(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(the preset's rows: each cell at its smallest training budget; the cells also trained longer, every budget;
    each cell at its largest budget)."""
    cell = ["task", "distance", "items", "mechanism", "seed"]
    budget = frame.groupby(cell)["budget"]
    smallest, largest, budgets = budget.transform("min"), budget.transform("max"), budget.transform("nunique")
    return frame[frame["budget"] == smallest], frame[budgets > 1], frame[frame["budget"] == largest]


def _budget_table(longer: pd.DataFrame) -> pd.DataFrame:
    """One line per cell trained with several budgets: NDCG@10 (best epoch) under each."""
    longer = longer.assign(
        shown=longer.apply(lambda r: f"{r['accuracy']:.3f} (best epoch {int(r['best_epoch'])})", axis=1),
        budget=longer["budget"].map(lambda b: f"{int(b)} epochs"),
    )
    table = longer.pivot_table(
        index=["task", "distance", "mechanism", "seed"], columns="budget", values="shown", aggfunc="first"
    )
    table = table[sorted(table.columns, key=lambda c: int(c.split()[0]))]
    return table.reset_index().rename(columns={"distance": "k"})


def _by_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """Seeds averaged: one line per (task, items, mechanism, distance)."""
    grouped = frame.groupby(["task", "items", "mechanism", "distance"])
    table = grouped[["accuracy", "probes", "recall@10", "ceiling", "chance", "minutes"]].mean()
    table["seeds"] = grouped.size()
    table["late"] = grouped["late"].any()
    table["partial"] = grouped["partial"].any()
    return table.reset_index()


def effective_context(line: pd.DataFrame) -> str:
    """A mechanism's effective context on one task, from its lines over distance (see the module docstring)."""
    line = line.sort_values("distance")
    shortest = line.iloc[0]
    skill = shortest["accuracy"] - shortest["chance"]
    if skill < SKILL * (shortest["ceiling"] - shortest["chance"]):
        return "-"
    held = [point["accuracy"] - point["chance"] >= KEPT * skill for _, point in line.iterrows()]
    distances = [int(k) for k in line["distance"]]
    first_fall = held.index(False) if False in held else len(held)
    kept = distances[first_fall - 1]
    if first_fall == len(held):
        return f">= {kept}"
    # a rebound does not extend it (a fall in between means it does not look that far back in general), but is said
    again = [str(k) for k, h in zip(distances[first_fall:], held[first_fall:], strict=True) if h]
    return f"{kept}; again at {', '.join(again)}" if again else str(kept)


def effective_contexts(rows: list[dict]) -> dict[tuple[str, int, str], str]:
    """(task, items, mechanism) -> effective context, over the preset's cells of `rows` (longer budgets left out)."""
    frame = longrange_frame(rows)
    if frame.empty:
        return {}
    preset, _, _ = split_budgets(frame[frame["variant"] == ""])
    lines = _by_cell(preset).groupby(["task", "items", "mechanism"])
    return {key: effective_context(line) for key, line in lines}


def _accuracy_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Mechanisms x distances (NDCG@10), with the ceiling and chance as the first two lines."""

    def shown(point) -> str:
        marks = ("*" if point["late"] else "") + ("†" if point["partial"] else "")
        probes = "" if pd.isna(point["probes"]) else f" ({point['probes']:.3f})"
        return f"{point['accuracy']:.3f}{marks}{probes}"

    table = cells.assign(shown=cells.apply(shown, axis=1)).pivot(index="mechanism", columns="distance", values="shown")
    levels = cells.groupby("distance")[["ceiling", "chance"]].mean().T.map(lambda value: f"{value:.3f}")
    table = pd.concat([levels, table.fillna("")])
    table.columns = [f"k={k}" for k in table.columns]
    return table.reset_index(names="")


def _plot(cells: pd.DataFrame, title: str, path: Path) -> None:
    colors, markers = style.colors(cells["mechanism"]), style.markers(cells["mechanism"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    levels = cells.groupby("distance")[["ceiling", "chance"]].mean()
    ax.plot(levels.index, levels["ceiling"], "k--", lw=1, label="ceiling (Bayes-optimal)")
    ax.plot(levels.index, levels["chance"], ":", color="grey", lw=1.2, label="chance")
    for mechanism, line in cells.groupby("mechanism"):
        line = line.sort_values("distance")
        look = {"marker": markers[mechanism], "color": colors[mechanism], "ms": 5}
        ax.plot(line["distance"], line["accuracy"], "-", label=mechanism, **look)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(cells["distance"].unique()), [str(k) for k in sorted(cells["distance"].unique())])
    ax.set_xlabel("distance k to the evidence (items)")
    ax.set_ylabel(f"test {METRIC.upper()} (all items ranked)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)  # outside the data
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CONTEXT_NOTE = (
    f"The largest distance at which a mechanism keeps at least {KEPT:.0%} of its shortest-distance accuracy "
    "above chance, distances read from the shortest up ('>= k': kept at every distance run; 'k; again at K': "
    "it fell after k and was kept again at K, which does not count; '-': no skill at the shortest distance). "
    "'(... trained longer)': the reading where the cells of the section 'Longer training' replace the preset's; "
    "'(... at every position k back)': the reading where a cell's NDCG@10 over every test position whose evidence "
    "lies k back (recall, repeat; in brackets in the tables, where recorded) replaces its last-position one."
)
TABLES_NOTE = (
    "Accuracy tables: `*` the best epoch came in the last quarter of the training budget (more epochs might "
    "still move it); `†` a cell still training (its best epoch so far); in brackets, NDCG@10 over every test "
    "position whose evidence lies k back, not only the last (recall, repeat; cells run since it is recorded): a "
    "model can fit distance k at every position but the test's one (docs/longrange.md)."
)
LONGER_NOTE = (
    "Cells also trained with a larger budget (`--preset longrange-budget`): whether a mechanism below the "
    "ceiling lacks the capacity to look that far back or learns it more slowly. The tables above keep the "
    "preset's budget."
)


def longrange_report(rows: list[dict], out: Path) -> list[Path]:
    """Plots and tables of the long-range rows among `rows` (none: nothing written); returns the files."""
    every = longrange_frame(rows)
    if every.empty:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame, longer, longest = split_budgets(every[every["variant"] == ""])
    cells = _by_cell(frame)
    # where a longer budget moves a mechanism's effective context, the table says so beside the preset's reading
    trained_longer = set(zip(longer["items"], longer["task"], longer["mechanism"], strict=True))
    context_longest = {
        key: effective_context(line)
        for key, line in _by_cell(longest).groupby(["items", "task", "mechanism"])
        if key in trained_longer
    }
    devices = " + ".join(sorted(frame["device"].unique()))
    written, text, context = _task_sections(cells, context_longest, devices, out)
    table = pd.DataFrame(
        [{"items": items, "mechanism": mechanism, **by_task} for (items, mechanism), by_task in sorted(context.items())]
    ).fillna("not run")
    header = [
        "# Long-range: how far back each mechanism looks",
        "",
        f"Generated tasks with a dependency planted at distance k (bench/data/longrange.py); test {METRIC.upper()} "
        "over held-out users, every item ranked; one seed unless said. Device: " + devices + ".",
        "",
        "## Effective context",
        "",
        CONTEXT_NOTE,
        "",
        pipe_table(table),
        "",
        TABLES_NOTE,
        "",
    ]
    if not longer.empty:
        text += [
            "## Longer training",
            "",
            LONGER_NOTE,
            "",
            pipe_table(_budget_table(longer)),
            "",
        ]
    from .longrange_round2 import round2_sections

    more_files, more_text = round2_sections(every, out)
    written, text = written + more_files, text + more_text
    stem = out / "longrange"
    stem.with_suffix(".md").write_text("\n".join(header + text), encoding="utf-8")
    table.to_csv(out / "longrange_effective_context.csv", index=False)
    cells.to_csv(stem.with_suffix(".csv"), index=False)
    return written + [stem.with_suffix(".md"), stem.with_suffix(".csv"), out / "longrange_effective_context.csv"]


def _task_sections(cells: pd.DataFrame, context_longest: dict, devices: str, out: Path):
    """Each task's figure and accuracy table, and each mechanism's effective-context reading per task."""
    written, text, context = [], [], {}
    for (items, task), task_cells in sorted(cells.groupby(["items", "task"]), key=lambda g: g[0]):
        suffix = "" if items == 2048 else f"_i{items}"
        path = out / f"longrange_{task}{suffix}.png"
        _plot(task_cells, f"{task}: accuracy vs distance ({items} items) — {devices}", path)
        heatmap = out / f"longrange_{task}{suffix}_heatmap.png"
        skill_heatmap(
            task_cells.assign(median=task_cells["accuracy"]), f"{task}: skill (share of chance→ceiling)", heatmap
        )
        written += [path, heatmap]
        text += [
            f"## {task} ({items} items)",
            "",
            f"![{task}]({path.name}) ![{task} heatmap]({heatmap.name})",
            "",
            pipe_table(_accuracy_table(task_cells)),
            "",
        ]
        for mechanism, line in task_cells.groupby("mechanism"):
            reading = effective_context(line)
            longest_reading = context_longest.get((items, task, mechanism), reading)
            if longest_reading != reading:
                reading += f" ({longest_reading} trained longer)"
            probed = effective_context(line.assign(accuracy=line["probes"].fillna(line["accuracy"])))
            if probed != reading.split(" (")[0]:
                reading += f" ({probed} at every position k back)"
            context.setdefault((items, mechanism), {})[task] = reading
    return written, text, context


def skill_heatmap(cells: pd.DataFrame, title: str, path: Path) -> None:
    """Mechanisms x k, each cell the share of the way from chance to the ceiling its (median) accuracy covers."""
    skill = (cells["median"] - cells["chance"]) / (cells["ceiling"] - cells["chance"])
    grid = cells.assign(skill=skill.clip(0, 1)).pivot_table(index="mechanism", columns="distance", values="skill")
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(grid.columns), 0.9 + 0.45 * len(grid)))
    ax.imshow(grid.values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(grid.columns)), [f"k={k}" for k in grid.columns])
    ax.set_yticks(range(len(grid.index)), grid.index)
    for (i, j), value in pd.DataFrame(grid.values).stack().items():
        if pd.isna(value):  # a distance this mechanism did not run
            continue
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
