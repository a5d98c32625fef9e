"""Time-to-accuracy tables, plots and a Markdown report from one or more training runs.

    python -m tools.report runs/demo
    python -m tools.report runs/ring runs/torus --out reports/ring-vs-torus --thresholds 0.75
    python -m tools.report runs/demo --paper          # also print the paper's comparison rows
    python -m tools.report runs/demo tests/golden/mlperf/training_results_v2.0/NVIDIA/results/dgxa100_ngc22.04_mxnet/resnet/result_0.txt

A file among the arguments is a published MLPerf Training result (result_N.txt of
mlcommons/training_results_v*, :::MLLOG or v0.6 :::MLL lines), shown beside the runs in the
same tables and plots (tools/report/published.py).

Prints a per-run table and the paper-style comparison, and writes into --out (default:
RUN_DIR/report for one run, <common parent>/report-<a>-vs-<b> for several): report.md,
the PNG plots it embeds, and series/<run>/*.series.txt for `nnabla_cli plot_series`.
Partial logs (a running or crashed job) are reported as such; malformed lines are skipped
with their line number.
"""
import argparse
import os
import shlex
import sys

from . import markdown, tables
from .metrics import add_scaling_efficiency, compute, default_thresholds
from .runs import ReportError, load_runs


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.report",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR|RESULT_FILE",
                   help="output directories of train_resnet50.py (each holds log.jsonl), or "
                        "published MLPerf result files")
    p.add_argument("--out", help="where to write report.md, plots and series")
    p.add_argument("--thresholds", metavar="T1,T2,...",
                   help="top-1 fractions to time, e.g. 0.75,0.9 (default: the runs' "
                        "eval.top1_thresholds)")
    p.add_argument("--paper", action="store_true",
                   help="also print the published comparison rows (always in report.md)")
    return p.parse_args(argv)


def parse_thresholds(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ReportError(f"--thresholds {text!r}: expected comma-separated fractions, "
                          "e.g. 0.75,0.9")
    bad = [v for v in values if not 0 < v <= 1]
    if bad or not values:
        raise ReportError(f"--thresholds {text!r}: top-1 thresholds are fractions in (0, 1], "
                          f"e.g. 0.75 for 75%")
    return sorted(set(values))


def default_out(runs):
    if len(runs) == 1:
        return os.path.join(runs[0].path, "report")
    parent = os.path.commonpath([os.path.abspath(r.path) for r in runs])
    names = [os.path.basename(os.path.normpath(r.path)) for r in runs]
    label = "-vs-".join(names) if len(runs) <= 3 else f"{names[0]}-and-{len(runs) - 1}-more"
    return os.path.relpath(os.path.join(parent, "report-" + label))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        # Everything that can fail on bad input fails here, before any output is written.
        thresholds = parse_thresholds(args.thresholds) if args.thresholds else None
        runs = load_runs(args.runs)
        out = args.out or default_out(runs)
        if os.path.exists(out) and not os.path.isdir(out):
            raise ReportError(f"--out {out} is a file; pass a directory")
    except ReportError as e:
        sys.exit(f"error: {e}")
    warnings = [w for run in runs for w in run.warnings]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    thresholds = thresholds or default_thresholds(runs)

    metrics = [compute(run, thresholds) for run in runs]
    show_efficiency = add_scaling_efficiency(metrics)
    baseline = next((m.efficiency_baseline for m in metrics if m.efficiency_baseline), None)
    parts = {"per_run": tables.per_run_table(metrics, thresholds, show_efficiency),
             "comparison": tables.comparison_table(metrics), "paper": tables.paper_table()}
    print(tables.render(*parts["per_run"]))
    if baseline:
        print(f"(scaling efficiency relative to {baseline})")
    print()
    print(tables.render(*parts["comparison"]))
    if args.paper:
        print(f"\n{tables.reference.CAPTION}\n{tables.render(*parts['paper'])}")

    from .plots import write_plots          # matplotlib loads only once the input is good
    from .series import write_series
    os.makedirs(out, exist_ok=True)
    plot_paths = write_plots(runs, out, thresholds)
    series_dirs = {}
    for run in runs:
        directory = os.path.join(out, "series", run.name.replace("/", "_"))
        write_series(run, directory)
        series_dirs[run.name] = directory
    command = "python -m tools.report " + " ".join(shlex.quote(a) for a in argv)
    report = os.path.join(out, "report.md")
    markdown.write(report, markdown.build(out, command, runs, parts, baseline, warnings,
                                          plot_paths, series_dirs))
    print(f"\nwritten: {report} ({len(plot_paths)} plots), "
          f"{os.path.join(out, 'series')}/ (nnabla Monitor series)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
