"""The numbers of the report, computed from a run's timeline (tools/report/runs.py).

Definitions (the report's "How the numbers are computed" section repeats them):
- training seconds of a line = images since the previous line of that kind / its images_per_s
  (the trainer's images_per_s excludes evaluation, so these add up to training time);
- images/s: the trainer's own figure on the "end" line; for a partial or resumed run, all
  images of the step lines over all their training seconds;
- all-reduce share: sum of the epoch lines' allreduce_s over their training seconds;
- data-wait share: the same with data_wait_s (cumulative within a process, so its increase
  per epoch), or data_wait_frac x seconds on lines that only have the fraction;
- scaling efficiency: (images/s per rank) / (images/s per rank of the first run with the
  fewest ranks), shown when the runs do not all have the same number of ranks;
- MLPerf time-to-train: run_stop - run_start in mlperf.log (wall clock, so across resumes it
  includes the time between jobs); MLPerf time to target: run_start to the first
  eval_accuracy at or above mlperf.target_top1 (where an MLPerf run would have stopped);
  epochs to target: the epoch of that evaluation (from the run's own eval lines);
- images/s per accelerator: images/s over the ranks (accelerators) of a run of one size;
- published MLPerf result files are read into the same lines (tools/report/published.py).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .runs import SEGMENT_EVENTS

DEFAULT_THRESHOLDS = (0.5, 0.75, 0.9)
MLPERF_TARGET = 0.759          # MLPerf's ResNet-50 top-1 target (the trainer's default too)


@dataclass
class Metrics:
    name: str
    completed: bool
    resumes: int
    epochs: Optional[float]
    steps: Optional[int]
    wall_s: Optional[float]
    final_top1: Optional[float]
    final_top5: Optional[float]
    best_top1: Optional[float]
    best_top1_epoch: Optional[float]
    best_top5: Optional[float]
    time_to: Dict[float, Optional[Tuple[float, float]]]   # threshold -> (elapsed_s, epoch)
    images_per_s: Optional[float]
    allreduce_share: Optional[float]
    data_wait_share: Optional[float]
    world_sizes: List[int]
    batch_schedule: List[int]
    device: str
    library: str
    data_backend: Optional[str]
    efficiency: Optional[float] = None
    efficiency_baseline: Optional[str] = None
    mlperf: Optional[dict] = None      # {"ttt_s", "status", "to_target_s", "target"} or None
    epochs_to_target: Optional[float] = None   # epoch of the first eval >= the MLPerf target
    unit: str = "rank"                 # what world_sizes count: ranks, or a result's accelerators

    @property
    def images_per_s_each(self):
        if self.images_per_s is None or len(self.world_sizes) != 1:
            return None
        return self.images_per_s / self.world_sizes[0]


def windows(run, kind):
    """(record, images, training seconds) for each line of ``kind``; None when not derivable.

    The trainer measures each line since the previous line of the same kind; a resumed
    process starts counting again at its resume step. Images use the line's global batch,
    so a window in which the batch changed (a "stage" between two step lines) is counted
    at the new batch; epoch lines, which stage changes usually coincide with, are exact.
    """
    out, prev = [], 0
    for r in run.records:
        if r["event"] in SEGMENT_EVENTS:
            prev = r.get("step") or 0
        elif r["event"] == kind and r.get("step") is not None:
            images = (r["step"] - prev) * r["global_batch"] if r.get("global_batch") else None
            ips = r.get("images_per_s")
            seconds = images / ips if images is not None and ips else None
            out.append((r, images, seconds))
            prev = r["step"]
    return out


def per_epoch_timing(run):
    """Per epoch line: training seconds, all-reduce seconds and data-wait seconds (or None)."""
    rows, last_wait = [], 0.0
    for r, _, seconds in windows(run, "epoch"):
        wait = None
        cumulative = r.get("data_wait_s")
        if isinstance(cumulative, (int, float)):
            # cumulative since the process started: a drop means a new process (a resume)
            wait = cumulative - last_wait if cumulative >= last_wait else cumulative
            last_wait = cumulative
        elif isinstance(r.get("data_wait_frac"), (int, float)) and seconds:
            wait = r["data_wait_frac"] * seconds
        allreduce = r.get("allreduce_s")
        rows.append({"epoch": r["epoch"], "step": r["step"], "seconds": seconds,
                     "allreduce_s": allreduce if isinstance(allreduce, (int, float)) else None,
                     "data_wait_s": wait})
    for row in rows:
        for key, share in (("allreduce_s", "allreduce_share"), ("data_wait_s", "data_wait_share")):
            row[share] = row[key] / row["seconds"] if row[key] is not None and row["seconds"] \
                else None
    return rows


def _share(rows, key):
    pairs = [(r[key], r["seconds"]) for r in rows if r[key] is not None and r["seconds"]]
    return sum(a for a, _ in pairs) / sum(s for _, s in pairs) if pairs else None


def _dedup(values):
    out = []
    for v in values:
        if v is not None and (not out or out[-1] != v):
            out.append(v)
    return out


def batch_schedule(run):
    """Global batch sizes in order: from "stage" events, else from the lines, else config."""
    stages = [r.get("global_batch") for r in run.events("stage")]
    if any(s is not None for s in stages):
        return _dedup(stages)
    seen = _dedup(r.get("global_batch") for r in run.events("step", "epoch", "eval", "end"))
    if seen:
        return seen
    configured = run.section("train").get("global_batch")
    return [configured] if configured else []


def world_sizes(run):
    sizes = _dedup(r.get("world_size") for r in run.records
                   if r["event"] in SEGMENT_EVENTS + ("stage",))
    if not sizes and run.summary:
        sizes = [run.summary.get("world_size")]
    return [s for s in sizes if isinstance(s, int) and s > 0]


def library(run, sizes):
    if run.published:
        return run.published["library"]
    version = run.start.get("nnabla")
    text = f"nnabla {version}" if version else "nnabla (version not logged)"
    comm = run.section("comm")
    if comm.get("algorithm"):
        grid = comm.get("grid")
        text += f" + {comm['algorithm']}"
        if isinstance(grid, (list, tuple)) and grid:
            text += " " + "×".join(str(g) for g in grid)
    elif sizes and max(sizes) > 1:
        text += " + all-reduce (algorithm not logged)"
    return text


def mlperf_times(run):
    """Time-to-train as MLPerf counts it, from mlperf.log (None without one)."""
    if not run.mlperf:
        return None
    target = run.section("mlperf").get("target_top1", MLPERF_TARGET)
    start = next((x for x in run.mlperf if x.key == "run_start"), None)
    stops = [x for x in run.mlperf if x.key == "run_stop"]
    hit = next((x for x in run.mlperf if x.key == "eval_accuracy"
                and isinstance(x.value["value"], (int, float)) and x.value["value"] >= target),
               None)
    seconds = lambda line: (line.timestamp - start.timestamp) / 1000  # noqa: E731
    return {"target": target, "ttt_s": seconds(stops[-1]) if start and stops else None,
            "status": stops[-1].value["metadata"].get("status") if stops else None,
            "to_target_s": seconds(hit) if start and hit else None,
            "started": start is not None}


def compute(run, thresholds):
    evals = [r for r in run.events("eval") if r.get("val_top1") is not None]
    last = lambda key: next((r[key] for r in reversed(run.records)  # noqa: E731
                             if r.get(key) is not None), None)
    best = max(evals, key=lambda r: r["val_top1"]) if evals else None
    top5s = [r["val_top5"] for r in evals if r.get("val_top5") is not None]
    time_to = {}
    for t in thresholds:
        hit = next((r for r in evals if r["val_top1"] >= t), None)
        time_to[t] = (hit["elapsed_s"], hit["epoch"]) if hit else None

    end = run.events("end")
    if run.completed and not run.resumes and end[-1].get("images_per_s"):
        images_per_s = end[-1]["images_per_s"]       # the trainer's own whole-run figure
    else:
        steps = [(i, s) for _, i, s in windows(run, "step") if i is not None and s]
        images_per_s = (sum(i for i, _ in steps) / sum(s for _, s in steps)) if steps else None

    rows = per_epoch_timing(run)
    sizes = world_sizes(run)
    target = run.section("mlperf").get("target_top1", MLPERF_TARGET)
    at_target = next((r for r in evals if r["val_top1"] >= target), None)
    return Metrics(
        name=run.name, completed=run.completed, resumes=run.resumes,
        epochs=last("epoch"), steps=last("step"),
        wall_s=end[-1]["elapsed_s"] if run.completed else last("elapsed_s"),
        final_top1=evals[-1]["val_top1"] if evals else None,
        final_top5=evals[-1].get("val_top5") if evals else None,
        best_top1=best["val_top1"] if best else None,
        best_top1_epoch=best["epoch"] if best else None,
        best_top5=max(top5s) if top5s else None,
        time_to=time_to, images_per_s=images_per_s,
        allreduce_share=_share(rows, "allreduce_s"), data_wait_share=_share(rows, "data_wait_s"),
        world_sizes=sizes, batch_schedule=batch_schedule(run),
        device=run.config["device"] if run.published else
        str(run.config.get("device") or "cpu").upper(), library=library(run, sizes),
        data_backend=run.section("data").get("backend"), mlperf=mlperf_times(run),
        epochs_to_target=at_target["epoch"] if at_target else None,
        unit="accelerator" if run.published else "rank")


def add_scaling_efficiency(metrics):
    """Fill ``efficiency`` when the runs have different numbers of ranks (else leave None)."""
    usable = [m for m in metrics if len(m.world_sizes) == 1 and m.images_per_s
              and m.unit == "rank"]     # this project's runs, not published results
    if len({m.world_sizes[0] for m in usable}) < 2:
        return False
    base = min(usable, key=lambda m: m.world_sizes[0])     # first of the smallest
    per_rank = base.images_per_s / base.world_sizes[0]
    for m in usable:
        m.efficiency = m.images_per_s / m.world_sizes[0] / per_rank
        m.efficiency_baseline = base.name
    return True


def default_thresholds(runs):
    """The union of the runs' configured eval.top1_thresholds, else 0.5, 0.75, 0.9."""
    found = set()
    for run in runs:
        values = run.section("eval").get("top1_thresholds")
        values = values if isinstance(values, list) else []
        found.update(v for v in values if isinstance(v, (int, float)) and 0 < v <= 1)
    return sorted(found) or list(DEFAULT_THRESHOLDS)
