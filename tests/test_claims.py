"""The claims ledger: every claim of LinRec's abstract gets a verdict from the committed rows, names the rows behind
it, and reads them right (hand cases for the speed and complexity rules)."""

import json
from pathlib import Path

import pytest

from bench.reports import claims
from bench.reports.claims import Claim
from bench.training.presets import ROUND2_RECIPE

REPO = Path(__file__).resolve().parents[1]
VERDICTS = ("holds", "holds in part", "does not hold here", "one run", "undecided", "not measured")


@pytest.fixture(scope="module")
def ledger() -> list[Claim]:
    return claims.claims(REPO / "results")


def test_every_claim_of_the_abstract_has_a_verdict_and_its_rows(ledger):
    assert len(ledger) == 7
    for claim in ledger:
        assert claim.verdict.startswith(VERDICTS), claim
        assert all((REPO / "results" / row).exists() for row in claim.rows), claim.rows
        assert claim.verdict == "not measured" or claim.rows


def test_the_committed_ledger_page_is_what_the_rows_give(ledger):
    page = (REPO / "results" / "reports" / "claims" / "claims.md").read_text(encoding="utf-8")
    for claim in ledger:
        assert f"| {claim.claim} | **{claim.verdict}** |" in page


def _timing_rows(path: Path, times: dict, memory: dict | None = None) -> None:
    rows = []
    for (name, n), ms in times.items():
        rows.append(
            {"level": "attention", "attention": name, "options": {}, "causal": True, "seq_len": n, "batch_size": 1,
             "dim": 64, "heads": 2, "mode": "fwd_bwd", "dtype": "fp32", "device": "CPU test", "status": "ok",
             "time_ms": ms, "peak_mem_bytes": (memory or {}).get((name, n), 1000), "timestamp": f"t{n}"}
        )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_complexity_reads_the_growth_between_the_two_longest_lengths(tmp_path):
    times = {("linrec", 1024): 10.0, ("linrec", 4096): 41.0, ("sdpa", 1024): 10.0, ("sdpa", 4096): 160.0}
    _timing_rows(tmp_path / claims.MIXERS, times)
    claim = claims.complexity_claim(tmp_path)
    assert claim.verdict == "holds" and "N^1.02" in claim.measurement and "sdpa: N^2.00" in claim.measurement
    _timing_rows(tmp_path / claims.MIXERS, {("linrec", 1024): 10.0, ("linrec", 4096): 160.0})
    assert claims.complexity_claim(tmp_path).verdict == "does not hold here"


def test_speed_holds_only_in_part_where_linrec_is_slower_somewhere(tmp_path):
    times = {("linrec", 50): 2.0, ("sdpa", 50): 1.0, ("linrec", 200): 2.0, ("sdpa", 200): 4.0}
    _timing_rows(tmp_path / claims.SHORT_N[1], times)
    claim = claims.time_claim(tmp_path)
    assert claim.verdict == "holds in part (0.5–2.0×)" and claim.rows == [claims.SHORT_N[1]]


def _longrange_row(task, mechanism, distance, seed, lr, test, valid):
    return {
        "level": "train", "status": "ok", "dataset": f"longrange-{task}-k{distance}", "attention": mechanism,
        "dataset_stats": {"items": 2048, "levels": {"ceiling_ndcg@10": 1.0, "chance_ndcg@10": 0.01}},
        "options": {}, "seed": seed, "settings": {"lr": lr, "epochs": 48, **ROUND2_RECIPE}, "config": {"epochs": 48},
        "test": {"all": {"ndcg@10": test, "recall@10": test}}, "valid": {"all": {"ndcg@10": valid}},
        "best_epoch": 10, "epochs_run": 48, "history": [{}, {}], "seconds_per_epoch": 1.0, "device": "CPU test",
        "commit": "abc", "timestamp": f"2026-12-03T00:{distance % 60:02d}:{seed % 60:02d}", "seq_len": distance + 32,
        "batch_size": 32, "model": "sasrec", "objective": "all_positions", "recipe": "longrange",
    }  # fmt: skip


def _round2_rows(path: Path, readings: dict) -> None:
    """readings: (task, mechanism) -> test NDCG@10 at k = 64, 256, 1024 (the same for each of three seeds but for a
    small spread), after a grid that picks lr 1e-3 (its cell at 1e-3 is seed 2000's at k = 64)."""
    rows = []
    for (task, mechanism), tests in readings.items():
        rows += [_longrange_row(task, mechanism, 64, 2000, lr, 0.5, v) for lr, v in ((3e-4, 0.2), (3e-3, 0.5))]
        for k, test in zip((64, 256, 1024), tests, strict=True):
            rows += [
                _longrange_row(task, mechanism, k, s, 1e-3, test + 0.01 * (s - 2001), 0.9) for s in (2000, 2001, 2002)
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_long_histories_are_judged_from_round_2_s_seeds_once_both_have_them(tmp_path):
    path = tmp_path / "sweeps" / "longrange-round2-cpu.jsonl"
    far, near = (0.95, 0.9, 0.9), (0.95, 0.9, 0.02)  # reads 1,024 / only 256
    _round2_rows(
        path, {("mqar", "linrec"): far, ("mqar", "sdpa"): far, ("taste", "linrec"): far, ("taste", "sdpa"): far}
    )
    claim = claims.long_history_claim(tmp_path)
    assert claim.verdict == "holds" and "mqar linrec >= 1024 [>= 1024; >= 1024]" in claim.measurement
    _round2_rows(
        path, {("mqar", "linrec"): near, ("mqar", "sdpa"): far, ("taste", "linrec"): far, ("taste", "sdpa"): far}
    )
    assert claims.long_history_claim(tmp_path).verdict == "holds in part"
    _round2_rows(
        path, {("mqar", "linrec"): near, ("mqar", "sdpa"): far, ("taste", "linrec"): near, ("taste", "sdpa"): far}
    )
    claim = claims.long_history_claim(tmp_path)
    assert claim.verdict == "does not hold here" and "taste linrec 256 [256; 256]" in claim.measurement
    _round2_rows(path, {("mqar", "linrec"): far, ("mqar", "sdpa"): far, ("taste", "linrec"): far})  # sdpa lacks taste
    assert claims.long_history_claim(tmp_path).verdict == "not measured"  # round 2 incomplete, no round-1 cells
