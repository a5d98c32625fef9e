"""tools/report on real published MLPerf result files (tests/golden/mlperf/README.md), beside a
run of this project.

The expected figures are computed here from the raw lines with a regular expression and
json (not with the report's parser, nor mlperf-logging's), and the headline numbers were also
read off the files by hand (comments).
"""
import json
import os
import re

import pytest

from conftest import REPO
from test_report import B16, report, report_cli, table
from tools.report.published import load_published

GOLDEN = os.path.join(REPO, "tests", "golden", "mlperf")
NVIDIA = os.path.join(GOLDEN, "training_results_v2.0", "NVIDIA", "results",
                      "dgxa100_ngc22.04_mxnet", "resnet", "result_0.txt")
FUJITSU = os.path.join(GOLDEN, "training_results_v0.6", "Fujitsu", "results",
                       "abci_2048xV100_mxnet", "resnet", "result_0.txt")
MLL_V06 = re.compile(r":::MLL (\d+\.\d+) (\w+): (.*)$")


def raw_lines(path):
    """[(milliseconds, key, value dict)] straight from the text."""
    out = []
    with open(path, encoding="latin-1") as f:
        for text in f:
            if ":::MLLOG " in text:
                d = json.loads(text.split(":::MLLOG ", 1)[1])
                out.append((d["time_ms"], d["key"], d))
            else:
                m = MLL_V06.search(text.strip())
                if m:
                    out.append((float(m.group(1)) * 1000, m.group(2), json.loads(m.group(3))))
    return out


def expected(path, accelerators):
    lines = raw_lines(path)
    first = lambda key: next(x for x in lines if x[1] == key)  # noqa: E731
    start, stop = first("run_start")[0], first("run_stop")[0]
    evals = [(x[2]["metadata"]["epoch_num"], x[2]["value"]) for x in lines
             if x[1] == "eval_accuracy"]
    starts = {x[2]["metadata"]["epoch_num"]: x[0] for x in lines if x[1] == "eval_start"}
    stops = {x[2]["metadata"]["epoch_num"]: x[0] for x in lines if x[1] == "eval_stop"}
    eval_s = sum(stops[e] - starts[e] for e in starts) / 1000
    samples = next(x[2]["value"] for x in lines
                   if x[1] in ("train_samples", "preproc_num_train_examples"))
    ttt = (stop - start) / 1000
    return {"ttt": ttt, "evals": evals,
            "epochs_to_target": next(e for e, v in evals if v >= 0.759),
            "per_accelerator": samples * evals[-1][0] / (ttt - eval_s) / accelerators}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    proc = report(B16, NVIDIA, FUJITSU, "--out", str(tmp_path_factory.mktemp("pub")))
    assert proc.returncode == 0, proc.stderr
    return table(proc.stdout), table(proc.stdout, 1)


def test_time_to_train_as_mlperf_counts_it(published):
    t, _ = published
    nv, fj = expected(NVIDIA, 8), expected(FUJITSU, 2048)
    # by hand: run_stop 1652655161518 - run_start 1652653456890 ms = 1704.628 s;
    # v0.6: 1560722749.842 - 1560722679.397 s = 70.445 s
    assert nv["ttt"] == pytest.approx(1704.628) and fj["ttt"] == pytest.approx(70.445)
    assert t[""] == ["batch16", "NVIDIA dgxa100_ngc22.04_mxnet", "Fujitsu abci_2048xV100_mxnet"]
    assert t["MLPerf time-to-train"][1:] == ["28.4 min (success)", "70.4 s (success)"]
    assert t["wall time"][1:] == ["28.4 min", "70.4 s"]
    assert t["log"][1:] == ["completed", "completed"]


def test_epochs_to_target_accelerators_and_throughput(published):
    t, c = published
    nv, fj = expected(NVIDIA, 8), expected(FUJITSU, 2048)
    # by hand: first eval_accuracy >= 0.759 is 0.7606 at epoch_num 35 (NVIDIA) and
    # 0.75978 at epoch_num 90 (Fujitsu); 1 node x 8 A100, 512 nodes x 4 V100
    assert (nv["epochs_to_target"], fj["epochs_to_target"]) == (35, 90)
    assert t["MLPerf epochs to target"] == ["not reached", "35.00", "90.00"]
    assert t["processors"][1:] == ["8 × NVIDIA A100-SXM4-80GB accelerator",
                                   "2048 × Tesla V100-SXM2-16GB accelerator"]
    assert t["batch schedule"][1:] == ["3264", "86016"]
    each = [f"{v:,.0f}" for v in (nv["per_accelerator"], fj["per_accelerator"])]
    assert t["images/s per accelerator"][1:] == each
    # NVIDIA's own throughput lines say about 27,200 img/s on 8 GPUs, 3,400 each
    assert 3000 < nv["per_accelerator"] < 3500
    assert "scaling efficiency" not in t            # not across this project and a result
    assert t["top-1 final"][1:] == ["76.06%", "75.98%"]
    assert c["NVIDIA dgxa100_ngc22.04_mxnet"][2] == \
        "MxNet NVIDIA Release 22.04 (MLPerf NVIDIA)"


def test_the_evaluation_curve_is_every_eval_accuracy_line():
    for path in (NVIDIA, FUJITSU):
        run = load_published(path)
        curve = [(r["epoch"], r["val_top1"]) for r in run.events("eval")]
        assert curve == expected(path, 1)["evals"]
    assert len(load_published(FUJITSU).events("eval")) == 23      # 23 eval_accuracy lines


@pytest.mark.procs
def test_a_file_that_is_not_an_mlperf_log_is_one_line(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("run_start at noon\n")
    proc = report_cli(B16, str(other))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is neither a run directory nor an MLPerf result log" in lines[0]
    assert "Traceback" not in proc.stderr
