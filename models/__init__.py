"""Attention mechanisms and sequential recommenders of the LinRec benchmark suite."""

from .bert4rec import BERT4Rec
from .encoder import EncoderConfig, SequenceEncoder
from .sasrec import SASRec

__all__ = ["BERT4Rec", "EncoderConfig", "SASRec", "SequenceEncoder"]
