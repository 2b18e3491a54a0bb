"""Benchmarks: each module prints the figures quoted in the README (`python -m bench.<name>`)."""
