"""Long histories, round 2, and the recall diagnosis: the long-range cells that change the round-1 recipe.

- **Round 2** (`--preset longrange-round2`: mqar and taste, 96 epochs): each mechanism's learning rate is chosen
  at the shortest distance on validation (the grid's table says which), then three seeds per distance. A cell's
  reading is the median over its seeds, shown with the seeds' range; the effective context is read from the
  median line (and from the lowest and highest seed lines, for its range). k = 4,096: one seed, labelled.
- **Diagnosis** (`--preset longrange-diagnosis`, recall): why Mamba and retention stay at chance at k = 64 where the
  others reach the ceiling, one change at a time from the round-1 recipe (distance, learning rate, width, state).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .longrange import effective_context, skill_heatmap
from .style import pipe_table

ROUND2_TASKS = ("mqar", "taste")


def _lr(variant: str) -> float | None:
    for part in variant.split(","):
        if part.startswith("lr="):
            return float(part[3:])
    return None


def round2_sections(every: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """(files, Markdown lines) for the round-2 and diagnosis cells among `every` (longrange.longrange_frame)."""
    changed = every[every["variant"] != ""]
    files, text = [], []
    diagnosis = changed[changed["task"] == "recall"]
    if not diagnosis.empty:
        text += _diagnosis(diagnosis, every[(every["variant"] == "") & (every["task"] == "recall")])
    text += _superseded(every)
    round2 = _round2(every)
    if not round2.empty:
        grid_lines, chosen = _grid(round2)
        text += grid_lines
        seeds = _at_chosen_rates(round2, chosen)  # the cells at each one's chosen rate
        if not seeds.empty:
            more_files, more_text = _seeds(seeds, out)
            files, text = files + more_files, text + more_text
    return files, text


def _round2(every: pd.DataFrame) -> pd.DataFrame:
    """Round 2's cells: its tasks, with a learning rate and round 2's recipe (presets.ROUND2_RECIPE)."""
    return every[every["task"].isin(ROUND2_TASKS) & every["round2"]]


def _at_chosen_rates(round2: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    return round2.assign(lr=round2["variant"].map(_lr)).merge(chosen, on=["task", "mechanism", "lr"])


def _superseded(every: pd.DataFrame) -> list[str]:
    """Round 2's first cells, trained on the recipe's fixed training users with its dropout, before round 2 changed
    both: kept as measured, read apart from round 2."""
    first = every[every["task"].isin(ROUND2_TASKS) & ~every["round2"] & every["variant"].map(_lr).notna()]
    if first.empty:
        return []
    columns = {"valid": "valid NDCG@10", "accuracy": "test NDCG@10", "best_epoch": "best epoch", "budget": "epochs"}
    table = (
        first.assign(lr=first["variant"].map(_lr))[["task", "distance", "mechanism", "seed", "lr", *columns, "chance"]]
        .rename(columns=columns)
        .sort_values(["task", "distance", "mechanism", "lr"])
    )
    return [
        "## Round 2's first cells: a fixed training set (superseded)",
        "",
        "Trained on the longrange recipe's fixed training users with dropout 0.1, on the first mqar (one query per "
        "eight positions), before round 2 drew new users every epoch, filled every query slot and turned dropout "
        "off (presets.ROUND2_RECIPE; docs/longrange.md says why). Chance: the test users' level.",
        "",
        pipe_table(table.round(4)),
        "",
    ]


@dataclass
class SeedContext:
    """One mechanism's effective context on one round-2 task, over its seeds at the chosen rate."""

    median: str  # read from the line of each distance's median
    lowest: str  # from the lowest seed's readings, distance by distance
    highest: str
    seeds: int  # the fewest seeds of any distance with more than one
    distances: tuple[int, ...]  # the distances with more than one seed

    def shown(self) -> str:
        return f"{self.median} [{self.lowest}; {self.highest}]"


def seed_contexts(every: pd.DataFrame) -> dict[tuple[str, str], SeedContext]:
    """(task, mechanism) -> its SeedContext, for the round-2 cells among `every` at each one's chosen rate."""
    round2 = _round2(every)
    if round2.empty:
        return {}
    _, chosen = _grid(round2)
    seeds = _at_chosen_rates(round2, chosen)
    return _contexts(_summary(seeds)) if not seeds.empty else {}


def _summary(seeds: pd.DataFrame) -> pd.DataFrame:
    """Median, lowest and highest over seeds per (task, mechanism, k), with the cell's ceiling and chance."""
    grouped = seeds.groupby(["task", "mechanism", "distance"])
    summary = grouped["accuracy"].agg(["median", "min", "max", "count"]).reset_index()
    levels = grouped[["ceiling", "chance"]].first().reset_index()
    return summary.merge(levels, on=["task", "mechanism", "distance"])


def _contexts(summary: pd.DataFrame) -> dict[tuple[str, str], SeedContext]:
    contexts = {}
    for (task, mechanism), line in summary.groupby(["task", "mechanism"]):
        several = line[line["count"] > 1]
        readings = [
            effective_context(several.assign(accuracy=several[c])) if len(several) else "-"
            for c in ("median", "min", "max")
        ]
        seeds = int(several["count"].min()) if len(several) else 1
        contexts[(task, mechanism)] = SeedContext(*readings, seeds, tuple(int(k) for k in several["distance"]))
    return contexts


def _diagnosis(diagnosis: pd.DataFrame, round1: pd.DataFrame) -> list[str]:
    """Mechanisms x (distance, change) -> test NDCG@10 of the recall diagnosis, beside round 1's cells at the same
    distances."""
    records = []
    for row in diagnosis.itertuples():
        label = row.mechanism.split(" (")[0]  # a fallback note is not a change of the cell
        base = label.split("[")[0]
        option = label[len(base) :]
        rate = ",".join(part for part in row.variant.split(",") if part != "lr=0.003")  # round 1's rate: no change
        budget = f"{int(row.budget)} epochs" if row.budget != 16 else ""
        change = ", ".join(filter(None, [rate, option.strip("[]"), budget])) or "as round 1"
        records.append({"mechanism": base, "cell": f"k={row.distance}: {change}", "value": _reading(row)})
    diagnosed = {record["mechanism"] for record in records}
    for row in round1[round1["distance"].isin(set(diagnosis["distance"]))].itertuples():
        label = row.mechanism.split(" (")[0]  # round 1 ran Mamba's PyTorch path: the same mechanism
        if label in diagnosed:  # a base name alone: round 1's cell of that mechanism without options
            cell = f"k={row.distance}: round 1 (lr=0.003)"
            records.append({"mechanism": label, "cell": cell, "value": _reading(row)})
    table = pd.DataFrame(records).pivot_table(index="mechanism", columns="cell", values="value", aggfunc="first")
    table = table[sorted(table.columns, key=lambda c: (int(c.split(":")[0][2:]), c))].fillna("—")
    return [
        "## Recall at k = 64: what stops Mamba and retention (diagnosis)",
        "",
        "One change at a time from the round-1 recipe (lr 0.003, width 64, 2 heads, 16 epochs), test NDCG@10 on "
        "`recall` (ceiling 1, chance ~0.005 at k = 64); `*`: best epoch in the last quarter of the budget. "
        "docs/longrange.md states what the cells show.",
        "",
        pipe_table(table.reset_index()),
        "",
    ]


def _reading(row) -> str:
    return f"{row.accuracy:.3f}" + ("*" if row.late else "")


def _grid(round2: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """The learning-rate grid at the shortest distance (seed 2000, validation NDCG@10) and the rate chosen for each
    (task, mechanism): where every rate of the grid has a cell."""
    from ..training.presets import LR_GRID

    shortest = round2["distance"].min()
    grid = round2[(round2["distance"] == shortest) & (round2["seed"] == 2000)]
    grid = grid.assign(lr=grid["variant"].map(_lr))
    rates = sorted(set(LR_GRID) | set(grid["lr"]))  # the preset's grid: nothing is chosen before all of it has run
    chosen, records = [], []
    for (task, mechanism), cells in grid.groupby(["task", "mechanism"]):
        by_lr = dict(zip(cells["lr"], cells["valid"], strict=True))
        # a tie goes to the smaller rate, as the preset chooses (presets.chosen_learning_rates)
        best = max(sorted(by_lr), key=by_lr.get) if set(LR_GRID) <= set(by_lr) else None
        if best is not None:
            chosen.append({"task": task, "mechanism": mechanism, "lr": best})
        marks = {lr: f"{by_lr[lr]:.3f}" + (" ←" if lr == best else "") for lr in by_lr}
        records.append(
            {
                "task": task,
                "mechanism": mechanism,
                **{f"lr {lr:g}": marks.get(lr, "—") for lr in rates},
                "chance": f"{cells['chance'].iloc[0]:.3f}",  # the test users' level; validation's is alike
            }
        )
    lines = [
        "## Round 2: the learning rate of each mechanism",
        "",
        f"Validation NDCG@10 at k = {shortest}, seed 2000, {int(grid['budget'].max())} epochs; ← the rate kept for "
        "every distance (the best on validation, once every rate has run; a tie goes to the smaller rate).",
        "",
        pipe_table(pd.DataFrame(records)),
        "",
    ]
    return lines, pd.DataFrame(chosen, columns=["task", "mechanism", "lr"])


def _seeds(seeds: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """Median and range over seeds per (task, mechanism, k), the effective context from the medians, and a heatmap
    of each task's median skill (share of the way from chance to the ceiling)."""
    summary = _summary(seeds)
    contexts = _contexts(summary)
    files, lines = [], ["## Round 2: seeds", ""]
    lines += [
        "Test NDCG@10, median over seeds [lowest, highest] (n seeds); k = 4,096 has one seed. Effective context: "
        "read from the median line, with the readings of the lowest and the highest seed lines in brackets.",
        "",
    ]
    for task, cells in summary.groupby("task"):
        cell = cells.assign(
            shown=[
                f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}] ({r['count']})"
                if r["count"] > 1
                else f"{r['median']:.3f} (one seed)"
                for r in cells.to_dict("records")
            ]
        )
        table = cell.pivot_table(index="mechanism", columns="distance", values="shown", aggfunc="first")
        table.columns = [f"k={k}" for k in table.columns]
        context = {mechanism: contexts[(task, mechanism)].shown() for mechanism in cells["mechanism"].unique()}
        table["effective context (median [lowest; highest])"] = pd.Series(context)
        path = out / f"longrange_round2_{task}_heatmap.png"
        skill_heatmap(cells, f"{task}: median skill over seeds (share of chance→ceiling)", path)
        files.append(path)
        lines += [f"### {task}", "", f"![{task} heatmap]({path.name})", "", pipe_table(table.reset_index()), ""]
    summary.to_csv(out / "longrange_round2.csv", index=False)
    return [*files, out / "longrange_round2.csv"], lines
