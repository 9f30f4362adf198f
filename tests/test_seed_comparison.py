"""Seed-aware comparison of two mechanisms (bench/reports/seeds.py): the hierarchical bootstrap over seeds then
users, the seed-level tests, the probability of improvement, and the one verdict rule."""

import numpy as np
import pytest

from bench.reports.paired import bootstrap_interval
from bench.reports.seeds import (
    LEVEL_MARGIN,
    SeedComparison,
    compare_mechanisms,
    hierarchical_interval,
    permutation_p,
    probability_of_improvement,
    welch_p,
)


def _runs(means, users=400, seed=0):
    """Rank payloads whose per-user NDCG@10 average near `means` (one run per mean)."""
    generator = np.random.default_rng(seed)
    base = generator.integers(1, 40, size=users)
    runs = []
    for shift in means:
        ranks = np.clip(base + generator.integers(-3, 4, size=users) - int(round(shift)), 1, None)
        runs.append({"users": [f"u{i}" for i in range(users)], "ranks": {"seen_excluded": ranks.tolist()}})
    return runs


def test_with_one_seed_a_side_it_is_the_paired_bootstrap_draw_for_draw():
    generator = np.random.default_rng(3)
    gains_a, gains_b = generator.random((1, 300)), generator.random((1, 300))
    want = bootstrap_interval((gains_b - gains_a)[0], seed=5)
    got = hierarchical_interval(gains_a, gains_b, seed=5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_the_interval_widens_when_seeds_spread():
    generator = np.random.default_rng(4)
    users = generator.random(500)
    tight_a = np.stack([users] * 3)
    tight_b = np.stack([users + 0.01] * 3)
    spread_b = np.stack([users + 0.01 + offset for offset in (-0.03, 0.0, 0.03)])
    tight = hierarchical_interval(tight_a, tight_b)
    spread = hierarchical_interval(tight_a, spread_b)
    assert tight[0] > 0 and tight[1] - tight[0] < 1e-9  # the same shift on every user: no user noise either
    assert spread[0] < 0 < spread[1] and spread[1] - spread[0] > 0.03


def test_welch_matches_scipy_and_a_hand_case():
    a, b = [0.170, 0.164, 0.176, 0.171], [0.176, 0.180, 0.183]
    stats = pytest.importorskip("scipy.stats")
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-9)
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0 and welch_p([1.0], [2.0, 3.0]) == 1.0


def test_the_exact_permutation_p_and_its_floor_with_three_seeds():
    assert permutation_p([0, 1, 2], [3, 4, 5]) == pytest.approx(2 / 20)  # the floor: never below 0.05
    assert permutation_p([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]) == pytest.approx(2 / 252)
    assert permutation_p([1, 2], [1, 2]) == 1.0
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.17, 0.16, 0.18, 0.175], [0.18, 0.19, 0.185]

    def gap(x, y):  # two-sided as |gap| >= |observed gap|
        return abs(np.mean(x) - np.mean(y))

    want = stats.permutation_test(
        (b, a), gap, permutation_type="independent", n_resamples=np.inf, alternative="greater", vectorized=False
    ).pvalue
    assert permutation_p(a, b) == pytest.approx(want)


def test_probability_of_improvement_counts_ties_half():
    assert probability_of_improvement([1, 2], [2, 3]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def _comparison(low, high, seeds_a=3, seeds_b=3, mean_a=0.1):
    fields = dict(protocol="p", users=1, mean_a=mean_a, mean_b=0, difference=(low + high) / 2)
    fields.update(welch_p=1, permutation_p=1)
    return SeedComparison(
        seeds_a=seeds_a,
        seeds_b=seeds_b,
        ci_low=low,
        ci_high=high,
        improvement_seeds=0.5,
        improvement_users=0.5,
        **fields,
    )


def test_the_verdict_rule():
    assert _comparison(0.001, 0.02).verdict == "ahead"
    assert _comparison(-0.02, -0.001).verdict == "behind"
    assert _comparison(-0.1 * LEVEL_MARGIN / 2, 0.1 * LEVEL_MARGIN / 2).verdict == "level"
    # the margin is relative to the reference's mean: the same interval is level at 0.18, undecided at 0.05
    assert _comparison(-0.004, 0.004, mean_a=0.18).verdict == "level"
    assert _comparison(-0.004, 0.004, mean_a=0.05).verdict == "undecided: 3 + 3 seeds"
    assert _comparison(-0.02, 0.01).verdict == "undecided: 3 + 3 seeds"
    assert _comparison(0.01, 0.02, 1, 1).verdict == "one run"  # whatever its p
    assert _comparison(0.01, 0.02, 5, 1).verdict == "undecided: 5 + 1 seeds"


def test_compare_mechanisms_end_to_end():
    better = compare_mechanisms(_runs([0, 0, 0]), _runs([6, 6, 6]))
    assert better.difference > 0 and better.verdict == "ahead" and better.seeds_a == better.seeds_b == 3
    assert better.improvement_seeds == 1.0 and better.improvement_users > 0.5
    with pytest.raises(ValueError, match="at least one run"):
        compare_mechanisms([], _runs([0]))
