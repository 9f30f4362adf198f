"""Paired significance (bench.reports.paired): checked against hand-computed cases and, when installed, scipy."""

import gzip
import json
import math

import numpy as np
import pytest

from bench.reports.paired import (
    bootstrap_interval,
    compare,
    ndcg_at,
    paired_t_p,
    read_ranks,
    regularized_beta,
    wilcoxon_p,
)


def test_ndcg_of_ranks():
    gains = ndcg_at([1, 3, 10, 11])
    assert gains.tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0.0])


def test_wilcoxon_by_hand():
    # differences 1, 2, -3, 4, 0: the zero is dropped; ranks 1..4, W+ = 1 + 2 + 4 = 7, n = 4
    # mean 5, variance 4 * 5 * 9 / 24 = 7.5, z = 2 / sqrt(7.5)
    p = wilcoxon_p([1.0, 2.0, -3.0, 4.0, 0.0])
    assert p == pytest.approx(math.erfc(2 / math.sqrt(7.5) / math.sqrt(2)))


def test_wilcoxon_ties_by_hand():
    # |d| = 1, 1, 2: ranks 1.5, 1.5, 3; W+ = 1.5 + 3 = 4.5; tie term (2^3 - 2) / 48 = 0.125
    p = wilcoxon_p([1.0, -1.0, 2.0])
    variance = 3 * 4 * 7 / 24 - 0.125
    assert p == pytest.approx(math.erfc(abs(4.5 - 3) / math.sqrt(variance) / math.sqrt(2)))


def test_paired_t_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3) with 2 degrees of freedom, where P(|T| >= t) = 1 - t / sqrt(t^2 + 2)
    t = 2 * math.sqrt(3)
    assert paired_t_p([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)


def test_incomplete_beta_identities():
    assert regularized_beta(0.3, 1.0, 1.0) == pytest.approx(0.3)  # the uniform distribution
    assert regularized_beta(0.3, 2.0, 1.0) == pytest.approx(0.09)  # x^a for b = 1
    assert regularized_beta(0.4, 3.0, 5.0) + regularized_beta(0.6, 5.0, 3.0) == pytest.approx(1.0)


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    d = np.random.default_rng(0).standard_normal(400) * 0.3 + 0.05
    d[::7] = 0.0  # zeros, as most users' NDCG differences are
    d[1::9] = 0.25  # and ties
    assert paired_t_p(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-6)
    reference = stats.wilcoxon(d, zero_method="wilcox", correction=False, method="approx").pvalue
    assert wilcoxon_p(d) == pytest.approx(reference, rel=1e-6)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    generator = np.random.default_rng(1)
    small = generator.standard_normal(100) + 0.5
    large = generator.standard_normal(10_000) + 0.5
    low_s, high_s = bootstrap_interval(small, resamples=2000)
    low_l, high_l = bootstrap_interval(large, resamples=2000)
    assert low_s < small.mean() < high_s and low_l < large.mean() < high_l
    assert (high_l - low_l) < (high_s - low_s) / 5  # about sqrt(100) narrower
    # the normal-theory half-width 1.96 sd / sqrt(n), within bootstrap noise
    assert (high_l - low_l) / 2 == pytest.approx(1.96 * large.std() / 100, rel=0.1)


def _ranks_file(path, users, ranks, sha="abc"):
    with gzip.open(path, "wt") as handle:
        json.dump({"users": users, "ranks": {"seen_excluded": ranks}, "file_sha256": sha}, handle)
    return path


def test_compare_pairs_users_by_id(tmp_path):
    users = [str(u) for u in range(300)]
    a = read_ranks(_ranks_file(tmp_path / "a.json.gz", users, [20] * 300))  # every target missed
    # b hits rank 1 for every user, listed in another order: pairing is by user id, not by position
    b = read_ranks(_ranks_file(tmp_path / "b.json.gz", users[::-1], [1] * 300))
    result = compare(a, b)
    assert result.users == 300 and result.difference == pytest.approx(1.0)
    assert result.significant and result.wilcoxon_p < 1e-10 and result.ci_low == pytest.approx(1.0)
    same = compare(a, a)
    assert same.difference == 0 and not same.significant and same.wilcoxon_p == 1.0


def test_compare_refuses_runs_on_different_files(tmp_path):
    a = read_ranks(_ranks_file(tmp_path / "a.json.gz", ["1"], [1], sha="one"))
    b = read_ranks(_ranks_file(tmp_path / "b.json.gz", ["1"], [1], sha="two"))
    with pytest.raises(ValueError, match="different data files"):
        compare(a, b)


def test_read_ranks_names_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_text("not gzip")
    with pytest.raises(ValueError, match="bad.json.gz"):
        read_ranks(bad)


def test_window_strata_pairs_each_window_with_the_reference_one_per_history_length(tmp_path):
    import pandas as pd

    from bench.reports.accuracy_plots import by_history
    from bench.reports.per_user import history_length_sections, strata_table, window_strata
    from bench.reports.style import colors

    users = [str(u) for u in range(200)]
    lengths = [50] * 100 + [500] * 100  # 100 short histories, then 100 beyond N = 200

    def run(name, mechanism, n, ranks):
        path = tmp_path / f"{name}.json.gz"
        with gzip.open(path, "wt") as handle:
            payload = {"users": users, "ranks": {"seen_excluded": ranks}, "history_lengths": lengths}
            json.dump({**payload, "file_sha256": "abc"}, handle)
        return {"mechanism": mechanism, "seq_len": n, "batch_size": 128, "seed": 2000, "partial": False,
                "ranks_path": str(path)}  # fmt: skip

    runs = pd.DataFrame(
        [
            run("sdpa200", "sdpa", 200, [20] * 200),
            run("sdpa800", "sdpa", 800, [20] * 100 + [1] * 100),  # the longer window helps only the long histories
            run("linrec800", "linrec", 800, [1] * 200),  # no N = 200 run to pair with: no row
        ]
    )
    table = window_strata(runs, "seen_excluded")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["mechanism"], row["N"], row["against N"], row["seed pairs"]) == ("sdpa", 800, 200, 1)
    assert row["Δ NDCG@10 >= 400"].startswith("+1.0000") and row["Δ NDCG@10 >= 400"].endswith("*")
    assert row["Δ NDCG@10 < 100"].startswith("+0.0000") and not row["Δ NDCG@10 < 100"].endswith("*")
    assert row["Δ NDCG@10 100-399"] == ""  # nobody in that range
    assert row["every user"].startswith("+0.5000")
    text = "\n".join(history_length_sections(runs, "seen_excluded"))
    assert "## What the window changes, by history length" in text and "| sdpa | 800 | 200 |" in text
    # accuracy per range, as numbers for the plot and to four decimals in the table (rank 20 is outside the top 10)
    strata = strata_table(runs, "seen_excluded").set_index(["mechanism", "N"])
    assert strata.loc[("sdpa", 800), "NDCG@10 >= 400"] == 1.0 and strata.loc[("sdpa", 800), "NDCG@10 < 100"] == 0.0
    assert strata.loc[("linrec", 800), "users >= 400"] == 100 and np.isnan(strata.loc[("sdpa", 200), "NDCG@10 100-399"])
    assert "| sdpa | 800 | 128 | 1 | 0.0000 | 100 | nan | 0 | 1.0000 | 100 |" in text
    plot = tmp_path / "by_history.png"
    by_history({"seen_excluded": strata.reset_index()}, "test", plot, colors(["sdpa", "linrec"]))
    assert plot.stat().st_size > 10_000


def test_other_mechanisms_are_also_paired_with_linrec_and_the_lines_name_it(tmp_path):
    import pandas as pd

    from bench.reports.per_user import paired_lines, paired_to_baseline

    users = [str(u) for u in range(100)]

    def run(mechanism, ranks):
        path = tmp_path / f"{mechanism}.json.gz"
        with gzip.open(path, "wt") as handle:
            json.dump({"users": users, "ranks": {"seen_excluded": ranks}, "file_sha256": "abc"}, handle)
        return {"mechanism": mechanism, "seq_len": 200, "batch_size": 128, "seed": 2000, "partial": False,
                "ranks_path": str(path)}  # fmt: skip

    runs = pd.DataFrame([run("sdpa", [1] * 100), run("linrec", [20] * 100), run("mamba", [1] * 100)])
    tests = paired_to_baseline(runs[runs["mechanism"] != "sdpa"], "seen_excluded", baseline="linrec")
    assert set(tests) == {("mamba", 200, 128)}  # LinRec is not paired with itself
    assert tests[("mamba", 200, 128)].difference == pytest.approx(1.0) and tests[("mamba", 200, 128)].significant
    (line,) = paired_lines(tests, baseline="linrec")
    assert line.startswith("- N=200, batch 128: mamba +1.0000 NDCG@10 vs linrec over 100 users")
