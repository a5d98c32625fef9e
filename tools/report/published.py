"""Published MLPerf Training result files (``mlcommons/training_results_v*``), read as runs, so
the report shows them beside this project's runs in the same tables and plots.

A result file is read as submitted: ``:::MLLOG {json}`` lines (v0.7 on) or the older
``:::MLL <seconds> <key>: {json}`` lines (v0.6), with mlperf-logging's own parser (its
ruleset 2.0.0 or 0.6.0), other lines (the job script's output) ignored. From it:

- time-to-train as MLPerf counts it: run_stop - run_start (the ``end`` line's elapsed_s);
- the evaluation curve: each eval_accuracy at its epoch_num (epochs completed) and its time
  since run_start (``eval`` lines), so epochs and time to any top-1 follow as for a run;
- throughput: train_samples x the epoch of the last evaluation, over run_stop - run_start
  minus the evaluation intervals (eval_start to eval_stop), because this trainer's images/s
  excludes evaluation too;
- the accelerator count from the submission's system description, which MLCommons keeps at
  ``<org>/systems/<system>.json`` beside ``<org>/results/<system>/<benchmark>/result_N.txt``
  (v0.6: nodes[].num_nodes x num_accelerators; later: number_of_nodes x
  accelerators_per_node). Without it, the count and the per-accelerator figure are n/a.
"""
import json
import os

from .runs import ReportError, Run

TOKENS = (":::MLLOG", ":::MLL ")
TARGET = 0.759      # ResNet-50's top-1 quality target since v0.6 (v0.5: 0.749)


def detect_ruleset(path):
    """'2.0.0' for :::MLLOG lines, '0.6.0' for :::MLL lines, None for neither."""
    try:
        with open(path, encoding="latin-1") as f:
            for line in f:
                if ":::MLLOG " in line:
                    return "2.0.0"
                if ":::MLL " in line:
                    return "0.6.0"
    except OSError as e:
        raise ReportError(f"{path}: cannot read it ({e.strerror})") from None
    return None


def parse(path):
    """mlperf-logging's lines of the file, timestamps in milliseconds for both formats."""
    ruleset = detect_ruleset(path)
    if ruleset is None:
        raise ReportError(f"{path} is neither a run directory nor an MLPerf result log (no "
                          "':::MLLOG' or ':::MLL' line): pass a train_resnet50.py --output-dir "
                          "or a result_N.txt of mlcommons/training_results_v*")
    from mlperf_logging.compliance_checker import mlp_parser
    lines, errors = mlp_parser.parse_file(path, ruleset=ruleset)
    if ruleset == "0.6.0":       # v0.6 stamps seconds; MLLOG (and metrics.py) milliseconds
        lines = [x._replace(timestamp=x.timestamp * 1000) for x in lines]
    return lines, len(errors), ruleset


def system_of(path):
    """(system name, its description dict or None) from MLCommons' layout."""
    bench_dir = os.path.dirname(os.path.abspath(path))
    system_dir = os.path.dirname(bench_dir)
    results_dir = os.path.dirname(system_dir)
    system = os.path.basename(system_dir)
    if os.path.basename(results_dir) != "results":
        return None, None
    desc = os.path.join(os.path.dirname(results_dir), "systems", system + ".json")
    try:
        with open(desc) as f:
            return system, json.load(f)
    except (OSError, ValueError):
        return system, None


def accelerators(desc):
    """(count, model) from a system description of either schema; (None, None) if unknown."""
    if not isinstance(desc, dict):
        return None, None
    try:
        if "nodes" in desc:
            nodes = desc["nodes"]
            return (sum(int(n["num_nodes"]) * int(n["num_accelerators"]) for n in nodes),
                    nodes[0].get("accelerator"))
        return (int(desc["number_of_nodes"]) * int(desc["accelerators_per_node"]),
                desc.get("accelerator_model_name"))
    except (KeyError, TypeError, ValueError, IndexError):
        return None, None


def _first(lines, key):
    return next((x for x in lines if x.key == key), None)


def _value(line):
    return line.value.get("value") if line is not None and isinstance(line.value, dict) else None


def _epoch(line):
    meta = line.value.get("metadata") or {} if isinstance(line.value, dict) else {}
    return meta.get("epoch_num")


def eval_seconds(lines):
    """Seconds inside eval_start .. eval_stop, paired by epoch_num (first of each)."""
    starts, stops = {}, {}
    for x in lines:
        if x.key in ("eval_start", "eval_stop"):
            (starts if x.key == "eval_start" else stops).setdefault(_epoch(x), x.timestamp)
    return sum(stops[e] - starts[e] for e in starts if e in stops and stops[e] >= starts[e]) / 1000


def records_of(lines):
    """The run log's lines a published result amounts to (tools/report/runs.py's records)."""
    start = _first(lines, "run_start")
    if start is None:
        return []
    since = lambda x: (x.timestamp - start.timestamp) / 1000  # noqa: E731
    batch = _value(_first(lines, "global_batch_size"))
    records = [{"event": "start", "epoch": 0.0, "step": None, "elapsed_s": 0.0,
                "global_batch": batch}]
    for x in lines:
        if x.key == "eval_accuracy" and isinstance(_value(x), (int, float)) and \
                x.timestamp >= start.timestamp:
            records.append({"event": "eval", "epoch": _epoch(x), "step": None,
                            "elapsed_s": since(x), "val_top1": _value(x), "val_top5": None,
                            "global_batch": batch})
    stops = [x for x in lines if x.key == "run_stop"]
    if stops:
        ttt = since(stops[-1])
        evals = [r for r in records if r["event"] == "eval" and r["epoch"] is not None]
        samples = _value(_first(lines, "train_samples")) or _value(
            _first(lines, "preproc_num_train_examples"))
        epochs = evals[-1]["epoch"] if evals else None
        train_s = ttt - eval_seconds(lines)
        rate = samples * epochs / train_s if samples and epochs and train_s > 0 else None
        records.append({"event": "end", "epoch": epochs, "step": None, "elapsed_s": ttt,
                        "images_per_s": rate, "global_batch": batch,
                        "status": ((stops[-1].value or {}).get("metadata") or {}).get("status")})
    return records


def load_published(path, name=None):
    """A result file as a Run (``published`` set), or ReportError (one line)."""
    lines, bad, ruleset = parse(path)
    if _first(lines, "run_start") is None:
        raise ReportError(f"{path}: an MLPerf log without run_start ({len(lines)} lines read, "
                          f"{bad} unreadable): pass a complete result_N.txt")
    system, desc = system_of(path)
    count, model = accelerators(desc)
    org = _value(_first(lines, "submission_org")) or "?"
    records = records_of(lines)
    if count:
        records[0]["world_size"] = count
    framework = (desc or {}).get("framework") or "framework not described"
    run = Run(name=name or f"{org} {system or os.path.basename(path)}", path=path,
              records=records, config={"device": model or "accelerator",
                                       "mlperf": {"target_top1": TARGET}})
    run.mlperf = lines
    run.published = {"org": org, "system": system, "accelerators": count,
                     "ruleset": ruleset, "library": f"{framework} (MLPerf {org})"}
    if bad:
        run.warnings.append(f"{path}: {bad} MLPerf lines unreadable; skipped")
    return run
