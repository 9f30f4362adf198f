"""The claims ledger: every claim of LinRec's abstract gets a verdict from the committed rows, names the rows behind
it, and reads them right (hand cases for the speed and complexity rules)."""

import json
from pathlib import Path

import pytest

from bench.reports import claims
from bench.reports.claims import Claim

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
