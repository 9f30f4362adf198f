"""Every command resolves --attention after --plugin modules load, through the one registry; unknown names are
refused up front (status 2, with the closest registered names); a dataset path that does not exist says so."""

import subprocess
import sys
from pathlib import Path

import pytest

import bench.cli

REPO = Path(__file__).resolve().parents[1]


def _parsed(monkeypatch, command: str, argv: list[str]):
    """The args a command's function receives from `python -m bench ARGV` (the function itself is not run)."""
    seen = {}
    monkeypatch.setattr(bench.cli.commands, f"cmd_{command}", lambda args: seen.setdefault("args", args))
    bench.cli.main(argv)
    return seen["args"]


@pytest.mark.parametrize("plugin", [False, True])
def test_sweep_gate_and_accuracy_resolve_built_in_and_plugin_names(monkeypatch, registry_restored, plugin):
    name, expected = ("late-relu-eps3", ("late-relu", {"eps": 1e-3})) if plugin else ("linrec-official", None)
    expected = expected or ("linrec", {"variant": "official"})
    extra = ["--plugin", "late_plugin"] if plugin else []
    for command in ("sweep", "gate", "accuracy"):
        args = _parsed(monkeypatch, command, [command, *extra, "--attention", f"sdpa,{name}"])
        assert args.attention == [("sdpa", {}), expected], command


@pytest.mark.parametrize("plugin", [False, True])
def test_train_resolves_a_named_configuration_into_mechanism_and_options(monkeypatch, registry_restored, plugin):
    name, mechanism, options = (
        ("late-relu-eps3", "late-relu", {"eps": 1e-3})
        if plugin
        else ("linrec-official", "linrec", {"variant": "official"})
    )
    extra = ["--plugin", "late_plugin"] if plugin else []
    args = _parsed(monkeypatch, "train", ["train", *extra, "--attention", name, "--option", "chunk_size=16"])
    assert args.attention == mechanism and dict(args.option) == {**options, "chunk_size": 16}


@pytest.mark.parametrize("command", ["sweep", "train", "accuracy", "gate"])
def test_a_misspelled_mechanism_is_refused_with_the_closest_names(monkeypatch, capsys, command):
    monkeypatch.setattr(bench.cli.commands, f"cmd_{command}", lambda args: pytest.fail("ran with an unknown mechanism"))
    with pytest.raises(SystemExit) as stopped:
        bench.cli.main([command, "--attention", "sdpa,linrc" if command != "train" else "linrc"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "'linrc'" in err and "did you mean linrec" in err


def test_unsupported_stays_for_real_capability_gaps(monkeypatch):
    args = _parsed(monkeypatch, "sweep", ["sweep", "--attention", "linformer", "--causal", "true"])
    assert [name for name, _ in args.attention] == ["linformer"]  # known: recorded 'unsupported' (no causal form)


def test_train_on_a_missing_file_path_says_the_file_does_not_exist(tmp_path):
    from bench.data import DatasetNotFound, locate

    for given in (tmp_path / "nope.txt", "/path/that/does/not/exist", "./ml-1m.txt"):
        with pytest.raises(DatasetNotFound, match="no such file") as err:
            locate(str(given))
        assert "unknown dataset" not in str(err.value)


def test_train_with_a_built_in_named_configuration_runs_end_to_end(tmp_path):
    """The newcomer's failing command: `train --attention linrec-official` (synthetic data, one epoch)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "train", "--dataset", "synthetic", "--attention", "linrec-official",
         "--seq-len", "20", "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"variant": "official"' in (tmp_path / "run" / "results.json").read_text()
