"""Command-line tools: setup, reports and benchmarks (each runs as ``python -m tools.NAME``)."""
