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


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), the symmetric form where it converges fast."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - regularized_beta(1 - x, b, a)
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
    return regularized_beta(df / (df + t * t), df / 2, 0.5)  # P(|T| >= |t|)


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


def user_gains(payload: dict, protocol: str, k: int) -> dict[str, float]:
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
        gains_a, gains_b = user_gains(a, protocol, k), user_gains(b, protocol, k)
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
