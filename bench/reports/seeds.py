"""Seed-aware comparison of two mechanisms: each over its own seeds, on the same test users.

A paired test over users (reports/paired.py) compares two trained runs; the training seed moves a run's mean by as
much as the gaps compared here (the same mechanism against itself, seed against seed, reads "significant" over
6,040 users). A verdict about mechanisms resamples both: seeds within each mechanism, then users (Bouthillier et
al., MLSys 2021; Agarwal et al., NeurIPS 2021, whose stratified bootstrap and probability of improvement rliable
implements). Plain Python and numpy, as paired.py.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from .paired import regularized_beta, user_gains

# A gap whose whole 95 % interval lies within +-3 % of the reference's mean NDCG@10 is "level": +-0.0053 on ML-1M
# (0.178), +-0.0017 on Amazon Beauty (0.056). NOTE: relative, so that one rule reads datasets whose NDCG@10 differs
# threefold; it was +-0.005 absolute while ML-1M was the only dataset (the same verdicts there).
LEVEL_MARGIN = 0.03
MIN_SEEDS = 3  # per side, for any verdict other than "one run" / "undecided"


def seed_matrix(runs: list[dict], users: list[str], protocol: str, k: int = 10) -> np.ndarray:
    """(seeds, users) NDCG@k of each run (rank payloads) on the given users, in that order."""
    rows = []
    for run in runs:
        gains = user_gains(run, protocol, k)
        rows.append([gains[user] for user in users])
    return np.asarray(rows, dtype=np.float64)


def hierarchical_interval(
    gains_a: np.ndarray, gains_b: np.ndarray, *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of mean(b) - mean(a) over (seeds, users) matrices of the same users: each resample draws
    users with replacement (the same users for both sides: they are paired), then each side's seeds with
    replacement, and compares the seed-averaged means. With one seed per side it is `bootstrap_interval` of the
    per-user differences, draw for draw (the users are drawn from the same stream)."""
    n = gains_a.shape[1]
    if gains_b.shape[1] != n:
        raise ValueError(f"the two sides are scored on different users ({n} and {gains_b.shape[1]})")
    user_draws, seed_draws = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    differences = []
    for start in range(0, resamples, 500):  # as bootstrap_interval: the same user draws, 500 at a time
        count = min(500, resamples - start)
        picks = user_draws.integers(0, n, size=(count, n))  # (count, n)
        flat = (picks + n * np.arange(count)[:, None]).ravel()
        weights = np.bincount(flat, minlength=count * n).reshape(count, n) / n  # (count, n): each resample's users
        side_means = []
        for gains in (gains_a, gains_b):
            per_seed = weights @ gains.T  # (count, seeds): each run's mean over the resampled users
            chosen = seed_draws.integers(0, gains.shape[0], size=(count, gains.shape[0]))
            side_means.append(np.take_along_axis(per_seed, chosen, axis=1).mean(axis=1))
        differences.append(side_means[1] - side_means[0])
    differences = np.sort(np.concatenate(differences))
    tail = (1 - level) / 2
    return (
        float(differences[int(math.floor(tail * (resamples - 1)))]),
        float(differences[int(math.ceil((1 - tail) * (resamples - 1)))]),
    )


def welch_p(means_a, means_b) -> float:
    """Two-sided p of Welch's t-test on per-seed means (unequal variances, Welch-Satterthwaite degrees of freedom);
    1.0 where a side has fewer than two seeds."""
    a, b = np.asarray(means_a, dtype=np.float64), np.asarray(means_b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return 1.0
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    t = (b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return regularized_beta(df / (df + t * t), df / 2, 0.5)


def permutation_p(means_a, means_b) -> float:
    """Exact two-sided permutation p over per-seed means: the share of all relabellings of the seeds whose |gap|
    is at least the observed one. Its floor is 2 / C(na + nb, na): 0.1 with three seeds a side, never below 0.05."""
    a, b = list(map(float, means_a)), list(map(float, means_b))
    pooled, observed = a + b, abs(np.mean(b) - np.mean(a))
    observed -= 1e-12 * observed + 1e-15  # relabellings whose gap equals the observed one up to rounding count
    total, extreme = 0, 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        picked = set(chosen)
        side_a = [pooled[i] for i in picked]
        side_b = [pooled[i] for i in range(len(pooled)) if i not in picked]
        total += 1
        extreme += abs(np.mean(side_b) - np.mean(side_a)) >= observed
    return extreme / total


def probability_of_improvement(values_a, values_b) -> float:
    """P(b > a) over every pair (a_i, b_j), ties counting one half (the Mann-Whitney statistic, normalised)."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    greater = (b[None, :] > a[:, None]).sum()
    ties = (b[None, :] == a[:, None]).sum()
    return float((greater + 0.5 * ties) / (len(a) * len(b)))


@dataclass
class SeedComparison:
    """Mechanism b against mechanism a, each over its own seeds, on the test users every run has."""

    protocol: str
    users: int
    seeds_a: int
    seeds_b: int
    mean_a: float  # mean over a's seeds of each run's mean NDCG@10
    mean_b: float
    difference: float  # b - a
    ci_low: float  # hierarchical bootstrap (seeds, then users), 95 %
    ci_high: float
    welch_p: float  # per-seed means
    permutation_p: float  # per-seed means, exact
    improvement_seeds: float  # P(a run of b beats a run of a), over seed pairs
    improvement_users: float  # P(b beats a on a user), seed-averaged per user, ties one half

    @property
    def verdict(self) -> str:
        """The one rule every stated comparison follows, from the seed-aware interval alone:
        - fewer than MIN_SEEDS seeds on a side: "one run" (one seed each), else "undecided: A + B seeds";
        - the 95 % interval above 0: "ahead"; below 0: "behind";
        - the interval inside +-LEVEL_MARGIN times a's mean: "level";
        - otherwise "undecided: A + B seeds" (more seeds would tell)."""
        seeds = f"{self.seeds_a} + {self.seeds_b} seeds"
        if self.seeds_a == 1 and self.seeds_b == 1:
            return "one run"
        if min(self.seeds_a, self.seeds_b) < MIN_SEEDS:
            return f"undecided: {seeds}"
        if self.ci_low > 0:
            return "ahead"
        if self.ci_high < 0:
            return "behind"
        margin = LEVEL_MARGIN * abs(self.mean_a)
        if -margin <= self.ci_low and self.ci_high <= margin:
            return "level"
        return f"undecided: {seeds}"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}

    def brief(self) -> str:
        """'-0.0091 [-0.0160, -0.0030] behind (3 + 3 seeds)' (an undecided verdict names its seeds itself)."""
        seeds = "" if "seeds" in self.verdict else f" ({self.seeds_a} + {self.seeds_b} seeds)"
        return f"{self.difference:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}] {self.verdict}{seeds}"


def compare_mechanisms(
    runs_a: list[dict], runs_b: list[dict], *, protocol: str = "seen_excluded", k: int = 10, seed: int = 0
) -> SeedComparison:
    """Mechanism b (its runs, one per seed: rank payloads) against mechanism a (its runs), seed-aware."""
    if not runs_a or not runs_b:
        raise ValueError("nothing to compare: each side needs at least one run")
    files = {run.get("file_sha256") for run in runs_a + runs_b} - {None, ""}
    if len(files) > 1:
        raise ValueError("the runs were tested on different data files: their users do not pair")
    common = set.intersection(*(set(run["users"]) for run in runs_a + runs_b))
    if not common:
        raise ValueError("the runs share no test user")
    users = sorted(common)
    gains_a, gains_b = seed_matrix(runs_a, users, protocol, k), seed_matrix(runs_b, users, protocol, k)
    means_a, means_b = gains_a.mean(axis=1), gains_b.mean(axis=1)
    low, high = hierarchical_interval(gains_a, gains_b, seed=seed)
    return SeedComparison(
        protocol=protocol,
        users=len(users),
        seeds_a=len(runs_a),
        seeds_b=len(runs_b),
        mean_a=float(means_a.mean()),
        mean_b=float(means_b.mean()),
        difference=float(means_b.mean() - means_a.mean()),
        ci_low=low,
        ci_high=high,
        welch_p=welch_p(means_a, means_b),
        permutation_p=permutation_p(means_a, means_b),
        improvement_seeds=probability_of_improvement(means_a, means_b),
        improvement_users=probability_of_improvement_paired(gains_a.mean(axis=0), gains_b.mean(axis=0)),
    )


def probability_of_improvement_paired(per_user_a, per_user_b) -> float:
    """Share of users on whom b scores higher than a (seed-averaged), ties one half."""
    a, b = np.asarray(per_user_a), np.asarray(per_user_b)
    return float(((b > a).sum() + 0.5 * (b == a).sum()) / len(a))
