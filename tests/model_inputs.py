"""A small encoder configuration shared by the recommender tests."""

from models import EncoderConfig


def tiny_config(**overrides) -> EncoderConfig:
    """30 items, N = 12, width 16 in 2 heads, one layer, no dropout; `overrides` change any field."""
    values = {"num_items": 30, "seq_len": 12, "hidden": 16, "heads": 2, "layers": 1, "inner": 32, "dropout": 0.0}
    return EncoderConfig(**{**values, **overrides})
