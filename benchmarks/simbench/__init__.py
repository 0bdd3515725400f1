"""Helpers for benchmarks/sim_vs_flower.py. `plain` and the bare/Flower runners never import fedloom."""
