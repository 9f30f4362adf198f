"""Damaged inputs, interrupted runs and misuse: each case failed (silently or with a bare traceback) before its fix."""

import gzip
import os

import pytest
import torch

from bench.data import DataFormatError, guess_format, load_dataset
from bench.results import ResultsFileBusy, ResultsFileError, append_row, load_rows, results_writer

# ------------------------------------------------------------------ results files


def test_a_torn_last_row_is_dropped_before_the_next_append(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, {"a": 1})
    with path.open("a") as handle:
        handle.write('{"a": 2, "b"')  # killed mid-write: no newline
    assert load_rows(path) == [{"a": 1}]
    append_row(path, {"a": 3})  # the re-run of the torn cell
    append_row(path, {"a": 4})
    assert load_rows(path) == [{"a": 1}, {"a": 3}, {"a": 4}]


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with results_writer(path):
        with pytest.raises(ResultsFileBusy, match=rf"{path.name} is being written by pid {os.getpid()}"):
            with results_writer(path):
                pass
    with results_writer(path):  # released
        pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff", "not a text file"),
        (b'{"a": 1}\n[1, 2]\n{"b": 2}\n', r":2: expected a JSON object"),
        (b'{"a": 1}\nnot json\n{"b": 2}\n', r":2: not a JSON object"),
    ],
)
def test_unreadable_results_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=message):
        load_rows(path)
    with pytest.raises(ResultsFileError, match="is a directory"):
        load_rows(tmp_path)


# ------------------------------------------------------------------ data files


def _gz(path, text):
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


def test_one_line_per_user_is_not_mistaken_for_checkins_when_the_first_user_has_two_items(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("1 10 11\n2 10 12 13 14\n3 11 12 13\n")
    assert guess_format(path) == "user_lines"
    assert load_dataset(str(path)).stats()["interactions"] == 9


def test_one_line_per_user_whose_first_user_has_one_item(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("1 10\n2 10 12 13 14\n")
    assert guess_format(path) == "user_lines"
    assert load_dataset(str(path)).stats()["format"] == "user_lines"


def test_ambiguous_files_are_refused_and_the_format_can_be_named(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("1 10 11\n2 12 13\n")  # two items per user, or one check-in per user?
    with pytest.raises(DataFormatError, match="ambiguous.*--format"):
        load_dataset(str(path))
    assert load_dataset(str(path), fmt="user_lines").num_items == 4
    with pytest.raises(DataFormatError, match="unknown format 'csv'"):
        load_dataset(str(path), fmt="csv")


def test_checkins_are_recognised_by_repeated_users(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("0\t5\t1287503727.0\n0\t6\t1287411463.0\n1\t5\t1287411400.0\n")
    assert guess_format(path) == "checkins"


def test_compression_is_told_by_content_not_by_name(tmp_path):
    gz_named_txt = _gz(tmp_path / "users.txt", "1 10 11 12\n2 11 12\n")
    assert load_dataset(str(gz_named_txt)).num_users == 2
    text_named_gz = tmp_path / "users.txt.gz"
    text_named_gz.write_text("1 10 11 12\n2 11 12\n")
    assert load_dataset(str(text_named_gz)).num_users == 2


def test_damaged_data_files_name_the_file(tmp_path):
    whole = _gz(tmp_path / "whole.gz", "".join(f"{u} 1 2 3 4 5 6 7 8 9\n" for u in range(3000))).read_bytes()
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFormatError, match=r"cut.txt.gz: damaged or truncated gzip"):
        load_dataset(str(truncated), fmt="user_lines")
    binary = tmp_path / "random.txt"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataFormatError, match=r"random.txt: line 1 is not UTF-8"):
        load_dataset(str(binary), fmt="user_lines")


def test_an_existing_file_without_suffix_is_read(tmp_path):
    path = tmp_path / "mydata"
    path.write_text("1 10 11 12\n2 11 12\n")
    assert load_dataset(str(path)).num_users == 2


# ------------------------------------------------------------------ attention layers at the edges

from models.attention import available_attentions, build_attention  # noqa: E402

MECHANISMS = sorted(available_attentions())


def _layer(name, causal=False):
    options = {"k": 8} if name == "linformer" else {}
    return build_attention(name, 16, 2, causal=causal, max_len=12, **options).eval()


@pytest.mark.parametrize("name", MECHANISMS)
@pytest.mark.parametrize("shape", [(0, 6), (2, 0)], ids=["batch0", "length0"])
def test_empty_batches_and_sequences_give_empty_outputs(name, shape):
    causal = available_attentions()[name]["causal"]
    x = torch.randn(*shape, 16, requires_grad=True)
    out = _layer(name, causal)(x, torch.ones(shape, dtype=torch.bool))
    assert out.shape == (*shape, 16)
    out.sum().backward()


@pytest.mark.parametrize("name", MECHANISMS)
def test_a_wrong_padding_mask_gets_a_clear_error(name):
    with pytest.raises(ValueError, match=r"padding_mask must be a bool tensor of shape \(B, N\)"):
        _layer(name)(torch.randn(2, 6, 16), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding_mask must be a bool tensor"):
        _layer(name)(torch.randn(2, 6, 16), torch.ones(2, 6))


@pytest.mark.parametrize("name", MECHANISMS)
def test_nan_in_padded_positions_reaches_no_real_output(name):
    causal = available_attentions()[name]["causal"]
    layer = _layer(name, causal)
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    clean = layer(x, mask)
    x[0, :2] = float("nan")
    dirty = layer(x, mask)
    assert torch.isfinite(dirty[mask]).all()
    assert torch.allclose(dirty[mask], clean[mask], atol=1e-6)


def test_zero_heads_is_refused_clearly():
    with pytest.raises(ValueError, match="dim and heads must be >= 1"):
        build_attention("linrec", 16, 0)


# ------------------------------------------------------------------ training runs


def _tiny_config(tmp_path, **kw):
    from bench.training.config import TrainConfig

    values = {
        "dataset": "synthetic",
        "synthetic_users": 60,
        "synthetic_items": 30,
        "seq_len": 10,
        "hidden": 16,
        "heads": 2,
        "layers": 1,
        "inner": 16,
        "epochs": 1,
        "batch_size": 32,
        "out": str(tmp_path / "run"),
        "threads": 1,
    }
    return TrainConfig(**{**values, **kw})


def test_a_finished_run_is_not_overwritten_without_asking(tmp_path):
    from bench.training.train import train

    train(_tiny_config(tmp_path), progress=False, log=False)
    with pytest.raises(ValueError, match="already holds a run.*--resume continues it, --overwrite replaces it"):
        train(_tiny_config(tmp_path), progress=False, log=False)
    assert train(_tiny_config(tmp_path), overwrite=True, progress=False, log=False)["epochs_run"] == 1


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    from bench.training.train import train

    train(_tiny_config(tmp_path), resume=True, progress=False)
    assert "no checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"], ids=["empty", "truncated"])
def test_a_damaged_checkpoint_names_the_file(tmp_path, content):
    from bench.training.train import train

    train(_tiny_config(tmp_path), progress=False, log=False)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a readable checkpoint"):
        train(_tiny_config(tmp_path, epochs=2), resume=True, progress=False, log=False)


def test_a_crafted_checkpoint_does_not_run_code(tmp_path):
    from bench.training.train import train

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    train(_tiny_config(tmp_path), progress=False, log=False)
    torch.save({"model": Payload()}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train(_tiny_config(tmp_path, epochs=2), resume=True, progress=False, log=False)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        ([[1]], r"1 user\(s\), 0 with enough items to train"),
        ([[1, 2], [2, 1]], r"0 with the 3\+ items needed for validation"),
    ],
)
def test_data_that_cannot_train_or_evaluate_is_refused_up_front(tmp_path, sequences, message):
    from bench.data import SequenceDataset
    from bench.training.train import train

    dataset = SequenceDataset("tiny", sequences, 2)
    with pytest.raises(ValueError, match=message):
        train(_tiny_config(tmp_path), dataset=dataset, progress=False, log=False)
    assert not (tmp_path / "run" / "results.json").exists()


def test_cuda_without_cuda_is_one_clear_line(tmp_path):
    from bench.environment import check_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"--device cuda: this torch .* sees no CUDA device; use --device cpu"):
        check_device("cuda")
