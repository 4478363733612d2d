"""Benchmarks: neuroalign vs a re-creation of the reference training loop (not part of the package)."""
