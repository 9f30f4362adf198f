"""Paired significance of an accuracy gap: two runs scored on the same test users.

Two means that differ say little when seeds spread as much; a paired test over users asks whether one
model ranks the same users' targets better. Each finished accuracy cell keeps every test user's rank
(`bench.training.accuracy.ranks_dir`); `compare` pairs two such files user by user and reports

- the mean per-user NDCG@10 difference (b - a) with a paired bootstrap 95 % interval (users resampled
  with replacement, the same resample for both runs);
- the Wilcoxon signed-rank test (zero differences dropped, ties averaged, normal approximation with the
  tie correction: scipy.stats.wilcoxon's defaults for large samples, no continuity correction);
- the paired t-test (two-sided, n - 1 degrees of freedom).

Plain Python and numpy (pandas' own dependency): reports import neither torch nor scipy (the tests check against
scipy when it is installed).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def ndcg_at(ranks, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of one target: 1 / log2(rank + 1) within the top k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)


# ------------------------------------------------------------------ the tests


def bootstrap_interval(
    differences, *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean difference over users resampled with replacement."""
    differences = np.asarray(differences, dtype=np.float64)
    n = len(differences)
    generator = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, 500):  # 500 resamples at a time: (500, n) indices stay small
        count = min(500, resamples - start)
        picks = generator.integers(0, n, size=(count, n))  # (count, n)
        means.append(differences[picks].mean(axis=1))
    means = np.sort(np.concatenate(means))
    tail = (1 - level) / 2
    low = float(means[int(math.floor(tail * (resamples - 1)))])
    high = float(means[int(math.ceil((1 - tail) * (resamples - 1)))])
    return low, high


def _normal_two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def wilcoxon_p(differences) -> float:
    """Two-sided p of the Wilcoxon signed-rank test, normal approximation with tie correction."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[d != 0]  # zero differences carry no sign (most users: both runs miss the top 10)
    n = len(d)
    if n == 0:
        return 1.0
    magnitudes = np.abs(d)
    order = np.argsort(magnitudes, kind="stable")
    sorted_magnitudes = magnitudes[order]
    ranks = np.empty(n, dtype=np.float64)
    tie_term = 0.0
    start = 0
    while start < n:  # average ranks over runs of equal magnitudes
        end = start
        while end + 1 < n and sorted_magnitudes[end + 1] == sorted_magnitudes[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        size = end - start + 1
        tie_term += size**3 - size
        start = end + 1
    positive = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4
    variance = n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48
    if variance <= 0:
        return 1.0
    return _normal_two_sided((positive - mean) / math.sqrt(variance))


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), the symmetric form where it converges fast."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def paired_t_p(differences) -> float:
    """Two-sided p of the paired t-test (Student's t with n - 1 degrees of freedom)."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n < 2:
        return 1.0
    spread = float(d.std(ddof=1))
    if spread == 0:
        return 1.0 if float(d.mean()) == 0 else 0.0
    t = float(d.mean()) / (spread / math.sqrt(n))
    df = n - 1
    return _regularized_beta(df / (df + t * t), df / 2, 0.5)  # P(|T| >= |t|)


# ------------------------------------------------------------------ two runs


@dataclass
class PairedComparison:
    users: int  # test users present in both runs
    seeds: int  # pairs of runs (one per seed) averaged per user
    protocol: str  # "seen_excluded" or "all"
    mean_a: float  # NDCG@10 of run a (the reference, e.g. sdpa)
    mean_b: float
    difference: float  # b - a
    ci_low: float
    ci_high: float
    wilcoxon_p: float
    t_p: float

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes 0 and Wilcoxon agrees at 5 %."""
        return (self.ci_low > 0 or self.ci_high < 0) and self.wilcoxon_p < 0.05

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}

    def brief(self) -> str:
        """'-0.0096 [-0.0131, -0.0062], p=3e-08 *' (a star: the interval excludes 0 and p < 0.05, for these runs)."""
        star = " *" if self.significant else ""
        return f"{self.difference:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], p={self.wilcoxon_p:.1g}{star}"


@functools.lru_cache(maxsize=256)
def _read_ranks(path: str) -> dict:
    return _load_ranks(Path(path))


def read_ranks(path: Path) -> dict:
    """A finished run's test ranks (read once per report: the paired tests and the strata of every protocol share
    it; callers must not modify it)."""
    return _read_ranks(str(path))


def _load_ranks(path: Path) -> dict:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, EOFError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a test-ranks file (gzip JSON with users and ranks): {err}") from None
    if not {"users", "ranks"} <= payload.keys():
        raise ValueError(f"{path}: a test-ranks file needs 'users' and 'ranks'; has {sorted(payload)}")
    return payload


def _gains(payload: dict, protocol: str, k: int) -> dict[str, float]:
    if protocol not in payload["ranks"]:
        raise ValueError(f"no {protocol!r} ranks in this run; it has {sorted(payload['ranks'])}")
    gains = ndcg_at(payload["ranks"][protocol], k).tolist()
    return dict(zip(payload["users"], gains, strict=True))


def compare(a: dict, b: dict, *, protocol: str = "seen_excluded", k: int = 10, seed: int = 0) -> PairedComparison:
    """Run b against run a (rank payloads as `read_ranks` returns them), paired over their common users."""
    return compare_seeds([(a, b)], protocol=protocol, k=k, seed=seed)


def compare_seeds(
    pairs: list[tuple[dict, dict]], *, protocol: str = "seen_excluded", k: int = 10, seed: int = 0
) -> PairedComparison:
    """Runs b against runs a, one pair per seed: each user's NDCG@k difference is averaged over the seeds (seed
    noise averages out per user), then tested over the users every pair has."""
    if not pairs:
        raise ValueError("nothing to compare: no pair of runs")
    sums_a: dict[str, float] = {}
    sums_b: dict[str, float] = {}
    common: set[str] | None = None
    for a, b in pairs:
        if a.get("file_sha256") and b.get("file_sha256") and a["file_sha256"] != b["file_sha256"]:
            raise ValueError("the two runs were tested on different data files: their users do not pair")
        gains_a, gains_b = _gains(a, protocol, k), _gains(b, protocol, k)
        shared = gains_a.keys() & gains_b.keys()
        common = shared if common is None else common & shared
        for user in shared:
            sums_a[user] = sums_a.get(user, 0.0) + gains_a[user]
            sums_b[user] = sums_b.get(user, 0.0) + gains_b[user]
    if not common:
        raise ValueError("the runs share no test user")
    users = sorted(common)
    gain_a = np.array([sums_a[u] for u in users]) / len(pairs)
    gain_b = np.array([sums_b[u] for u in users]) / len(pairs)
    differences = gain_b - gain_a
    low, high = bootstrap_interval(differences, seed=seed)
    return PairedComparison(
        users=len(users),
        seeds=len(pairs),
        protocol=protocol,
        mean_a=float(gain_a.mean()),
        mean_b=float(gain_b.mean()),
        difference=float(differences.mean()),
        ci_low=low,
        ci_high=high,
        wilcoxon_p=wilcoxon_p(differences),
        t_p=paired_t_p(differences),
    )


# ------------------------------------------------------------------ mechanisms over seeds
#
# A paired test over users compares two trained runs; the training seed moves a run's mean by as much as the gaps
# compared here (the same mechanism against itself, seed against seed, reads "significant" over 6,040 users). A
# verdict about mechanisms resamples both: seeds within each mechanism, then users (Bouthillier et al., MLSys 2021;
# Agarwal et al., NeurIPS 2021, whose stratified bootstrap and probability of improvement rliable implements).

LEVEL_MARGIN = 0.005  # NDCG@10: a gap whose whole 95 % interval lies within +-0.005 (~3 % of 0.18) is "level"
MIN_SEEDS = 3  # per side, for any verdict other than "one run" / "undecided"


def seed_matrix(runs: list[dict], users: list[str], protocol: str, k: int = 10) -> np.ndarray:
    """(seeds, users) NDCG@k of each run (rank payloads) on the given users, in that order."""
    rows = []
    for run in runs:
        gains = _gains(run, protocol, k)
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
    return _regularized_beta(df / (df + t * t), df / 2, 0.5)


def permutation_p(means_a, means_b) -> float:
    """Exact two-sided permutation p over per-seed means: the share of all relabellings of the seeds whose |gap|
    is at least the observed one. Its floor is 2 / C(na + nb, na): 0.1 with three seeds a side, never below 0.05."""
    import itertools

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
        - the interval inside +-LEVEL_MARGIN: "level";
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
        if -LEVEL_MARGIN <= self.ci_low and self.ci_high <= LEVEL_MARGIN:
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
