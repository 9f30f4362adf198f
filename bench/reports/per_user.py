"""What the per-user test ranks of finished runs tell (bench.training.train keeps them, with each user's history
length): paired tests of every mechanism against sdpa over the same users, accuracy by history length, and what
another window N changes for each history length, paired against the same mechanism at the reference N (whom a
longer window helps, and whether that is more than chance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .paired import PairedComparison, compare_seeds, ndcg_at, read_ranks
from .seeds import SeedComparison, compare_mechanisms
from .style import BASELINE, pipe_table
from .training_rows import PROTOCOL_NAMES

# history lengths (items before the test item) that split ML-1M's users into short, long and very long histories
STRATA = ((0, 100, "< 100"), (100, 400, "100-399"), (400, None, ">= 400"))
REFERENCE_WINDOW = 200  # the N of SASRec's and LinRec's papers: every other window is read against it


def history_length_sections(runs: pd.DataFrame, protocol: str) -> list[str]:
    """The report's markdown on history lengths: accuracy per stratum, then each other window against the
    reference one, per stratum. Empty when no run recorded history lengths."""
    strata = strata_table(runs, protocol)
    if strata.empty:
        return []
    name = PROTOCOL_NAMES.get(protocol, protocol)
    text = [
        f"## By history length ({name})",
        "",
        "Test NDCG@10 of the users whose history before the test item falls in each range (runs that recorded "
        "history lengths; mean over their seeds):",
        "",
        pipe_table(strata.assign(**{c: strata[c].map("{:.4f}".format) for c in strata if c.startswith("NDCG")})),
        "",
    ]
    windows = window_strata(runs, protocol)
    if not windows.empty:
        text += [
            f"## What the window changes, by history length ({name})",
            "",
            f"Each mechanism at another N against itself at N={REFERENCE_WINDOW}, same batch size and seeds, paired "
            "over the same test users of each range: the mean NDCG@10 difference (N minus "
            f"N={REFERENCE_WINDOW}), its 95 % paired bootstrap interval and the Wilcoxon p; *: the interval "
            "excludes 0 and p < 0.05 for these runs (a within-run view, not a verdict: another seed moves a run as "
            "much). Users whose whole history fits both windows see the same items, so a longer window can only "
            "help those beyond the shorter one; what it changes for the others is how "
            "the model was trained.",
            "",
            pipe_table(windows),
            "",
        ]
    return text


def strata_table(runs: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One row per (mechanism, N, batch): NDCG@10 per history-length stratum, mean over the seeds whose ranks
    file records history lengths, with the stratum's user count. Empty when no run recorded them."""
    records = []
    for (mechanism, n, batch), group in _finished_with_ranks(runs).groupby(["mechanism", "seq_len", "batch_size"]):
        per_seed = []
        for path in group["ranks_path"].dropna():
            payload = read_ranks(path)
            if "history_lengths" not in payload or protocol not in payload["ranks"]:
                continue
            lengths = np.asarray(payload["history_lengths"])
            gains = ndcg_at(payload["ranks"][protocol])
            per_seed.append(
                {label: (gains[_in(lengths, low, high)], _in(lengths, low, high).sum()) for low, high, label in STRATA}
            )
        if not per_seed:
            continue
        record = {"mechanism": mechanism, "N": n, "batch": batch, "seeds": len(per_seed)}
        for _, _, label in STRATA:
            gains = [seed[label][0] for seed in per_seed]
            record[f"NDCG@10 {label}"] = float(np.mean([g.mean() for g in gains])) if gains[0].size else np.nan
            record[f"users {label}"] = int(per_seed[0][label][1])
        records.append(record)
    return pd.DataFrame(records)


def window_strata(runs: pd.DataFrame, protocol: str, reference: int = REFERENCE_WINDOW) -> pd.DataFrame:
    """One row per (mechanism, N other than the reference, batch) with finished runs of both N on common seeds:
    the paired test of N against the reference N over every test user and within each history-length stratum."""
    records = []
    for (mechanism, batch), group in _finished_with_ranks(runs).groupby(["mechanism", "batch_size"]):
        for n, other in group[group["seq_len"] != reference].groupby("seq_len"):
            pairs = _seed_pairs(group[group["seq_len"] == reference], other)
            pairs = [(a, b) for a, b in pairs if "history_lengths" in a and "history_lengths" in b]
            if not pairs or any(protocol not in a["ranks"] or protocol not in b["ranks"] for a, b in pairs):
                continue
            record = {"mechanism": mechanism, "N": n, "against N": reference, "batch": batch, "seed pairs": len(pairs)}
            record["every user"] = compare_seeds(pairs, protocol=protocol).brief()
            for low, high, label in STRATA:
                within = [(_stratum(a, protocol, low, high), _stratum(b, protocol, low, high)) for a, b in pairs]
                shared = set.intersection(*(set(a["users"]) & set(b["users"]) for a, b in within))
                record[f"Δ NDCG@10 {label}"] = compare_seeds(within, protocol=protocol).brief() if shared else ""
            records.append(record)
    return pd.DataFrame(records)


def _finished_with_ranks(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that finished (no snapshot of a cell still training) and kept their per-user test ranks."""
    if "ranks_path" not in runs:
        return runs.iloc[0:0]
    finished = ~runs["partial"].astype(bool) if "partial" in runs else True
    return runs[finished & runs["ranks_path"].notna()]


def _seed_pairs(reference: pd.DataFrame, runs: pd.DataFrame) -> list[tuple[dict, dict]]:
    """(reference run's ranks, run's ranks) for every seed both sides ran, where both ranks files are here."""
    base = dict(zip(reference["seed"], reference["ranks_path"], strict=True))
    return [
        (read_ranks(base[seed]), read_ranks(path))
        for seed, path in zip(runs["seed"], runs["ranks_path"], strict=True)
        if seed in base and Path(base[seed]).exists() and Path(path).exists()
    ]


def paired_between(reference: pd.DataFrame, runs: pd.DataFrame, protocol: str) -> PairedComparison | None:
    """The paired test of runs against reference runs of the same seeds (e.g. a recipe change against the recipe
    it changes); None where no finished seed pair kept its ranks."""
    reference, runs = _finished_with_ranks(reference), _finished_with_ranks(runs)
    pairs = _seed_pairs(reference, runs) if len(reference) and len(runs) else []
    return compare_seeds(pairs, protocol=protocol) if pairs else None


def _stratum(payload: dict, protocol: str, low: int, high: int | None) -> dict:
    """The payload's users whose history length lies in [low, high), with their ranks under one protocol."""
    keep = _in(np.asarray(payload["history_lengths"]), low, high)
    users = [user for user, kept in zip(payload["users"], keep, strict=True) if kept]
    ranks = np.asarray(payload["ranks"][protocol])[keep].tolist()
    return {"users": users, "ranks": {protocol: ranks}, "file_sha256": payload.get("file_sha256", "")}


def _in(lengths: np.ndarray, low: int, high: int | None) -> np.ndarray:
    return (lengths >= low) & (lengths < high) if high is not None else lengths >= low


def where_text(names: tuple[str, ...], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    shown = {"seq_len": "N={}", "batch_size": "batch {}"}
    return ", ".join(shown.get(name, "{}").format(value) for name, value in zip(names, values, strict=True))


def paired_to_baseline(
    frame: pd.DataFrame, protocol: str, baseline: str = BASELINE, within: tuple[str, ...] = ("seq_len", "batch_size")
) -> dict[tuple, PairedComparison]:
    """(mechanism, *within) -> the paired test of its finished runs against the baseline's of the same seeds,
    over the same test users (bench.reports.paired): only where both sides kept their per-user ranks."""
    results = {}
    for where, shape in _finished_with_ranks(frame).groupby(list(within)):
        where = where if isinstance(where, tuple) else (where,)
        for mechanism, runs in shape[shape["mechanism"] != baseline].groupby("mechanism"):
            pairs = _seed_pairs(shape[shape["mechanism"] == baseline], runs)
            if pairs:
                results[(mechanism, *where)] = compare_seeds(pairs, protocol=protocol)
    return results


def seed_aware_to_baseline(
    frame: pd.DataFrame, protocol: str, baseline: str = BASELINE, within: tuple[str, ...] = ("seq_len", "batch_size")
) -> dict[tuple, SeedComparison]:
    """(mechanism, *within) -> its finished runs, every seed, against every finished run of the baseline (not only
    the seeds both ran): the seed-aware comparison whose verdict the reports state."""
    results = {}
    for where, shape in _finished_with_ranks(frame).groupby(list(within)):
        where = where if isinstance(where, tuple) else (where,)
        reference = [read_ranks(p) for p in shape[shape["mechanism"] == baseline]["ranks_path"] if Path(p).exists()]
        if not reference:
            continue
        for mechanism, runs in shape[shape["mechanism"] != baseline].groupby("mechanism"):
            own = [read_ranks(p) for p in runs["ranks_path"] if Path(p).exists()]
            if own:
                results[(mechanism, *where)] = compare_mechanisms(reference, own, protocol=protocol)
    return results


def seed_aware_lines(
    tests: dict[tuple, SeedComparison], within=("seq_len", "batch_size"), baseline: str = BASELINE
) -> list[str]:
    lines = []
    for (mechanism, *where), test in sorted(tests.items(), key=lambda item: tuple(map(str, item[0]))):
        lines.append(
            f"- {where_text(within, tuple(where))}: {mechanism} **{test.verdict}** vs {baseline}: "
            f"{test.difference:+.4f} NDCG@10 ({test.mean_b:.4f} over {test.seeds_b} seed(s) against "
            f"{test.mean_a:.4f} over {test.seeds_a}), 95 % interval over seeds and users "
            f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}]; per-seed means: Welch p = {test.welch_p:.2g}, exact "
            f"permutation p = {test.permutation_p:.2g}; P(a run beats a run of {baseline}) = "
            f"{test.improvement_seeds:.2f}, P(better on a user) = {test.improvement_users:.2f}."
        )
    return lines


def paired_lines(
    tests: dict[tuple, PairedComparison], within=("seq_len", "batch_size"), baseline: str = BASELINE
) -> list[str]:
    lines = []
    for (mechanism, *where), test in sorted(tests.items(), key=lambda item: tuple(map(str, item[0]))):
        reading = "excludes 0 for these runs" if test.significant else "includes 0"
        lines.append(
            f"- {where_text(within, tuple(where))}: {mechanism} {test.difference:+.4f} NDCG@10 vs {baseline} over "
            f"{test.users} users ({test.seeds} seed pair(s) averaged per user), 95 % paired bootstrap interval "
            f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}], Wilcoxon p = {test.wilcoxon_p:.2g}, paired t p = "
            f"{test.t_p:.2g}: the interval {reading}."
        )
    return lines
