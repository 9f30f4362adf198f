from bench.reports.peers import peers_table
from bench.timing.peers import measure_limits, run_peers


def test_peer_comparison_writes_ratios(tmp_path):
    rows = run_peers(
        [32],
        batch=2,
        dim=16,
        heads=2,
        modes=("fwd_bwd",),
        rounds=1,
        linformer_k=8,
        nb_features=8,
        out=tmp_path / "p.jsonl",
    )
    ours = {(r["level"], r["implementation"], r["causal"]): r for r in rows if "time_ms" in r}
    assert ours[("kernel", "linrec", True)]["ratio_vs_sdpa"] > 0
    assert ours[("kernel", "sdpa", False)]["ratio_vs_sdpa"] == 1.0
    if ("layer", "performer-pytorch", True) in ours:  # optional extra installed
        assert ours[("layer", "performer", True)]["peer"] == "performer-pytorch"
    assert "kernel linrec causal" in peers_table(rows)
    assert (tmp_path / "p.jsonl").exists()


def test_limit_figure_has_fractions():
    limits = measure_limits(seq_len=256, batch=1, heads=2, head_dim=8, rounds=1)
    assert limits["copy_GBps"] > 0 and limits["matmul_GFLOPs"] > 0
    assert 0 < limits["linrec-bidir-fwd_fraction_of_copy"]


def test_only_keeps_the_named_jobs_and_sdpa(tmp_path):
    rows = run_peers(
        [32],
        batch=2,
        dim=16,
        heads=2,
        modes=("infer",),
        rounds=1,
        linformer_k=8,
        nb_features=8,
        out=tmp_path / "p.jsonl",
        only=("linformer",),
    )
    names = {r["implementation"] for r in rows if "time_ms" in r}
    assert "linformer" in names and "sdpa" in names
    assert not names & {"linrec", "performer"}
