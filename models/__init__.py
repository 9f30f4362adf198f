"""Attention mechanisms and sequential recommenders of the LinRec benchmark suite."""
