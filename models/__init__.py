"""Attention mechanisms and sequential recommenders of the LinRec benchmark suite."""

from .bert4rec import BERT4Rec
from .encoder import EncoderConfig, SequenceEncoder
from .recommender import Recommender, available_recommenders, recommender_class, register_recommender
from .sasrec import SASRec

__all__ = [
    "BERT4Rec",
    "EncoderConfig",
    "Recommender",
    "SASRec",
    "SequenceEncoder",
    "available_recommenders",
    "recommender_class",
    "register_recommender",
]
