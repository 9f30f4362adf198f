"""How the suite is used from the outside: the console script, `pytest --benchmark`, light reports."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from bench.environment import REPO_ROOT


def test_the_console_script_is_the_cli():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "linrec-bench"]
    assert script.value == "bench.cli:main"


def test_pytest_dash_dash_benchmark_runs_benchmarks_and_only_them():
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--benchmark",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_metrics.py",
        "tests/benchmarks/test_attention_speed.py",
        "-k",
        "metrics or (sdpa and bidir and 256 and infer)",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout and "skipped" in result.stdout


def test_reports_need_only_the_rows_not_the_models():
    """Imports run one way: reports read stored rows and import neither the models, torch, nor what measures or
    trains (bench.timing, bench.training)."""
    code = (
        "import sys, bench.reports.timing, bench.reports.committed, bench.reports.accuracy; "
        "print([m for m in sys.modules if m == 'models' or m.startswith(('models.', 'torch', 'bench.timing', "
        "'bench.training'))])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_mechanism_registered_outside_the_package_is_everywhere():
    from bench.timing.gate import gated
    from bench.timing.grid import preset_cells
    from models.attention import list_attentions

    assert "outside-relu" in list_attentions()  # registered by tests/outside_mechanism.py via conftest
    assert "outside-relu" in {cell.attention for cell in preset_cells("quick", "cpu")}
    assert ("outside-relu", {}, True, "fwd_bwd") in gated()
    from test_attention_layers import CONFIGS

    assert "outside-relu" in CONFIGS


def test_dash_dash_plugin_reaches_the_sweep_workers(tmp_path):
    out = tmp_path / "s.jsonl"
    command = [
        sys.executable,
        "-m",
        "bench",
        "sweep",
        "--plugin",
        "outside_mechanism",
        "--attention",
        "sdpa,outside-relu",
        "--seq-len",
        "16",
        "--batch-size",
        "1",
        "--dim",
        "16",
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
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LINREC_BENCH_PLUGINS"}
    result = subprocess.run(command, cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["attention"], r["status"]) for r in rows} == {("sdpa", "ok"), ("outside-relu", "ok")}


def test_an_unimportable_plugin_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "gate", "--plugin", "no_such_module_here"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "--plugin no_such_module_here: cannot import it" in result.stderr


def test_the_readme_results_block_is_what_the_committed_rows_give():
    """No figure in the README's results block is typed: `report --committed` writes it from results/."""
    from bench.reports.readme import readme_block, results_block

    assert readme_block(REPO_ROOT / "README.md") == results_block(REPO_ROOT / "results"), (
        "README.md's results block differs from the committed rows: run `python -m bench report --committed`"
    )


def test_the_docs_generated_tables_are_what_the_committed_rows_give(tmp_path):
    """A docs table between generated markers is written from results/; it also fails on a page that lost its
    markers (write_doc_tables then names the page)."""
    import shutil

    from bench.reports.docs_tables import DOC_TABLES, generated_block, write_doc_tables

    for (page, name), writer in DOC_TABLES.items():
        block = generated_block((REPO_ROOT / "docs" / page).read_text(encoding="utf-8"), name)
        assert block == writer(REPO_ROOT / "results") + "\n", f"docs/{page}: run `python -m bench report --committed`"
    docs = tmp_path / "docs"
    shutil.copytree(REPO_ROOT / "docs", docs)
    assert write_doc_tables(docs, REPO_ROOT / "results") == []  # nothing to change
    page, name = next(iter(DOC_TABLES))
    (docs / page).write_text("no markers here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"no '<!-- generated:{name}"):
        write_doc_tables(docs, REPO_ROOT / "results")


def test_a_newcomer_reads_the_code_in_pieces_and_the_concerns_stay_apart():
    """No file over 400 lines nor function over 80 in bench/; timing and training write rows through bench/schema.py
    and import nothing from the reports; the README stays short (its results are a generated block)."""
    import ast

    long_files, long_functions, crossing = [], [], []
    for path in sorted((REPO_ROOT / "bench").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            long_files.append(path.name)
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.name}:{node.name}")
            if isinstance(node, ast.ImportFrom) and path.parent.name in ("timing", "training"):
                if "reports" in (node.module or "").split("."):
                    crossing.append(f"{path.name} imports {node.module}")
    assert long_files == [] and long_functions == [] and crossing == []
    assert len((REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def test_the_readme_states_the_measured_durations_and_memory():
    """The two commands' times and memory in the README are those of the committed fresh-clone measurement
    (scripts/fresh_clone_durations.sh on a quiet machine), and that measurement installed no CUDA wheel."""
    measured = json.loads((REPO_ROOT / "results/robustness/first-run/amd-epyc-avx2.json").read_text())
    head = "\n".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:8])
    assert measured["tox_main_rc"] == 0 and measured["tox_tests_rc"] == 0 and measured["cuda_packages_installed"] == []
    assert measured["torch_in_envs"] == ["torch==2.13.0+cpu"]
    for name in ("main", "tests"):
        assert f"tox -e {name}" in head and f"(~{round(measured[f'tox_{name}_seconds'] / 60)} min" in head
        assert f"{measured[f'tox_{name}_peak_tree_pss_mib'] / 1024:.1f} GiB" in head
    assert f"{measured['machine'].split(',')[0]} ({measured['cpu_capability']})" in head
