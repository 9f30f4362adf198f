"""Datasets: where files are found and how they are read (files.py), what a dataset holds and how it is split
(dataset.py), converting public downloads (prepare.py), generated sequences for tests (synthetic.py). The names
most callers need, in one place:"""

from .dataset import LeaveOneOut, SequenceDataset, build_dataset, k_core, leave_one_out, load_dataset
from .files import (
    DATASETS,
    FORMATS,
    USER_SUBSETS,
    DataFormatError,
    DatasetNotFound,
    data_dir_candidates,
    guess_format,
    locate,
    read_interactions,
)

__all__ = [
    "DATASETS",
    "FORMATS",
    "USER_SUBSETS",
    "DataFormatError",
    "DatasetNotFound",
    "LeaveOneOut",
    "SequenceDataset",
    "build_dataset",
    "data_dir_candidates",
    "guess_format",
    "k_core",
    "leave_one_out",
    "load_dataset",
    "locate",
    "read_interactions",
]
