"""Benchmark side of the suite: data, training, measurement, sweeps, reports, CI gate."""
