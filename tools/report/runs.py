"""Reading one run directory: log.jsonl, summary.json and config.yaml (docs/training.md, "Logs").

The reader is lenient about what it does not know and strict about what it cannot read:
unknown events and keys are kept and ignored, a missing optional key means "not measured",
a line that is not a JSON object with an ``event`` is reported with its line number and
skipped, and a missing or empty log is a ``ReportError`` (one line, names the fix).

``mlperf.log`` (MLPerf's ``:::MLLOG`` lines, training/mlperf_log.py) is read with the
mlperf-logging package's own parser when the run has one.

Resumes: a resumed job appends to log.jsonl, and its ``elapsed_s`` continues from the
checkpoint. A ``resume`` event (or a second ``start``) at step S starts a new segment; lines
of the earlier attempt after step S describe work that was thrown away and redone, so they
are dropped from the timeline.
"""
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

import yaml

NUMERIC_KEYS = ("epoch", "step", "elapsed_s", "train_loss", "val_top1", "val_top5",
                "global_batch", "lr", "images_per_s")
SEGMENT_EVENTS = ("start", "resume")


class ReportError(Exception):
    """A run cannot be reported; the message is one line that says why and what to do."""


@dataclass
class Run:
    name: str
    path: str
    records: List[dict]                  # the timeline, redone work removed, in log order
    warnings: List[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: Optional[dict] = None       # only when the log has an "end" line (else stale)
    resumes: int = 0
    mlperf: Optional[list] = None        # mlperf.log's lines (mlp_parser LogLines), if any
    published: Optional[dict] = None     # a published MLPerf result file (published.py)

    def events(self, *kinds):
        return [r for r in self.records if r["event"] in kinds]

    @property
    def start(self):
        starts = self.events("start")
        return starts[0] if starts else {}

    def section(self, name):
        """A config section as a dict ({} if absent or not a mapping)."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def completed(self):
        return bool(self.records) and self.records[-1]["event"] == "end"


def _is_number(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def read_log(path):
    """Valid records and one warning per skipped line. Raises ReportError if nothing usable."""
    if not os.path.isfile(path):
        raise ReportError(f"{path} not found: each RUN_DIR must be an output directory of "
                          "train_resnet50.py (its --output-dir), which holds log.jsonl")
    records, warnings, lines = [], [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            lines += 1
            try:
                record = json.loads(text)
            except ValueError as e:
                why = (f"not valid JSON ({e.msg})" if text.endswith("\n") else
                       "incomplete last line (the run may be writing it)")
                warnings.append(f"{path} line {lineno}: {why}; skipped")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("event"), str):
                warnings.append(f"{path} line {lineno}: not a log record (no \"event\"); "
                                "skipped")
                continue
            bad = [k for k in NUMERIC_KEYS if not _is_number(record.get(k))]
            if bad:
                warnings.append(f"{path} line {lineno}: {bad[0]}={record[bad[0]]!r} is not a "
                                "number; skipped")
                continue
            records.append(record)
    if lines == 0:
        raise ReportError(f"{path} is empty: the run has not logged anything yet (its first "
                          "line comes after setup); wait for it or check the job's stderr")
    if not records:
        raise ReportError(f"{path} has no readable line ({lines} malformed, first: "
                          f"{warnings[0]})")
    return records, warnings


def drop_redone_work(records):
    """The timeline after resumes, and how many resumes there were."""
    timeline, resumes = [], 0
    for r in records:
        if r["event"] in SEGMENT_EVENTS and timeline:
            resumes += 1
            if r.get("step") is not None:
                timeline = [x for x in timeline if x.get("step") is None
                            or x["step"] <= r["step"] or x["event"] == "start"]
        timeline.append(r)
    return timeline, resumes


def _read_yaml(path, warnings):
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except yaml.YAMLError as e:
        warnings.append(f"{path}: not valid YAML ({str(e).splitlines()[0]}); ignored")
        return None
    return doc if isinstance(doc, dict) else None


def _read_json(path, warnings):
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as e:
        warnings.append(f"{path}: not valid JSON ({e}); ignored")
        return None
    return doc if isinstance(doc, dict) else None


def read_mlperf(path, warnings):
    """The lines of an mlperf.log through mlperf-logging's parser, or None without the file."""
    if not os.path.isfile(path):
        return None
    from mlperf_logging.compliance_checker import mlp_parser
    lines, errors = mlp_parser.parse_file(path, ruleset="4.0.0")
    warnings.extend(f"{path}: unreadable line ({error}); skipped" for _, error in errors)
    return lines


def load_run(path, name=None):
    if not os.path.isdir(path):
        raise ReportError(f"{path} is not a directory: pass run directories written by "
                          "train_resnet50.py (its --output-dir)")
    raw, warnings = read_log(os.path.join(path, "log.jsonl"))
    records, resumes = drop_redone_work(raw)
    run = Run(name=name or os.path.basename(os.path.normpath(path)), path=path,
              records=records, warnings=warnings, resumes=resumes)
    # The resolved config: config.yaml, else the copy in the start line.
    config = _read_yaml(os.path.join(path, "config.yaml"), warnings)
    config = config if config is not None else run.start.get("config")
    run.config = config if isinstance(config, dict) else {}
    # summary.json is written at the end; in a running or restarted directory it may be left
    # over from an earlier run, so it is only trusted when the log itself has ended.
    if run.completed:
        run.summary = _read_json(os.path.join(path, "summary.json"), warnings)
    run.mlperf = read_mlperf(os.path.join(path, "mlperf.log"), warnings)
    return run


def unique_names(paths):
    """Short labels for run directories: the basename, or more of the path if they collide."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{n}#{i + 1}" for i, n in enumerate(names)]   # the same directory twice


def load_runs(paths):
    """All runs, or a ReportError for the first one that cannot be read (before any work).
    A file is a published MLPerf result (tools/report/published.py), a directory a run."""
    from .published import load_published
    dirs = [p for p in paths if not os.path.isfile(p)]
    dir_names = iter(unique_names(dirs) if dirs else [])
    runs = [load_published(p) if os.path.isfile(p) else load_run(p, next(dir_names))
            for p in paths]
    names = [r.name for r in runs]
    for r in runs:       # two result files of one system: tell them apart by file name
        if r.published and names.count(r.name) > 1:
            r.name += " " + os.path.splitext(os.path.basename(r.path))[0]
    return runs
