"""Turn a dataset's public download into the file the suite reads (`python -m bench data prepare`).

    python -m bench data prepare ml-1m ~/Downloads/ml-1m.zip      --data-dir ~/data
    python -m bench data prepare ml-100k ~/Downloads/ml-100k.zip  --data-dir ~/data
    python -m bench data prepare beauty ~/Downloads/Beauty.txt    --data-dir ~/data

MovieLens archives are converted (ratings ordered by timestamp, ties in file order; ML-1M as the
standard file: films with at least 5 ratings, see `_standard_ml_1m`); the other
registered datasets are published already preprocessed by the papers that introduced them, so
their file is checked (it must load in its registered format) and stored, gzip-compressed, under
the name the registry expects. Nothing is downloaded: the licences ask each user to fetch the
data from its source.
"""

from __future__ import annotations

import gzip
import io
import shutil
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from .dataset import load_dataset
from .files import DATASETS, DataFormatError

# name -> (where the public download lives, what to download)
SOURCES: dict[str, tuple[str, str]] = {
    "ml-1m": ("https://grouplens.org/datasets/movielens/1m/", "ml-1m.zip (or its ratings.dat)"),
    "ml-1m-ratings-u2999": ("https://grouplens.org/datasets/movielens/1m/", "ratings.dat lines of users 1-2999"),
    "ml-100k": ("https://grouplens.org/datasets/movielens/100k/", "ml-100k.zip (or its u.data)"),
    "beauty": ("S3-Rec's data folder (Zhou et al., CIKM 2020; Amazon 2014 reviews, McAuley et al.)", "Beauty.txt"),
    "sports": (
        "S3-Rec's data folder (Zhou et al., CIKM 2020; Amazon 2014 reviews, McAuley et al.)",
        "Sports_and_Outdoors.txt",
    ),
    "video-games": ("SASRec's data folder (Kang & McAuley, ICDM 2018; Amazon 2014 reviews)", "Video.txt"),
    "lastfm": ("S3-Rec's data folder (HetRec 2011 lastfm-2k, Cantador et al.)", "LastFM.txt"),
    "gowalla-subset": (
        "Gowalla check-ins (Cho et al., KDD 2011; SNAP), a 1,000-user subset",
        "user poi timestamp lines",
    ),
}


def _member(archive: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(archive) as bundle:
        names = [n for n in bundle.namelist() if n.endswith(suffix)]
        if not names:
            raise DataFormatError(f"{archive}: no {suffix} inside; expected the official archive")
        return bundle.read(names[0])


def _raw_bytes(source: Path, member: str) -> bytes:
    if zipfile.is_zipfile(source):
        return _member(source, member)
    data = source.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _timed_events(text: str, separator: str | None, source: Path) -> dict[str, list[tuple[float, int, str]]]:
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(separator) if separator else line.split()
        if len(fields) != 4:
            raise DataFormatError(
                f"{source}:{number}: expected 4 fields (user item rating timestamp), got {len(fields)}"
            )
        events[fields[0]].append((float(fields[3]), number, fields[1], fields[2]))
    return events


STANDARD_ML_1M_MIN_RATINGS = 5


def _standard_ml_1m(events: dict[str, list[tuple[float, int, str, str]]], films: set[str] | None = None) -> list[str]:
    """ML-1M as SASRec's data/ml-1m.txt holds it: films with fewer than 5 ratings dropped, each user's ratings
    sorted by time with equal timestamps in ratings.dat's line order (a stable sort), one `user item` per line.

    NOTE: SASRec's file numbers users and films 1..6,040 and 1..3,416 in its own order; this one keeps MovieLens
    ids. The sequences are the same under the published id maps (a test checks it on the users with timestamps
    here), but the two files' sha256 and sequence fingerprints differ."""
    if films is None:  # the films kept; given only to convert part of ratings.dat (counts need all of it)
        counts = Counter(item for items in events.values() for _, _, item, _ in items)
        films = {item for item, count in counts.items() if count >= STANDARD_ML_1M_MIN_RATINGS}
    lines = []
    for user, items in sorted(events.items(), key=lambda e: int(e[0])):
        lines += [f"{user} {item}" for _, _, item, _ in sorted(items) if item in films]  # (time, line): stable
    return lines


def _write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def prepare(name: str, source: Path, data_dir: Path) -> Path:
    """Write the registered file of `name` under data_dir from the user's download; returns its path."""
    if name not in DATASETS:
        raise DataFormatError(f"data prepare: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    source = Path(source)
    if not source.is_file():
        raise DataFormatError(
            f"data prepare: {source} is not a file; download {SOURCES[name][1]} from {SOURCES[name][0]}"
        )
    target = Path(data_dir) / DATASETS[name][0]
    if name in ("ml-1m", "ml-100k"):
        member, separator = ("ratings.dat", "::") if name == "ml-1m" else ("u.data", None)
        text = _raw_bytes(source, member).decode("latin-1")
        events = _timed_events(text, separator, source)
        if name == "ml-1m":
            lines = _standard_ml_1m(events)
        else:  # RecBole atomic file
            lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
            lines += [
                f"{user}\t{item}\t{rating}\t{stamp:.0f}"
                for user, items in events.items()
                for stamp, _, item, rating in items
            ]
        _write_gz(target, "\n".join(lines) + "\n")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        if data[:2] == b"\x1f\x8b":
            shutil.copyfile(source, target)
        else:
            _write_gz(target, io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read())
    load_dataset(name, data_dir)  # the stored file must load in its registered format
    return target
