"""Data files: which file a registered name is and where it is looked for (--data-dir, $LINREC_DATA,
../shared/data), what format a file is in, and its lines read into raw user -> chronological items."""

from __future__ import annotations

import gzip
import os
import zlib
from collections import defaultdict
from pathlib import Path

from ..environment import REPO_ROOT, unknown_name


class DataFormatError(ValueError):
    """A data file that does not have the expected format: file, line and reason."""


class DatasetNotFound(FileNotFoundError):
    pass


# name -> (relative path under the data dir, format)
DATASETS: dict[str, tuple[str, str]] = {
    # the standard ML-1M: SASRec's data/ml-1m.txt (items with >= 5 ratings, ties in ratings.dat's line order), the
    # file SASRec, BERT4Rec, gSASRec and SASRec+ report on
    "ml-1m": ("ml-1m/ml-1m_sasrec.txt.gz", "user_item_pairs"),
    # all 3,706 rated films (DiffuRec's preprocessing), equal-timestamp ratings in another order: the tie-order study
    "ml-1m-diffurec": ("ml-1m/ml-1m.txt.gz", "user_lines"),
    "ml-1m-ratings-u2999": ("ml-1m/ml-1m_ratings_users1-2999.dat.gz", "movielens_dat"),
    "ml-100k": ("ml-100k/ml-100k.inter.gz", "recbole_inter"),
    "beauty": ("amazon-beauty/Beauty.txt.gz", "user_lines"),
    "sports": ("amazon-sports/Sports_and_Outdoors.txt.gz", "user_lines"),
    "video-games": ("amazon-video-games/Video.txt.gz", "user_item_pairs"),
    "lastfm": ("lastfm-hetrec/LastFM.txt.gz", "user_lines"),
    "gowalla-subset": ("gowalla-subset/Gowalla_checkins_u1000.txt.gz", "checkins"),
}
# name -> (registered dataset, first and last user id kept): a registered file restricted to some of its users
USER_SUBSETS: dict[str, tuple[str, int, int]] = {
    # the users of ml-1m-ratings-u2999: the same ratings in ml-1m-diffurec's order, which breaks timestamp ties
    # differently (ratings.dat keeps its own line order within a second), so the two differ in the tie order only
    "ml-1m-u2999": ("ml-1m-diffurec", 1, 2999),
}
_FIELDS = {
    "checkins": "user poi timestamp",
    "movielens_dat": "user item rating timestamp",
    "movielens_udata": "user item rating timestamp",
}
FORMATS = ("user_lines", "user_item_pairs", "recbole_inter", "movielens_dat", "movielens_udata", "checkins")


# ------------------------------------------------------------------ locating files


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where datasets are looked for, in order: --data-dir, $LINREC_DATA, ../shared/data."""
    candidates = []
    if data_dir:
        if not Path(data_dir).is_dir():  # a mistyped folder must not fall through to another one
            raise DatasetNotFound(f"--data-dir {data_dir}: no such directory")
        candidates.append(("--data-dir", Path(data_dir)))
    if os.environ.get("LINREC_DATA"):
        candidates.append(("LINREC_DATA", Path(os.environ["LINREC_DATA"])))
    candidates.append(("default", REPO_ROOT.parent / "shared" / "data"))
    return candidates


def locate(name: str, data_dir=None) -> tuple[Path, str | None]:
    """(file, format) of a registered dataset name, or of a file path given directly (format None: guess it)."""
    direct = Path(name)
    if direct.is_dir():
        raise DatasetNotFound(f"{name} is a directory; expected a data file or one of {', '.join(DATASETS)}")
    if direct.is_file():
        return direct, None
    if name in USER_SUBSETS:
        return locate(USER_SUBSETS[name][0], data_dir)
    if name not in DATASETS and _looks_like_a_path(name):
        raise DatasetNotFound(
            f"{name}: no such file (a data file path was given; registered names: {', '.join(DATASETS)})"
        )
    if name not in DATASETS:
        raise DatasetNotFound(
            unknown_name("--dataset", "dataset", name, [*DATASETS, *USER_SUBSETS]) + " (or a data file)"
        )
    relative, fmt = DATASETS[name]
    looked = []
    for source, root in data_dir_candidates(data_dir):
        path = root / relative
        if path.is_file():
            return path, fmt
        looked.append(f"{path} ({source})")
    raise DatasetNotFound(
        f"dataset {name!r} not found: expected the file {relative} ({fmt} format); looked in: " + "; ".join(looked)
    )


def _looks_like_a_path(name: str) -> bool:
    """A folder separator, a leading dot or tilde, or a data file's extension: meant as a file, not a name."""
    return (
        os.sep in name
        or "/" in name
        or name.startswith((".", "~"))
        or name.lower().endswith((".txt", ".gz", ".dat", ".inter", ".csv", ".tsv", ".zip", ".data"))
    )


GUESS_SAMPLE_LINES = 100_000


def guess_format(path: Path) -> str:
    """The format of a data file from its name or, failing that, from up to 100,000 of its lines.

    One line per user has a varying number of fields and no user twice; the event formats
    repeat users. A file that fits two formats (every line 'a b c' with no user repeated:
    a user with two items, or a check-in) is refused: name the format with --format.
    """
    name = path.name.lower()
    if name.endswith((".inter", ".inter.gz")):
        return "recbole_inter"
    if name.endswith((".dat", ".dat.gz")):
        return "movielens_dat"
    if name.startswith("u.data"):
        return "movielens_udata"
    field_counts, users, repeated = set(), set(), False
    with _open(path) as handle:
        for number, line in enumerate(_lines(path, handle), 1):
            if number > GUESS_SAMPLE_LINES:
                break
            fields = line.split()
            if not fields:
                continue
            if number == 1 and ":token" in line:
                return "recbole_inter"
            field_counts.add(len(fields))
            repeated = repeated or fields[0] in users
            users.add(fields[0])
    if not field_counts:
        raise DataFormatError(f"{path}: no interactions found")
    if not repeated:
        if field_counts == {3} or field_counts == {4}:
            raise DataFormatError(
                f"{path}: every line has {field_counts.pop()} fields and no user repeats, so the format is ambiguous "
                f"(one line per user, or one event per line); name it with --format (one of {', '.join(FORMATS)})"
            )
        return "user_item_pairs" if field_counts == {2} else "user_lines"
    by_count = {2: "user_item_pairs", 3: "checkins", 4: "movielens_udata"}
    if len(field_counts) == 1 and field_counts <= by_count.keys():
        return by_count[next(iter(field_counts))]
    raise DataFormatError(
        f"{path}: users repeat across lines but lines have {sorted(field_counts)} fields: not a format this suite "
        "reads; "
        f"expected one of {', '.join(FORMATS)} (name it with --format)"
    )


def _open(path: Path):
    """Text lines of a plain or gzip file; compression is told by content (the gzip magic bytes), not by name.
    A UTF-8 byte-order mark (Windows editors write one) is dropped; a zip archive is named as one."""
    with open(path, "rb") as probe:
        magic = probe.read(4)
    if magic == b"PK\x03\x04":
        raise DataFormatError(
            f"{path}: a zip archive, not a text or gzip data file; unzip it, or give a MovieLens archive to "
            "'python -m bench data prepare'"
        )
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _lines(path: Path, handle):
    """The handle's lines; a damaged file raises DataFormatError naming the file and the line."""
    number = 0
    try:
        for number, line in enumerate(handle, 1):  # noqa: B007 -- number is read after the loop on failure
            yield line
    except UnicodeDecodeError:
        raise DataFormatError(
            f"{path}: line {number + 1} is not UTF-8 text; expected a text data file (plain or gzip)"
        ) from None
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as err:
        raise DataFormatError(
            f"{path}: damaged or truncated gzip after line {number} ({type(err).__name__}: {err})"
        ) from None


# ------------------------------------------------------------------ parsers: raw user -> items


def _fail(path, number, reason):
    raise DataFormatError(f"{path}:{number}: {reason}")


def _timed_to_sequences(events: dict[str, list[tuple[float, int, str]]]) -> dict[str, list[str]]:
    """Sort each user's (timestamp, file order, item) by time; ties keep file order."""
    return {user: [item for _, _, item in sorted(items)] for user, items in events.items()}


def read_interactions(path: Path, fmt: str) -> dict[str, list[str]]:
    """Raw user id -> raw item ids in chronological order. Raises DataFormatError."""
    if fmt not in FORMATS:
        raise DataFormatError(f"{path}: unknown format {fmt!r}; expected one of {FORMATS}")
    path = Path(path)
    sequences: dict[str, list[str]] = defaultdict(list)
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    with _open(path) as handle:
        for number, line in enumerate(_lines(path, handle), 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if fmt == "user_lines":
                fields = line.split()
                if len(fields) < 2:
                    _fail(path, number, f"expected 'user item1 item2 ...', got {line[:60]!r}")
                if fields[0] in sequences:
                    _fail(path, number, f"user {fields[0]} appears on two lines")
                _check_ids(path, number, fields)
                sequences[fields[0]] = fields[1:]
            elif fmt == "user_item_pairs":
                fields = line.split()
                if len(fields) != 2:
                    _fail(path, number, f"expected 'user item', got {len(fields)} fields")
                _check_ids(path, number, fields)
                sequences[fields[0]].append(fields[1])
            elif fmt == "recbole_inter":
                if number == 1:
                    header = [h.split(":")[0] for h in line.split("\t")]
                    missing = {"user_id", "item_id", "timestamp"} - set(header)
                    if missing:
                        _fail(path, number, f"RecBole header lacks {sorted(missing)} (got {header})")
                    columns = {name: header.index(name) for name in ("user_id", "item_id", "timestamp")}
                    continue
                fields = line.split("\t")
                if len(fields) != len(header):
                    _fail(path, number, f"expected {len(header)} tab-separated fields, got {len(fields)}")
                events[fields[columns["user_id"]]].append(
                    (_number(path, number, fields[columns["timestamp"]]), number, fields[columns["item_id"]])
                )
            else:
                separator = "::" if fmt == "movielens_dat" else None
                fields = line.split(separator) if separator else line.split()
                expected = 3 if fmt == "checkins" else 4
                if len(fields) != expected:
                    _fail(
                        path,
                        number,
                        f"expected {expected} fields ({_FIELDS[fmt]}), got {len(fields)}",
                    )
                user, item, stamp = fields[0], fields[1], fields[-1]
                _check_ids(path, number, [user, item])
                events[user].append((_number(path, number, stamp), number, item))
    if events:
        sequences = _timed_to_sequences(events)
    if not sequences:
        raise DataFormatError(f"{path}: no interactions found")
    return dict(sequences)


def _check_ids(path, number, fields):
    for value in fields:
        if not value.lstrip("-").isdigit():
            _fail(path, number, f"id {value!r} is not an integer")


def _number(path, number, text) -> float:
    try:
        return float(text)
    except ValueError:
        _fail(path, number, f"timestamp {text!r} is not a number")
