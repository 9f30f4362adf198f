import json

import psutil
import pytest

from bench.cli import build_parser, resolve_attention
from bench.reports import report
from bench.reports.rows import load_frame
from bench.reports.timing import crossover
from bench.results import load_rows
from bench.timing.cells import Cell
from bench.timing.grid import Grid, preset_cells
from bench.timing.sweep import run_sweep

FAST = {"min_time_s": 0.0, "min_repeats": 1, "max_repeats": 2}
REQUIRED = [
    "level",
    "attention",
    "options",
    "causal",
    "seq_len",
    "batch_size",
    "dim",
    "heads",
    "mode",
    "dtype",
    "device",
    "status",
    "message",
    "time_ms",
    "time_ms_p25",
    "time_ms_p75",
    "peak_mem_bytes",
    "tokens_per_s",
    "commit",
    "torch",
    "threads",
    "host",
    "timestamp",
    "seed",
    "config",
]


def _grid(**kw):
    return Grid(
        [("sdpa", {}), ("linrec", {}), ("linformer", {"k": 8})], seq_len=[16, 32], batch_size=[2], dim=16, heads=2, **kw
    )


def test_sweep_writes_complete_rows_and_resumes(tmp_path):
    out = tmp_path / "sweep.jsonl"
    cells = _grid().cells("cpu")
    first = run_sweep(cells[:3], out, config={"test": 1}, timing=FAST, progress=False)
    assert len(first) == 3
    rows = run_sweep(cells, out, config={"test": 1}, timing=FAST, progress=False)
    assert len(rows) == len(cells) - 3  # the first three were not measured again
    stored = load_rows(out)
    assert len(stored) == len(cells)
    for row in stored:
        assert all(field in row for field in REQUIRED), set(REQUIRED) - set(row)
    statuses = {(r["attention"], r["causal"]): r["status"] for r in stored}
    assert statuses[("linformer", True)] == "unsupported"
    assert statuses[("linrec", True)] == "ok"
    assert run_sweep(cells, out, config={}, timing=FAST, progress=False) == []


def test_a_torn_last_line_is_rerun(tmp_path):
    out = tmp_path / "sweep.jsonl"
    cells = _grid(causal=[True]).cells("cpu")[:2]
    run_sweep(cells, out, config={}, timing=FAST, progress=False)
    text = out.read_text().splitlines()
    out.write_text(text[0] + "\n" + text[1][: len(text[1]) // 2])  # killed mid-write
    assert len(load_rows(out)) == 1
    assert len(run_sweep(cells, out, config={}, timing=FAST, progress=False)) == 1


def test_a_malformed_middle_line_is_an_error(tmp_path):
    out = tmp_path / "bad.jsonl"
    out.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_rows(out)


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "oom.jsonl"
    # the fwd pass holds scores and weights, 2 x 16 x N^2 floats: 3 and 4 GiB pass the estimate against the machine's
    # memory (they could fit) but not the worker's limit of 2 GiB of address space (torch itself maps ~0.7 GiB), so
    # the test holds ~1.5 GiB at most instead of the half of RAM a limit at a share of the machine would let it fill
    ram = psutil.virtual_memory().total
    n_huge, n_larger = (int((gib * 2**30 / (2 * 16 * 4)) ** 0.5) for gib in (3, 4))
    huge = Cell("kernel", "softmax", False, n_huge, 4, 64, 4, "fwd", "fp32", "cpu")
    larger = Cell("kernel", "softmax", False, n_larger, 4, 64, 4, "fwd", "fp32", "cpu")
    fine = Cell("kernel", "sdpa", False, 16, 1, 16, 2, "fwd", "fp32", "cpu")
    rows = run_sweep([huge, larger, fine], out, config={}, timing=FAST, progress=False, memory_fraction=2 * 2**30 / ram)
    by_len = {(r["attention"], r["seq_len"]): r for r in rows}
    assert by_len[("softmax", n_huge)]["status"] == "oom"
    assert by_len[("softmax", n_larger)]["status"] == "oom" and "not run" in by_len[("softmax", n_larger)]["message"]
    assert by_len[("sdpa", 16)]["status"] == "ok"


def test_presets_are_well_formed():
    quick = preset_cells("quick", "cpu")
    assert 20 <= len(quick) <= 100
    paper = preset_cells("paper", "cpu")
    assert min(c.seq_len for c in paper) <= 50 and max(c.seq_len for c in paper) >= 8192
    with pytest.raises(ValueError, match="--preset"):
        preset_cells("nope", "cpu")


def test_cli_parses_axes_and_attention_options():
    args = build_parser().parse_args(
        [
            "sweep",
            "--attention",
            "sdpa,performer:nb_features=32:redraw_interval=0",
            "--seq-len",
            "64,256",
            "--causal",
            "false,true",
        ]
    )
    assert args.attention == ["sdpa", "performer:nb_features=32:redraw_interval=0"]  # resolved after plugins load
    assert [resolve_attention(spec) for spec in args.attention] == [
        ("sdpa", {}),
        ("performer", {"nb_features": 32, "redraw_interval": 0}),
    ]
    assert args.seq_len == [64, 256] and args.causal == [False, True]
    assert resolve_attention("linrec:variant=official") == ("linrec", {"variant": "official"})


def test_crossover_is_interpolated_in_log_space():
    assert crossover([256, 1024], [0.5, 2.0]) == pytest.approx(512)
    assert crossover([256, 1024], [0.5, 0.8]) is None
    assert crossover([256, 1024], [1.5, 2.0]) == 256


def test_report_regenerates_plots_and_tables_from_stored_rows(tmp_path):
    out = tmp_path / "sweep.jsonl"
    run_sweep(_grid().cells("cpu"), out, config={}, timing=FAST, progress=False)
    written = report([out], tmp_path / "report")
    names = {p.name for p in written}
    assert any(n.endswith("_time.png") for n in names) and any(n.endswith("_speedup.png") for n in names)
    table = next(p for p in written if p.name.endswith("_time.md")).read_text()
    assert "sdpa" in table and "(1.00x)" in table and "unsupported" in table
    assert any((tmp_path / "report").glob("*_time.tex"))
    # the report reads files only: the same rows give the same tables
    again = report([out], tmp_path / "report2")
    assert next(p for p in again if p.name.endswith("_time.md")).read_text() == table


def test_latest_measurement_of_a_cell_wins(tmp_path):
    out = tmp_path / "dup.jsonl"
    run_sweep(_grid(causal=[False]).cells("cpu")[:1], out, config={}, timing=FAST, progress=False)
    row = json.loads(out.read_text())
    row["time_ms"], row["timestamp"] = 123.0, "2999-01-01T00:00:00+00:00"
    out.write_text(out.read_text() + json.dumps(row) + "\n")
    frame = load_frame([out])
    assert len(frame) == 1 and frame["time_ms"].iloc[0] == 123.0


@pytest.mark.parametrize("name", ["quick-cpu", "accuracy", "longrange", "mixers-mamba-cpu", "mixers-cpu-amd-epyc-avx2"])
def test_committed_reports_are_what_the_committed_rows_give(tmp_path, name):
    """A committed table differs from its rows only if someone edited one of them by hand (or forgot to regenerate:
    python -m bench report --committed)."""
    from bench.environment import REPO_ROOT
    from bench.reports.committed import GENERATED, regenerate_one

    root = REPO_ROOT / "results"
    if not regenerate_one(name, root, tmp_path):
        pytest.skip(f"no committed rows for {name}")
    for pattern in GENERATED:  # no file a report no longer draws (a page would link a figure that is gone)
        drawn = sorted(p.name for p in tmp_path.glob(pattern))
        assert sorted(p.name for p in (root / "reports" / name).glob(pattern)) == drawn, pattern
    committed = sorted(p.name for p in (root / "reports" / name).glob("*.md"))
    assert committed
    for table in committed:
        assert (tmp_path / table).read_text() == (root / "reports" / name / table).read_text(), table


def test_the_padding_axis_masks_the_first_positions_and_old_rows_read_as_unpadded():
    import dataclasses

    import torch

    from bench.timing.cells import make_workload, unsupported_reason

    padded = Cell("attention", "linrec", True, 12, 2, 16, 2, "fwd", "fp32", "cpu", {}, 0.5)
    masks = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: masks.append(inputs[1]) if len(inputs) > 1 else None
    )
    try:
        make_workload(padded)()
    finally:
        hook.remove()
    assert len(masks) == 1 and masks[0].shape == (2, 12)
    assert not masks[0][:, :6].any() and masks[0][:, 6:].all()
    model_cell = Cell("model", "sdpa", True, 12, 2, 16, 2, "fwd", "fp32", "cpu", {}, 0.5)
    assert "attention and kernel levels" in unsupported_reason(model_cell)
    assert "fraction" in unsupported_reason(dataclasses.replace(padded, padding=1.0))
    row = {k: v for k, v in dataclasses.asdict(padded).items() if k not in ("device", "padding")}
    row["device_type"] = "cpu"
    assert Cell.of_row(row).padding == 0.0  # rows written before the axis existed
    assert Cell.of_row({**row, "padding": 0.5}) == padded
    with pytest.raises(SystemExit, match="--padding"):
        from bench.cli.commands import _check_grid

        _check_grid(build_parser().parse_args(["sweep", "--padding", "1.5"]))


def test_attention_dropout_is_an_axis_with_the_levels_defaults_for_older_rows():
    import dataclasses

    from bench.schema import MODEL_DROPOUT, effective_attention_dropout
    from bench.timing.cells import unsupported_reason

    cell = Cell("attention", "sdpa", True, 8, 2, 16, 2, "fwd_bwd", "fp32", "cpu", {}, 0.0, 0.25)
    row = {k: v for k, v in dataclasses.asdict(cell).items() if k not in ("device", "attention_dropout")}
    row["device_type"] = "cpu"
    assert Cell.of_row(row).attention_dropout is None  # a row written before the axis
    assert Cell.of_row({**row, "attention_dropout": 0.25}) == cell
    assert effective_attention_dropout("attention", None) == 0.0
    assert effective_attention_dropout("model", None) == MODEL_DROPOUT
    assert effective_attention_dropout("model", 0.0) == 0.0
    assert "probability" in unsupported_reason(dataclasses.replace(cell, attention_dropout=1.0))
    args = build_parser().parse_args(["sweep", "--attention", "sdpa", "--attention-dropout", "0,0.2"])
    assert args.attention_dropout == [0.0, 0.2]
    grid = Grid([("sdpa", {})], seq_len=[8], batch_size=[2], attention_dropout=[None, 0.2])
    assert [c.attention_dropout for c in grid.cells("cpu")] == [None, 0.2, None, 0.2]


def test_compile_is_an_axis_timed_beside_eager_with_its_first_call_apart(tmp_path):
    from bench.timing.sweep import comparison_group

    grid = Grid([("linrec", {})], seq_len=[8], batch_size=[2], dim=16, heads=2, causal=[True], compile=[False, True])
    eager, compiled = grid.cells("cpu")
    assert (eager.compile, compiled.compile) == (False, True) and compiled.label == "linrec (compiled)"
    assert comparison_group(eager) == comparison_group(compiled)  # interleaved side by side
    rows = run_sweep([eager, compiled], tmp_path / "s.jsonl", config={}, timing=FAST, progress=False)
    assert [row["status"] for row in rows] == ["ok", "ok"], rows
    # recorded apart for both (how long a compile takes depends on Inductor's on-disk cache: not compared here)
    assert all(row["first_call_ms"] > 0 for row in rows)
    frame = load_frame([tmp_path / "s.jsonl"])
    assert set(frame["mechanism"]) == {"linrec", "linrec (compiled)"}
    assert build_parser().parse_args(["sweep", "--compile", "false,true"]).compile == [False, True]


def test_train_takes_every_boolean_setting_as_true_or_false():
    args = build_parser().parse_args(["train", "--split-batches", "false", "--embedding-scale", "yes"])
    assert args.split_batches is False and args.embedding_scale is True and args.embedding_norm is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--split-batches", "maybe"])
