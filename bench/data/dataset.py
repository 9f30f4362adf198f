"""Datasets: a file's raw user -> items (files.py) as a SequenceDataset, with k-core filtering, id remapping,
statistics, fingerprints and the leave-one-out split.

`build_dataset` remaps items to 1..I (0 is padding) and users to 0..U-1. The datasets' licences forbid
redistribution: they are read from a directory (--data-dir, env LINREC_DATA, or ../shared/data next to this
repository), never copied into it.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .files import DATASETS, FORMATS, USER_SUBSETS, DataFormatError, guess_format, locate, read_interactions

# ------------------------------------------------------------------ the dataset


@dataclass
class SequenceDataset:
    name: str
    sequences: list[list[int]]  # per user, items in 1..num_items, chronological
    num_items: int
    user_ids: list[str] = field(default_factory=list)
    source: str = ""
    k_core: int = 0
    format: str = ""
    item_ids: list[str] = field(default_factory=list)  # raw id of item 1, 2, ... (empty for synthetic data)
    file_sha256: str = ""  # of the file as read (compressed bytes when gzip): which file a row was trained on
    # generated tasks fix their own split (held-out users) and reference levels (ceiling, chance); files have none
    split: LeaveOneOut | None = None
    levels: dict = field(default_factory=dict)
    # long-range tasks: each test user's whole sequence, marking every position whose evidence lies exactly k back
    # (a second reading of the reach, over many positions instead of the last one alone)
    probes: list | None = None
    # generated tasks: fresh training users for an epoch (`--train-users fresh`), the same for the same epoch
    fresh_train: Callable[[int], list] | None = None

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    def stats(self) -> dict:
        lengths = sorted(len(s) for s in self.sequences)
        interactions = sum(lengths)

        def pct(p):
            return lengths[min(len(lengths) - 1, int(p / 100 * len(lengths)))]

        return {
            "dataset": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": interactions,
            "density": interactions / (self.num_users * self.num_items),
            "length_mean": interactions / self.num_users,
            "length_min": lengths[0],
            "length_p25": pct(25),
            "length_p50": pct(50),
            "length_p75": pct(75),
            "length_p90": pct(90),
            "length_p99": pct(99),
            "length_max": lengths[-1],
            "k_core": self.k_core,
            "format": self.format,
            "source": self.source,
            "file_sha256": self.file_sha256,
            "sequences_sha256": self.fingerprint(),
            **({"levels": self.levels} if self.levels else {}),
        }

    def fingerprint(self) -> str:
        """sha256 of the item sequences, order included: two files with the same statistics (ML-1M conversions
        that break timestamp ties differently) give different fingerprints."""
        digest = hashlib.sha256()
        for sequence in self.sequences:
            digest.update(array("i", sequence).tobytes() + b"\xff\xff\xff\xff")  # -1: end of a user
        return digest.hexdigest()


def k_core(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Drop users and items with fewer than k interactions until none is left."""
    while True:
        item_counts = Counter(item for items in sequences.values() for item in items)
        kept = {}
        for user, items in sequences.items():
            items = [i for i in items if item_counts[i] >= k]
            if len(items) >= k:
                kept[user] = items
        if sum(map(len, kept.values())) == sum(map(len, sequences.values())):
            return kept
        sequences = kept


def _id_key(value: str):
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def build_dataset(
    name: str, raw: dict[str, list[str]], *, source: str = "", min_count: int = 0, fmt: str = ""
) -> SequenceDataset:
    if min_count > 1:
        raw = k_core(raw, min_count)
        if not raw:
            raise DataFormatError(f"{name}: nothing left after {min_count}-core filtering")
    items = sorted({i for seq in raw.values() for i in seq}, key=_id_key)
    index = {item: position + 1 for position, item in enumerate(items)}  # 0 = padding
    users = sorted(raw, key=_id_key)
    sequences = [[index[i] for i in raw[u]] for u in users]
    return SequenceDataset(name, sequences, len(items), users, source, min_count, fmt, item_ids=items)


def load_dataset(name: str, data_dir=None, *, min_count: int = 0, fmt: str | None = None) -> SequenceDataset:
    if fmt is not None and fmt not in FORMATS:
        raise DataFormatError(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path, registered = locate(name, data_dir)
    fmt = fmt or registered or guess_format(path)
    label = name if name in DATASETS or name in USER_SUBSETS else Path(name).name
    raw = read_interactions(path, fmt)
    if name in USER_SUBSETS:
        _, first, last = USER_SUBSETS[name]
        raw = {user: items for user, items in raw.items() if user.isdigit() and first <= int(user) <= last}
    dataset = build_dataset(label, raw, source=str(path), min_count=min_count, fmt=fmt)
    dataset.file_sha256 = file_sha256(path)
    return dataset


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ leave-one-out


@dataclass
class LeaveOneOut:
    """Per user: train items, then (history, target) for validation and test.

    Users with fewer than 3 interactions only train (they have nothing to hold out).
    """

    train: list[list[int]]
    valid: list[tuple[list[int], int]]
    test: list[tuple[list[int], int]]
    test_users: list[int] = field(default_factory=list)  # the dataset's index of each test example's user


def leave_one_out(dataset: SequenceDataset) -> LeaveOneOut:
    """The dataset's own split when it fixes one (generated tasks), else the last item of each user for test, the
    one before it for validation."""
    if dataset.split is not None:
        return dataset.split
    train, valid, test, test_users = [], [], [], []
    for user, seq in enumerate(dataset.sequences):
        if len(seq) < 3:
            train.append(list(seq))
            continue
        train.append(seq[:-2])
        valid.append((seq[:-2], seq[-2]))
        test.append((seq[:-1], seq[-1]))
        test_users.append(user)
    return LeaveOneOut(train, valid, test, test_users)
