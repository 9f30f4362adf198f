"""Attention kernels, one module per family; `models.attention.functional` is the stable public import."""
