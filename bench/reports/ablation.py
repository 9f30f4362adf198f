"""Ablation tables: one recipe change at a time against the run it changes, paired over the same users where
both sides kept their test ranks (bench.reports.paired)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .per_user import paired_between
from .style import pipe_table, write_table
from .training_rows import mean_pm, protocols_of, several_devices, short_protocol, summary


def _changes(variant: str) -> set[str]:
    return set(filter(None, variant.split(",")))  # "" (the recipe as named) has none


def _reference_variant(variant: str, variants: pd.Series) -> str | None:
    """The run a variant is compared with: of the variants whose changes are all among this one's, the one with
    the most (the recipe as named where it is the only one; the preset's own settings have no plain recipe)."""
    extended = [other for other in variants if _changes(other) < _changes(variant)]
    return max(extended, key=lambda other: len(_changes(other)), default=None)


def ablation_table(runs: pd.DataFrame, setting: str, out: Path) -> list[Path]:
    """One change at a time against the recipe as named: mean ± std over seeds and the change in NDCG@10."""
    protocols = protocols_of(runs)
    table = summary(runs, by=("mechanism", "seq_len", "batch_size", "variant"))
    lines = []
    for (mechanism, n, batch), group in table.groupby(["mechanism", "seq_len", "batch_size"]):
        shape_runs = runs[(runs["mechanism"] == mechanism) & (runs["seq_len"] == n) & (runs["batch_size"] == batch)]
        for _, row in group.sort_values("variant").iterrows():
            base = group[group["variant"] == _reference_variant(row["variant"], group["variant"])]
            changed = not base.empty and row["variant"] != base["variant"].iloc[0]
            line = {
                "mechanism": mechanism,
                "N": n,
                "batch": batch,
                "change": row["variant"] or "(recipe as named)",
                "seeds": f"{row['seeds']} †" if row.get("partial") else str(row["seeds"]),
            }
            for protocol in protocols:
                column = f"ndcg@10:{protocol}"
                short = short_protocol(protocol)
                line[f"NDCG@10 ({short})"] = mean_pm(row[f"{column}|mean"], row[f"{column}|std"], row["seeds"])
                paired = (
                    paired_between(
                        shape_runs[shape_runs["variant"] == base["variant"].iloc[0]],
                        shape_runs[shape_runs["variant"] == row["variant"]],
                        protocol,
                    )
                    if changed
                    else None
                )
                line[f"Δ ({short})"] = (
                    paired.brief()
                    if paired
                    else f"{row[f'{column}|mean'] - base[f'{column}|mean'].iloc[0]:+.4f}"
                    if changed
                    else ""
                )
            line["best epoch"] = round(row["best_epoch"], 1)
            if several_devices(table):
                line["device"] = row["device"]
            line["s/epoch"] = round(row["s_per_epoch"], 1)
            lines.append(line)
    shown = pd.DataFrame(lines)
    stem = out / f"ablation_{setting}"
    text = [
        f"# Ablation — {setting.replace('_', ', ')}",
        "",
        "Each row changes one setting of the recipe; Δ is the change of mean test NDCG@10 "
        "against the recipe as named (same mechanism, N, batch, seeds), or, where no run keeps it, against the "
        "row whose changes this row's extend (e.g. whole-history windows against the last window). "
        "Where both sides kept their test ranks, Δ is paired over the same users and seeds: 95 % bootstrap "
        "interval and Wilcoxon p, * where the interval excludes 0 and p < 0.05 for these runs (a within-run "
        "view: another seed moves a run as much; verdicts need the seed-aware comparison); else a Δ smaller "
        "than the std is noise. "
        "†: includes a run still training (snapshot of its best epoch so far).",
        "",
        pipe_table(shown),
    ]
    return write_table(stem, shown, text[0].lstrip("# "), page=text)
