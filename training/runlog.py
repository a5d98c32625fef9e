"""The run's record: ``log.jsonl`` (one JSON object per line) and ``summary.json``.

This is the contract the report tool and users read (docs/training.md, "Logs"). Every line carries the
same core keys, ``null`` where a key does not apply to the event, so a reader never has to
guess whether a key is missing or just not measured::

    event        "start" | "step" | "epoch" | "eval" | "end" (later events may add kinds)
    epoch        fractional epochs completed by the whole job when the line was written
    step         updates completed
    elapsed_s    training wall time in seconds (setup excluded), cumulative over resumes
    train_loss   mean training loss since the previous line of the same event
    val_top1     validation accuracy, a fraction in [0, 1]
    val_top5
    global_batch samples per update at that point
    lr           learning rate of the last update
    images_per_s training throughput of the whole job since the previous line

Only rank 0 writes. Lines are flushed as they are written, so a crashed or running job
leaves a readable partial log. With ``tensorboard`` the same lines also go to TensorBoard
event files in OUTPUT_DIR/tb/ (training/tensorboard.py).
"""
import json
import math
import os
from typing import NamedTuple

CORE_KEYS = ("event", "epoch", "step", "elapsed_s", "train_loss", "val_top1", "val_top5",
             "global_batch", "lr", "images_per_s")


def _clean(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, 6)
    return value


class EvalResult(NamedTuple):
    """One evaluation, as the run's history keeps it (a list of five in a checkpoint)."""
    epoch: float
    step: int
    elapsed_s: float
    top1: float
    top5: float


class RunLog:
    def __init__(self, output_dir, enabled=True, thresholds=(), append=False, evals=(),
                 tensorboard=False):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "log.jsonl")
        self.summary_path = os.path.join(output_dir, "summary.json")
        self.thresholds = sorted(thresholds)
        self.evals = [EvalResult(*e) for e in evals]   # a checkpoint stores them as lists
        self._file = None
        self._sinks = []
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            self._file = open(self.path, "a" if append else "w")
            if tensorboard:
                from .tensorboard import TensorBoardSink
                self._sinks.append(TensorBoardSink(output_dir))

    def write(self, event, **fields):
        record = {k: None for k in CORE_KEYS}
        record.update(fields)
        record["event"] = event
        if event == "eval":
            self.evals.append(EvalResult(record["epoch"], record["step"], record["elapsed_s"],
                                         record["val_top1"], record["val_top5"]))
        if self._file:
            cleaned = {k: _clean(v) for k, v in record.items()}
            self._file.write(json.dumps(cleaned) + "\n")
            self._file.flush()
            for sink in self._sinks:
                sink.write(cleaned)
        return record

    def summary(self, **fields):
        """The end-of-run digest: accuracies, time to each top-1 threshold, plus ``fields``."""
        final = self.evals[-1] if self.evals else None
        best = max(self.evals, key=lambda e: e.top1) if self.evals else None
        time_to = {}
        for t in self.thresholds:
            hit = next((e for e in self.evals if e.top1 >= t), None)
            time_to[f"{t:g}"] = hit.elapsed_s if hit else None
        out = {
            "final_val_top1": final.top1 if final else None,
            "final_val_top5": final.top5 if final else None,
            "best_val_top1": best.top1 if best else None,
            "best_val_top1_epoch": best.epoch if best else None,
            "time_to_top1": time_to,
        }
        out.update(fields)
        return {k: _clean(v) for k, v in out.items()}

    def write_summary(self, summary):
        if self.enabled:
            tmp = self.summary_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(summary, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.summary_path)

    def close(self):
        if self._file:
            self._file.close()
            self._file = None
        for sink in self._sinks:
            sink.close()


def rewrite_lines(path, keep):
    """Rewrite ``path`` with what ``keep(line)`` returns for each line (None drops it), to a
    temporary file and renamed, like every output. Returns the number of lines dropped; a
    missing file is left alone."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            text = keep(line)
            if text is None:
                dropped += 1
            else:
                kept.append(text)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    return dropped


def truncate_log(path, step):
    """Keep the lines of ``path`` written up to update ``step`` (a resume redoes the rest).

    A line cut short by a killed process (not valid JSON) is dropped too. Returns the number
    of lines removed.
    """
    def keep(line):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        # A "stage" line at the checkpoint's step was written after the checkpoint (when the
        # next update began a stage): the resumed run writes it again.
        if record.get("step") is not None and (record["step"] > step or (
                record["step"] == step and record.get("event") == "stage")):
            return None
        return json.dumps(record) + "\n"

    return rewrite_lines(path, keep)
