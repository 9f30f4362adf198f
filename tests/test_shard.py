"""Sweeps across machines: shards are disjoint and complete, merge gives one row per cell."""

import json

import pytest

from bench.timing.grid import preset_cells
from bench.timing.shard import merge, parse_shard, shard_cells, shard_path
from bench.timing.sweep import comparison_group


@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("shard_by", ["series", "family"])
def test_shards_are_disjoint_complete_and_keep_curves_on_one_host(count, shard_by):
    cells = preset_cells("paper", "cpu")
    shards = [shard_cells(cells, i, count, shard_by) for i in range(count)]
    keys = [c.key() for shard in shards for c in shard]
    assert sorted(keys) == sorted(c.key() for c in cells) and len(keys) == len(set(keys))

    def series(c):  # a curve: every field but N
        return (c.label, c.causal, c.mode, c.level, c.batch_size, c.padding, c.attention_dropout)

    for shard in shards:  # every N of a series lands on the shard that has any of it
        mine = {series(c) for c in shard}
        assert all(series(c) not in mine for other in shards if other is not shard for c in other)
    if shard_by == "family":  # every comparison group on one shard
        owner = {}
        for index, shard in enumerate(shards):
            for c in shard:
                assert owner.setdefault(comparison_group(c), index) == index
    assert shard_cells(cells, 0, count, shard_by) == shards[0]  # deterministic


def test_shard_arguments_are_checked():
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "x", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    from pathlib import Path

    assert shard_path(Path("r/paper.jsonl"), 1, 4) == Path("r/paper.shard-1-of-4.jsonl")


def _row(attention, n, timestamp, commit="a", host="h1", time_ms=1.0):
    return {
        "level": "attention",
        "attention": attention,
        "options": {},
        "causal": True,
        "seq_len": n,
        "batch_size": 1,
        "dim": 8,
        "heads": 2,
        "mode": "fwd",
        "dtype": "fp32",
        "device_type": "cpu",
        "device": "cpu",
        "status": "ok",
        "time_ms": time_ms,
        "timestamp": timestamp,
        "commit": commit,
        "torch": "2",
        "host": host,
    }


def test_merge_keeps_the_latest_row_per_cell_and_warns_on_mixed_commits(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in [_row("sdpa", 16, "1"), _row("linrec", 16, "1", time_ms=5.0)]))
    b.write_text(
        "".join(json.dumps(r) + "\n" for r in [_row("linrec", 16, "2", commit="b", time_ms=3.0), _row("sdpa", 32, "2")])
    )
    warnings = []
    assert merge(tmp_path / "m.jsonl", [a, b], warn=warnings.append) == 3
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert {(r["attention"], r["seq_len"]): r["time_ms"] for r in rows} == {
        ("sdpa", 16): 1.0,
        ("linrec", 16): 3.0,
        ("sdpa", 32): 1.0,
    }
    assert any("mixes commits" in w for w in warnings)


def test_two_shards_from_the_command_line_merge_into_the_unsharded_grid(tmp_path):
    from bench.cli import main
    from bench.results import load_rows

    grid = [
        "--attention",
        "sdpa,linrec,linear",
        "--seq-len",
        "8,16",
        "--batch-size",
        "1",
        "--dim",
        "8",
        "--heads",
        "2",
        "--mode",
        "fwd",
        "--causal",
        "true",
        "--max-cell-s",
        "5",
        "--quiet-wait-s",
        "0",
        "--no-progress",
    ]
    out = tmp_path / "grid.jsonl"
    for index in range(2):
        main(["sweep", *grid, "--shard", f"{index}/2", "--out", str(out)])
    shards = sorted(tmp_path.glob("grid.shard-*-of-2.jsonl"))
    assert len(shards) == 2 and all(load_rows(s) for s in shards)
    main(["merge", str(out), *map(str, shards)])
    rows = load_rows(out)
    assert sorted((r["attention"], r["seq_len"]) for r in rows) == sorted(
        (a, n) for a in ("sdpa", "linrec", "linear") for n in (8, 16)
    )
    main(["report", str(out), "--out", str(tmp_path / "report")])
