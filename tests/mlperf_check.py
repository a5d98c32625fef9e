"""Read an mlperf.log and run MLPerf's compliance checker on it, as a user would (shared by
test_mlperf_log.py and test_resume.py).

    keys, text = compliance_failures(path, cwd)   # the rule keys its failure messages name
"""
import json
import re
import subprocess
import sys

from training.mlperf_log import TOKEN


def mllog_lines(path):
    with open(path) as f:
        return [json.loads(line.split(TOKEN, 1)[1]) for line in f if TOKEN in line]


def comparable(lines):
    """The lines without what differs between processes and runs (time, caller)."""
    return [(x["key"], x["value"], {k: v for k, v in x["metadata"].items()
                                    if k not in ("file", "lineno")}) for x in lines]


def compliance_failures(path, cwd):
    """Run MLPerf's checker as a user would; the keys its failure messages name."""
    proc = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker",
                           "--usage", "training", "--ruleset", "4.0.0", path],
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    text = proc.stdout + proc.stderr
    keys = set(re.findall(r"CHECK for '(\w+)' failed", text))
    keys |= set(re.findall(r"occurrence of '(\w+)'", text))
    keys |= set(re.findall(r"Failed checks for (\w+) :", text))
    if "parsing errors" in text:
        keys.add("<unparsable lines>")
    assert ("SUCCESS" in text) == (proc.returncode == 0 and not keys), text
    return keys, text


def toy_failures(best_top1):
    """What a toy run of batch-size control cannot meet: MLPerf's 75.9% target (when it stays
    below it) and one global_batch_size for the whole run (docs/mlperf_log.md)."""
    return {"global_batch_size"} | ({"eval_accuracy"} if best_top1 < 0.759 else set())
