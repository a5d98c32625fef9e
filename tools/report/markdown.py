"""The shareable report: one Markdown file with the tables, the plots and how each number is
computed, next to the PNGs it embeds (relative links, so the folder can be moved or zipped)."""
import os

from . import reference
from .plots import PLOTS
from .tables import render

DEFINITIONS = """\
- *wall time*: the run's `elapsed_s` (training and evaluation; setup excluded; cumulative over
  resumes) at its `end` line, or at its last line for a partial run.
- *time to top-1 ≥ x*: `elapsed_s` of the first evaluation that reached x.
- *MLPerf time-to-train*: `run_stop` minus `run_start` in `mlperf.log`, as MLPerf counts it
  (wall clock: initialisation excluded, evaluation included; across resumes it includes the
  time between the jobs), with `run_stop`'s status (`success`: an evaluation reached
  `mlperf.target_top1`). *MLPerf time to target*: `run_start` to the first `eval_accuracy` at
  or above the target, where an MLPerf run would have stopped (this trainer trains on).
- *images/s*: the trainer's whole-run figure (its `end` line, evaluation excluded); for a
  partial or resumed run, all images of the `step` lines over their training seconds.
- *scaling efficiency*: images/s per rank over images/s per rank of the first run with the
  fewest ranks (shown only when the runs differ in rank count).
- *all-reduce share*: sum of `allreduce_s` on `epoch` lines over the training seconds of those
  epochs (images / `images_per_s`). *data-wait share*: the same for the time spent waiting
  for batches (`data_wait_s`, cumulative within a process, or `data_wait_frac`).
- Resumed runs: lines of the first attempt after the step the run resumed from were redone,
  so they are left out of every number, plot and series.
- `n/a`: the log does not contain what the number needs (an older trainer, or not yet)."""


def _rel(path, out_dir):
    return os.path.relpath(path, out_dir).replace(os.sep, "/")


def build(out_dir, command, runs, tables, baseline, warnings, plot_paths, series_dirs):
    """tables: {"per_run": (header, rows), "comparison": ..., "paper": ...}; baseline: the
    run the scaling efficiency is relative to, or None."""
    lines = ["# Training report", "", f"Written by `{command}`.", "", "## Runs", ""]
    for run in runs:
        state = "completed" if run.completed else "partial (running or crashed)"
        if run.resumes:
            state += f", resumed {run.resumes}×"
        lines.append(f"- **{run.name}**: `{run.path}` ({state})")
    if warnings:
        lines += ["", "Skipped while reading:", ""] + [f"- {w}" for w in warnings]
    lines += ["", "## Results per run", "", render(*tables["per_run"]), ""]
    if baseline:
        lines += [f"Scaling efficiency is relative to **{baseline}** (its images/s per rank).",
                  ""]
    lines += ["## Comparison in the paper's form", "", render(*tables["comparison"]), "",
              "### For context: published results (reported by others)", "",
              reference.CAPTION, "", render(*tables["paper"]), "", "## Plots", ""]
    titles = dict(PLOTS)
    for path in plot_paths:
        name = os.path.basename(path)
        lines += [f"### {titles[name]}", "", f"![{titles[name]}]({_rel(path, out_dir)})", ""]
    lines += ["## nnabla Monitor series", "",
              "One `*.series.txt` per quantity and run (index = update step), in the format "
              "of `nnabla.monitor.MonitorSeries`, for example:", "", "```bash"]
    first = next(iter(series_dirs.values()), None)
    if first:
        # argparse wants every -l before the files (they are one positional list)
        lines.append("nnabla_cli plot_series -x step -y loss -o train-loss-nnabla.png "
                     + " ".join(f"-l {name}" for name in series_dirs) + " "
                     + " ".join(f"{_rel(d, out_dir)}/Train-loss.series.txt"
                                for d in series_dirs.values()))
    lines += ["```", ""]
    for name, d in series_dirs.items():
        files = sorted(f for f in os.listdir(d) if f.endswith(".series.txt"))
        lines.append(f"- {name}: `{_rel(d, out_dir)}/`: " + ", ".join(f"`{f}`" for f in files))
    lines += ["", "## How the numbers are computed", "", DEFINITIONS, ""]
    return "\n".join(lines)


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
