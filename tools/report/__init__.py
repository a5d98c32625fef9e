"""Reading the logs: ``python -m tools.report RUN_DIR [RUN_DIR ...]``.

runs.py reads a run directory, metrics.py computes the numbers, tables.py formats them,
plots.py and series.py write the PNGs and nnabla Monitor series, markdown.py the report;
__main__.py is the command that wires them together.
"""
