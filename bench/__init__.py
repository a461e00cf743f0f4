"""Benchmarks against peer tools; `python -m bench [name ...]` runs them (see __main__)."""
