"""How the suite is used from the outside: the console script, `pytest --benchmark`, light reports."""

import subprocess
import sys
from importlib.metadata import entry_points

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
    code = (
        "import sys, bench.report; "
        "print([m for m in sys.modules if m == 'models' or m.startswith(('models.', 'torch'))])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
