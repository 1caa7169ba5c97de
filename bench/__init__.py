"""Benchmarks of tei-operator (run from the repository root: python -m bench.autoscaling)."""
