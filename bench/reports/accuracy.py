"""Accuracy reports from stored training rows (pandas and matplotlib only; nothing is re-trained).

Answers "what do I lose or gain in accuracy, and what does it cost, as N grows?" per
setting (dataset with its item count, recommender and objective, recipe, model width):

    accuracy_vs_len_<setting>.png     test NDCG@10 under both protocols and s/epoch vs N
    accuracy_vs_batch_<setting>.png   the same vs batch size
    accuracy_by_history_<setting>.png test NDCG@10 vs N within each history-length range
    pareto_<setting>_<protocol>.png   test NDCG@10 vs total training time, Pareto front
    learning_curves_<setting>.png     validation NDCG@10 vs epoch, one line per run
    accuracy_<setting>.md/.csv/.tex   mean ± std over seeds, and each gap to sdpa against
                                      the seed-to-seed spread
    ablation_<setting>.md/.csv        one recipe change at a time against the recipe as named
    order_<A>_vs_<B>_<recipe>.md/.csv the same ratings in two file orders (equal statistics,
                                      different sequence fingerprints), trained alike

Rows come from the accuracy sweep (`level == "train"`) or from a training run's results.json.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd

from . import style
from .ablation import ablation_table
from .accuracy_plots import by_history, learning_curves, pareto, vs_axis
from .longrange import is_longrange_row, longrange_report
from .per_user import (
    history_length_sections,
    paired_lines,
    paired_to_baseline,
    seed_aware_lines,
    seed_aware_to_baseline,
    strata_table,
    where_text,
)
from .style import BASELINE, pipe_table, write_table
from .training_rows import (
    PROTOCOL_NAMES,
    SUBJECT,
    device_label,
    devices_of,
    mean_pm,
    protocols_of,
    several_devices,
    short_protocol,
    summary,
    train_frame,
)

# ------------------------------------------------------------------ the frame

WITHIN_RUN = (
    "The runs of the seeds both sides ran, the same test users scored by both: the 95 % paired bootstrap interval "
    "of the per-user NDCG@10 difference and the Wilcoxon signed-rank test. This compares these trained runs, not "
    "the mechanisms: another seed moves a run by as much. Verdicts come from the section above."
)
VERDICT_RULE = (
    "Each mechanism's runs (every seed) against every run of the reference: the 95 % interval of the gap in mean "
    "NDCG@10 resamples seeds within each mechanism and users (hierarchical bootstrap). The verdict follows one rule: "
    "fewer than three seeds on a side: 'one run' (one seed each) or 'undecided'; the interval above 0: 'ahead'; "
    "below 0: 'behind'; inside ±0.005: 'level'; otherwise 'undecided'. A single run's p-value is never a verdict."
)


def gaps_to_baseline(
    frame: pd.DataFrame,
    protocol: str,
    column: str = "mechanism",
    baseline: str = BASELINE,
    within: tuple[str, ...] = ("seq_len", "batch_size"),
    split: str = "test",
) -> list[str]:
    """One sentence per value of `column` and group of `within`: its NDCG@10 gap to `baseline` (sdpa, or a
    dataset) against the seed spread, on the test users (or the validation users at the best epoch). Runs still
    training (snapshots) are left out where finished runs exist on both sides: an early snapshot would widen
    the spread."""
    metric, lines = f"{'valid_' if split == 'valid' else ''}ndcg@10:{protocol}", []
    for where, shape in frame.groupby(list(within)):
        for value, runs in shape[shape[column] != baseline].groupby(column):
            pair = pd.concat([shape[shape[column] == baseline], runs])
            finished = pair[~pair["partial"].astype(bool)] if "partial" in pair else pair
            if finished[column].nunique() == 2:
                pair = finished
            base = pair[pair[column] == baseline][metric].dropna().tolist()
            other = pair[pair[column] == value][metric].dropna().tolist()
            if not base or not other:
                continue
            still = len(runs) + (shape[column] == baseline).sum() - len(pair)
            training = f" ({still} run(s) still training not counted)" if still else ""
            gap = statistics.mean(other) - statistics.mean(base)
            if len(base) > 1 and len(other) > 1:
                spread = max(statistics.stdev(base), statistics.stdev(other))
                verdict = "exceeds" if abs(gap) > 2 * spread else "is within"
                detail = (
                    f"{verdict} twice the larger seed-to-seed std ({spread:.4f}; {len(base)} and {len(other)} seeds)"
                )
            elif len(base) > 1 or len(other) > 1:  # one side's spread is known: a first, weaker reading
                seeded, seeds, single = (baseline, base, value) if len(base) > 1 else (value, other, baseline)
                spread = statistics.stdev(seeds)
                verdict = "exceeds" if abs(gap) > 2 * spread else "is within"
                detail = (
                    f"{verdict} twice {seeded}'s seed-to-seed std ({spread:.4f}; {len(seeds)} seeds); {single} has one "
                    "seed, its own spread is not known yet"
                )
            else:
                detail = "cannot be compared with the seed spread yet (one seed on each side)"
            detail += _matched_seeds(pair, column, baseline, value, metric)
            lines.append(
                f"- {where_text(within, where)}: {value} {gap:+.4f} {'validation ' if split == 'valid' else ''}"
                f"NDCG@10 vs {baseline}; the gap {detail}{training}."
            )
    return lines


def _matched_seeds(pair: pd.DataFrame, column: str, baseline: str, value, metric: str) -> str:
    """Where the two sides ran different seeds: the gap over the seeds both ran (what the paired test reads)."""
    seeds = [set(pair[(pair[column] == side) & pair[metric].notna()]["seed"]) for side in (baseline, value)]
    common = sorted(seeds[0] & seeds[1])
    if not common or seeds[0] == seeds[1]:
        return ""
    means = [pair[(pair[column] == side) & pair["seed"].isin(common)][metric].mean() for side in (baseline, value)]
    return f"; over the seed(s) both ran ({', '.join(map(str, common))}): {means[1] - means[0]:+.4f}"


# ------------------------------------------------------------------ plots


# ------------------------------------------------------------------ tables


def _table(table: pd.DataFrame, protocols: list[str], paired: dict | None = None) -> pd.DataFrame:
    out = table[["mechanism", "seq_len", "batch_size", "seeds"]].rename(columns={"seq_len": "N", "batch_size": "batch"})
    out["seeds"] = [
        f"{n} †" if partial else str(n) for n, partial in zip(table["seeds"], table["partial"], strict=True)
    ]
    for protocol in protocols:
        short = short_protocol(protocol)
        for metric, name in (("ndcg@10", "NDCG@10"), ("recall@10", "Recall@10")):
            out[f"{name} ({short})"] = [
                mean_pm(m, s, n)
                for m, s, n in zip(
                    table[f"{metric}:{protocol}|mean"], table[f"{metric}:{protocol}|std"], table["seeds"], strict=False
                )
            ]
    for protocol, tests in (paired or {}).items():
        if tests:
            out[f"Δ vs {BASELINE} over seeds ({short_protocol(protocol)})"] = [
                tests[key].brief() if key in tests else ""
                for key in zip(table["mechanism"], table["seq_len"], table["batch_size"], strict=True)
            ]
    out["best epoch"] = table["best_epoch"].round(1)
    if "batches" in table:
        out["batches"] = table["batches"]
    if several_devices(table):
        out["device"] = table["device"]
    out["s/epoch"] = table["s_per_epoch"].round(1)
    out["other load"] = [f"{v:.1f}" if v == v else "—" for v in table["other_load"]]  # NaN: not recorded
    out["train min"] = table["train_minutes"].round(1)
    return out.sort_values(
        ["N", "batch", "mechanism"], key=lambda c: c.map(lambda v: (v != BASELINE, v)) if c.name == "mechanism" else c
    )


def accuracy_report(rows: list[dict], out: Path) -> list[Path]:
    """Every accuracy plot and table for the finished training rows; returns the files written. Rows of the
    long-range tasks get their own report (accuracy against distance)."""
    written = longrange_report(rows, out)
    frame = train_frame([row for row in rows if not is_longrange_row(row)])
    if frame.empty:
        return written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for setting, runs in _settings(frame, out, written):
        written += _setting_figures(setting, runs, out)
        written += _setting_page(setting, runs, out)
    return written + _order_tables(frame, out)


def _setting_figures(setting: str, runs: pd.DataFrame, out: Path) -> list[Path]:
    """One setting's figures: accuracy against N and batch (where several), by history length, against training
    time, and the learning curves."""
    protocols, colors, table = protocols_of(runs), style.colors(runs["mechanism"]), summary(runs)
    title = f"{setting.replace('_', ', ')} — {devices_of(runs['device'])}"
    common_batch = int(runs["batch_size"].mode().iloc[0])
    common_len = int(runs["seq_len"].mode().iloc[0])
    written = []
    by_len = table[table["batch_size"] == common_batch]
    if by_len["seq_len"].nunique() > 1:
        path = out / f"accuracy_vs_len_{setting}.png"
        vs_axis(
            by_len, "seq_len", protocols, f"Accuracy vs sequence length, batch {common_batch} — {title}", path, colors
        )
        written.append(path)
    strata = {p: strata_table(runs[runs["batch_size"] == common_batch], p) for p in protocols}
    if all(not t.empty for t in strata.values()) and any(t["N"].nunique() > 1 for t in strata.values()):
        path = out / f"accuracy_by_history_{setting}.png"
        by_history(strata, f"Accuracy vs N by history length, batch {common_batch} — {title}", path, colors)
        written.append(path)
    by_batch = table[table["seq_len"] == common_len]
    if by_batch["batch_size"].nunique() > 1:
        path = out / f"accuracy_vs_batch_{setting}.png"
        vs_axis(by_batch, "batch_size", protocols, f"Accuracy vs batch size, N={common_len} — {title}", path, colors)
        written.append(path)
    for protocol in protocols:
        path = out / f"pareto_{setting}_{protocol}.png"
        name = PROTOCOL_NAMES.get(protocol, protocol)
        pareto(runs, protocol, f"Accuracy vs training time ({name}) — {title}", path, colors)
        written.append(path)
    path = out / f"learning_curves_{setting}.png"
    learning_curves(runs, f"Learning curves — {title}", path, colors)
    return [*written, path]


TABLE_NOTE = (
    " Test metrics of the best validation epoch, full ranking, leave-one-out; mean ± std over seeds where several "
    "exist. 'seen excl.': items already in the user's history are not ranked (the target stays rankable); 'all': "
    "every item is ranked. †: a run still training (snapshot of its best epoch so far). 'other load': cores other "
    "processes used while it trained (median over epochs, the largest over seeds; '—': not recorded): s/epoch taken "
    "under load is not comparable with a quiet one. 'batches': whole (each padded to its longest history) or split "
    "into groups of similar length (the same loss, less padding: faster per epoch, so s/epoch is comparable only "
    "between rows alike: same batches, same device, similar load)."
)


def _comparison_sections(runs: pd.DataFrame, protocol: str) -> list[str]:
    """The verdicts against sdpa and LinRec over seeds, then the within-run (paired) view."""
    # LinRec too: whoever weighs another efficient mixer against it wants that gap tested directly
    others = runs[runs["mechanism"] != BASELINE]
    name = PROTOCOL_NAMES.get(protocol, protocol)
    sections = [  # (title, what it is, its lines): the verdicts first, then the within-run view
        (
            f"Against {BASELINE}, over seeds ({name})",
            VERDICT_RULE,
            seed_aware_lines(seed_aware_to_baseline(runs, protocol)),
        ),
        (
            f"Against {SUBJECT}, over seeds ({name})",
            VERDICT_RULE,
            seed_aware_lines(seed_aware_to_baseline(others, protocol, SUBJECT), baseline=SUBJECT),
        ),
        (
            f"Within-run view: paired against {BASELINE} ({name})",
            WITHIN_RUN,
            paired_lines(paired_to_baseline(runs, protocol)),
        ),
        (
            f"Within-run view: paired against {SUBJECT} ({name})",
            WITHIN_RUN,
            paired_lines(paired_to_baseline(others, protocol, baseline=SUBJECT), baseline=SUBJECT),
        ),
    ]
    text = []
    for title, intro, lines in sections:
        if lines:
            text += [f"## {title}", "", intro, "", *lines, ""]
    return text


def _setting_page(setting: str, runs: pd.DataFrame, out: Path) -> list[Path]:
    """One setting's table (md / csv / tex) and its page: gaps, verdicts, accuracy by history length."""
    protocols = protocols_of(runs)
    seed_aware = {protocol: seed_aware_to_baseline(runs, protocol) for protocol in protocols}
    shown = _table(summary(runs), protocols, seed_aware)
    text = [f"# Accuracy — {setting.replace('_', ', ')}", "", _device_sentence(runs["device"]) + TABLE_NOTE, ""]
    text.append(pipe_table(shown))
    for protocol in protocols:
        gaps = gaps_to_baseline(runs, protocol)
        if gaps:
            text += [f"## Gap to {BASELINE} ({PROTOCOL_NAMES.get(protocol, protocol)})", "", *gaps, ""]
        text += _comparison_sections(runs, protocol)
        text += history_length_sections(runs, protocol)
    stem = out / f"accuracy_{setting}"
    return write_table(stem, shown, f"Test metrics, leave-one-out, full ranking — {setting}", page=text)


def _settings(frame: pd.DataFrame, out: Path, written: list[Path]):
    """(name, runs) for each setting's report. Where a setting has runs of the recipe as named, those; its other
    variants go to the ablation table. Where no run keeps the recipe as named (a preset's own settings, e.g. the
    LinRec authors' width and selection, with and without whole-history windows), each variant is reported as a
    setting of its own."""
    for setting, every_variant in frame.groupby("setting"):
        if every_variant["variant"].nunique() > 1:
            written += ablation_table(every_variant.dropna(axis=1, how="all"), setting, out)
        base = every_variant[every_variant["variant"] == ""]
        if not base.empty:
            yield setting, base.dropna(axis=1, how="all")
            continue
        for name, runs in every_variant.groupby("variant"):
            yield f"{setting}_{name.replace('=', '-').replace(',', '_')}", runs.dropna(axis=1, how="all")


def _device_sentence(devices: pd.Series) -> str:
    counts = devices.map(device_label).value_counts()
    if len(counts) == 1:
        return f"Device: {devices.iloc[0]}."
    listed = ", ".join(f"{name} ({count} run{'s' if count > 1 else ''})" for name, count in counts.items())
    return (
        f"Devices: {listed}; the 'device' column says which trained each row: its s/epoch and training minutes "
        "compare only with rows of the same device."
    )


def _order_tables(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Datasets with the same ratings in different orders (ML-1M files that break timestamp ties differently),
    trained with the same recipe: each side's mean ± std and the gap against the seed spread."""
    written = []
    for _, same in frame[frame["variant"] == ""].groupby("ratings"):
        known = same.dropna(subset=["fingerprint"]).groupby("dataset")["fingerprint"].first()
        if same["dataset"].nunique() < 2 or (len(known) == same["dataset"].nunique() and known.nunique() == 1):
            continue  # one dataset, or two names for one file (rows before fingerprints count as different)
        datasets = sorted(same["dataset"].unique())
        table = summary(same, by=("dataset", "mechanism", "seq_len", "batch_size"))
        protocols = protocols_of(same)
        shown = pd.concat([table[["dataset"]], _table(table, protocols)], axis=1).sort_values(
            ["mechanism", "N", "batch", "dataset"]
        )
        for protocol in protocols:  # the validation users too: a second sample of users, as large as the test's
            mean, std = (table.get(f"valid_ndcg@10:{protocol}|{stat}") for stat in ("mean", "std"))
            if mean is not None:
                short = short_protocol(protocol)
                values = [mean_pm(m, s, n) for m, s, n in zip(mean, std, table["seeds"], strict=True)]
                shown.insert(
                    list(shown.columns).index("best epoch"),
                    f"valid NDCG@10 ({short})",
                    pd.Series(values, index=table.index),
                )
        stem = out / f"order_{'_vs_'.join(datasets)}_{same['recipe'].iloc[0]}"
        text = [
            f"# Same ratings, another order — {' vs '.join(datasets)}",
            "",
            "These datasets hold the same ratings (equal statistics) in different orders (different sequence "
            "fingerprints where the rows record them), e.g. two ML-1M files that break equal timestamps "
            "differently; each is trained with the same recipe and seeds. Test metrics of the best validation "
            "epoch, full ranking, leave-one-out; 'valid': the validation users' NDCG@10 at that epoch (chosen on "
            "it, so optimistic alike on both sides; a second sample of users beside the test's). †: a run still "
            "training (snapshot of its best epoch so far).",
            "",
            pipe_table(shown),
        ]
        for protocol in protocols:
            gaps = [
                line
                for split in ("test", "valid")
                for line in gaps_to_baseline(
                    same,
                    protocol,
                    column="dataset",
                    baseline=datasets[0],
                    within=("mechanism", "seq_len", "batch_size"),
                    split=split,
                )
            ]
            text += [f"## Gap between the orders ({PROTOCOL_NAMES.get(protocol, protocol)})", "", *gaps, ""]
        written += write_table(stem, shown, text[0].lstrip("# "), page=text)
    return written
