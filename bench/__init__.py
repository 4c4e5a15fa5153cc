"""Benchmarks of Fleet against real services: `python -m bench.ingest` (see bench/README.md)."""
