"""tools/report on golden logs of real short runs (tests/golden/README.md says how they were made).

Expected values are read off the golden log.jsonl files by hand (the arithmetic is in the
comments), not computed by the code under test.
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import PYTHON, REPO
from tools.report.__main__ import main

GOLDEN = os.path.join(REPO, "tests", "golden")
B16, B32, FUTURE = (os.path.join(GOLDEN, n) for n in ("batch16", "batch32", "future-keys"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report_cli(*args):
    """The command in a subprocess: exit status and stderr exactly as a user sees them."""
    return subprocess.run([PYTHON, "-m", "tools.report", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def report(*args):
    """The same command in this process (saves importing matplotlib for every test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code
            if isinstance(code, str):
                print(code, file=err)
                code = 1
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def table(stdout, index=0):
    """The index-th pipe table printed: {first cell: [other cells]}."""
    tables, current = [], []
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    rows = tables[index]
    return {r[0]: r[1:] for r in rows[:1] + rows[2:]}   # header kept under its first cell


def copy_run(src, dst, lines=None, edit=None):
    """A copy of a golden run; ``lines`` keeps the first N log lines, ``edit`` maps the list."""
    shutil.copytree(src, dst)
    with open(os.path.join(src, "log.jsonl")) as f:
        text = f.read().splitlines()
    text = text[:lines] if lines else text
    text = edit(text) if edit else text
    with open(os.path.join(dst, "log.jsonl"), "w") as f:
        f.write("\n".join(text) + "\n")
    return str(dst)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "report"
    proc = report(B16, B32, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc, str(out)


def test_per_run_table_of_two_golden_runs(two_runs):
    proc, _ = two_runs
    t = table(proc.stdout)
    assert t[""] == ["batch16", "batch32"]
    assert t["log"] == ["completed", "completed"]
    assert t["processors"] == ["1 × CPU rank", "1 × CPU rank"]
    assert t["batch schedule"] == ["16", "32"]
    assert t["epochs"] == ["6.00", "6.00"]
    assert t["steps"] == ["90", "45"]
    assert t["wall time"] == ["5.1 s", "5.4 s"]              # end lines: 5.076433, 5.403061
    assert t["top-1 final"] == ["38.75%", "30.00%"]           # last eval lines
    assert t["top-1 best"] == ["47.50% (epoch 5.00)", "30.00% (epoch 6.00)"]
    assert t["top-5 final"] == ["95.00%", "90.00%"]
    # thresholds come from the runs' eval.top1_thresholds [0.25, 0.4, 0.5]; first eval
    # reaching them: batch16 0.25 at elapsed 2.482857 (epoch 3), 0.4 at 4.040086 (epoch 5);
    # batch32 0.275 at 4.477912 (epoch 5.066667)
    assert t["time to top-1 ≥ 25%"] == ["2.5 s (epoch 3.00)", "4.5 s (epoch 5.07)"]
    assert t["time to top-1 ≥ 40%"] == ["4.0 s (epoch 5.00)", "not reached"]
    assert t["time to top-1 ≥ 50%"] == ["not reached", "not reached"]
    assert t["images/s"] == ["328", "310"]                    # end lines: 327.85, 310.39
    assert "scaling efficiency" not in t                      # same number of ranks
    assert t["all-reduce share"] == ["n/a", "n/a"]            # not logged by this trainer
    # last cumulative data_wait_s / sum of epoch-line seconds (240 images / images_per_s
    # for batch16: 4.3918 s; batch32: 4.6381 s): 0.07885/4.3918, 0.075547/4.6381
    assert t["data-wait share"] == ["1.8%", "1.6%"]


def test_comparison_table_in_the_papers_form(two_runs):
    proc, _ = two_runs
    t = table(proc.stdout, 1)
    assert t["run"] == ["batch", "processors", "library", "time", "top-1"]
    assert t["batch16"] == ["16", "1 × CPU rank", "nnabla 1.39.0", "5.1 s", "38.75%"]
    assert t["batch32"] == ["32", "1 × CPU rank", "nnabla 1.39.0", "5.4 s", "30.00%"]
    assert "Reported by others" not in proc.stdout            # only with --paper


def test_plots_are_real_pngs_and_the_report_embeds_them(two_runs):
    import matplotlib.image
    _, out = two_runs
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        md = f.read()
    names = ["top1_vs_time.png", "top1_vs_epoch.png", "loss.png", "batch_and_lr.png",
             "images_per_s.png", "shares.png"]
    for name in names:
        path = os.path.join(out, name)
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC, name
        assert os.path.getsize(path) > 10_000, name          # a drawn figure, not a stub
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width == 700 and height >= 450, name          # decodes; 7 in x 100 dpi
        assert f"]({name})" in md
    assert "| top-1 final" in md and "Reported by others" in md and "75.03%" in md
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_future_keys_stage_resume_allreduce_and_efficiency(tmp_path):
    """The hand-edited run (tests/golden/README.md): 2 ranks, 16->32, resumed at step 45."""
    proc = report(B16, FUTURE, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    t = table(proc.stdout)
    assert t["log"][1] == "completed, resumed 1×"
    assert t["processors"][1] == "2 × CPU rank"
    assert t["batch schedule"][1] == "16→32"                  # from the two stage events
    # resumed, so from the step lines: 45 x 16 + 45 x 32 = 2160 images over the same
    # 4.39004 s as batch16's step lines (ips doubled with the batch) = 492.0
    assert t["images/s"] == ["328", "492"]
    assert t["scaling efficiency"] == ["100.0%", "75.0%"]     # 492.02 / 2 / 327.85
    # sum(allreduce_s) 0.45 / 4.39175 s of epoch lines = 10.25%
    assert t["all-reduce share"] == ["n/a", "10.2%"]
    # sum(data_wait_frac x epoch seconds) / 4.39175 = 0.07112
    assert t["data-wait share"][1] == "7.1%"
    assert t["top-1 final"] == ["38.75%", "38.75%"]
    c = table(proc.stdout, 1)
    assert c["future-keys"][2] == "nnabla 1.39.0 + torus2d 2×1"
    assert "relative to batch16" in proc.stdout
    # The first attempt's step-50 line (loss 99.0) was redone and must be gone.
    with open(tmp_path / "r" / "series" / "future-keys" / "Train-loss.series.txt") as f:
        loss = dict(line.split() for line in f)
    assert loss["50"] == "1.95237" and "99" not in loss.values()


def test_a_second_start_line_also_marks_a_resume(tmp_path):
    run = copy_run(FUTURE, tmp_path / "restart", edit=lambda lines: [
        x.replace('"event": "resume"', '"event": "start"') for x in lines])
    proc = report(run, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    t = table(proc.stdout)
    assert t["log"] == ["completed, resumed 1×"] and t["images/s"] == ["492"]


def test_cumulative_data_wait_restarting_after_a_resume(tmp_path):
    """A resumed process counts data_wait_s from 0 again: same share as without the resume."""
    def resume_at_45(lines):
        out, after = [], False
        for x in lines:
            r = json.loads(x)
            if after and r["event"] == "epoch":
                r["data_wait_s"] = round(r["data_wait_s"] - 0.05804, 6)   # restarted counter
            out.append(json.dumps(r))
            if r["event"] == "eval" and r["step"] == 45:
                out.append(json.dumps({"event": "resume", "step": 45, "epoch": 3.0,
                                       "elapsed_s": r["elapsed_s"]}))
                after = True
        return out
    run = copy_run(B16, tmp_path / "b16-resumed", edit=resume_at_45)
    proc = report(run, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout)["data-wait share"] == ["1.8%"]


def test_partial_log_is_reported_as_such(tmp_path):
    # the first 17 lines end with the step-50 line: no "end"; summary.json is a stale copy
    run = copy_run(B16, tmp_path / "running", lines=17)
    proc = report(run, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    t = table(proc.stdout)
    assert t["log"] == ["partial (running or crashed)"]
    assert t["epochs"] == ["3.33"] and t["steps"] == ["50"]
    assert t["wall time"] == ["2.7 s"]                         # last elapsed_s 2.720304
    assert t["top-1 final"] == ["25.00%"]                      # eval at step 45
    assert t["time to top-1 ≥ 25%"] == ["2.5 s (epoch 3.00)"]
    assert t["time to top-1 ≥ 40%"] == ["not reached yet"]
    # 10 step lines of 80 images over sum(80 / images_per_s) = 800 / 2.39616 = 333.9
    assert t["images/s"] == ["334"]
    assert t["data-wait share"] == ["2.7%"]                    # 0.05804 / 2.15958 s
    assert "(partial)" in table(proc.stdout, 1)["running"][3]


def test_log_with_only_a_start_line(tmp_path):
    run = copy_run(B16, tmp_path / "starting", lines=1)
    proc = report(run, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    t = table(proc.stdout)
    assert t["top-1 final"] == ["n/a"] and t["images/s"] == ["n/a"]
    assert t["time to top-1 ≥ 25%"] == ["not reached yet"]
    assert os.path.getsize(tmp_path / "r" / "top1_vs_time.png") > 5_000


def test_malformed_lines_are_named_and_skipped(tmp_path):
    def damage(lines):
        lines = list(lines)
        lines.insert(2, '{"event": "step", "step": 7,')                     # line 3
        lines.insert(5, '[1, 2]')                                           # line 6
        lines[9] = lines[9].replace('"elapsed_s": ', '"elapsed_s": "x", "was": ')  # line 10
        return lines
    run = copy_run(B16, tmp_path / "damaged", edit=damage)
    with open(os.path.join(run, "log.jsonl"), "a") as f:
        f.write('{"event": "step", "epoch": 6.3')               # line 35 (32 + 2 inserted + 1), being written
    proc = report(run, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 4, proc.stderr
    assert "line 3: not valid JSON" in warnings[0]
    assert "line 6: not a log record" in warnings[1]
    assert "line 10: elapsed_s='x' is not a number" in warnings[2]
    assert "line 35: incomplete last line" in warnings[3]
    t = table(proc.stdout)
    assert t["top-1 final"] == ["38.75%"] and t["log"] == ["completed"]
    with open(tmp_path / "r" / "report.md") as f:
        assert "line 3: not valid JSON" in f.read()


@pytest.mark.parametrize("setup,message", [
    ("missing-dir", "is not a directory"),
    ("no-log", "log.jsonl not found"),
    ("empty-log", "is empty"),
    ("garbage-log", "has no readable line"),
])
@pytest.mark.procs
def test_unreadable_runs_are_one_line_errors_before_any_output(setup, message, tmp_path):
    run = tmp_path / "run"
    if setup != "missing-dir":
        run.mkdir()
    if setup == "empty-log":
        (run / "log.jsonl").write_text("\n")
    if setup == "garbage-log":
        (run / "log.jsonl").write_text("not json\n")
    out = tmp_path / "out"
    proc = report_cli(B16, str(run), "--out", str(out))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("value", ["75", "0.5,abc", "0"])
@pytest.mark.procs
def test_bad_thresholds_are_refused(value, tmp_path):
    proc = report_cli(B16, "--thresholds", value, "--out", str(tmp_path / "o"))
    assert proc.returncode != 0 and "--thresholds" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_thresholds_option_and_paper_rows(tmp_path):
    proc = report(B16, "--thresholds", "0.2,0.45", "--paper", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    t = table(proc.stdout)
    # first eval >= 0.2: 0.25 at step 45 (2.482857 s); >= 0.45: 0.475 at 4.040086 s
    assert t["time to top-1 ≥ 20%"] == ["2.5 s (epoch 3.00)"]
    assert t["time to top-1 ≥ 45%"] == ["4.0 s (epoch 5.00)"]
    assert "time to top-1 ≥ 25%" not in t
    paper = table(proc.stdout, 2)
    assert paper["Sony (Mikami et al., v1)"] == ["34K→68K", "V100 ×2176", "NNL (nnabla)",
                                                 "224 s", "75.03%"]
    assert "Reported by others" in proc.stdout


@pytest.mark.procs
def test_default_output_directory(tmp_path):
    run = copy_run(B16, tmp_path / "demo")
    proc = report_cli(run)                                    # the real command, end to end
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(tmp_path / "demo" / "report" / "report.md")


# --- nnabla Monitor series --------------------------------------------------------------
def test_series_match_what_nnabla_monitorseries_writes(two_runs, tmp_path):
    """Byte for byte: feed the same points to nnabla's own MonitorSeries."""
    import nnabla.monitor as M
    _, out = two_runs
    ours = os.path.join(out, "series", "batch16")
    assert sorted(os.listdir(ours)) == sorted([
        "Train-loss.series.txt", "Learning-rate.series.txt", "Global-batch.series.txt",
        "Images-per-second.series.txt", "Epoch.series.txt", "Elapsed-seconds.series.txt",
        "Validation-loss.series.txt", "Validation-error.series.txt",
        "Validation-top1.series.txt", "Validation-top5.series.txt",
        "Data-wait-share.series.txt"])                      # no all-reduce in this log
    with open(os.path.join(B16, "log.jsonl")) as f:
        records = [json.loads(x) for x in f]
    monitor = M.Monitor(str(tmp_path))
    for name, event, key, fn in [("Train loss", "step", "train_loss", None),
                                 ("Learning rate", "step", "lr", None),
                                 ("Global batch", "step", "global_batch", None),
                                 ("Validation error", "eval", "val_top1", lambda v: 1 - v)]:
        series = M.MonitorSeries(name, monitor, interval=1, verbose=False)
        for r in records:
            if r["event"] == event:
                series.add(r["step"], fn(r[key]) if fn else r[key])
        file = name.replace(" ", "-") + ".series.txt"
        with open(tmp_path / file) as a, open(os.path.join(ours, file)) as b:
            assert b.read() == a.read(), file
    with open(os.path.join(ours, "Validation-error.series.txt")) as f:
        assert f.readline() == "15 0.925\n"                  # 1 - 0.075 at step 15


@pytest.mark.procs
def test_nnabla_reads_and_plots_the_series(two_runs, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nnabla.monitor as M
    _, out = two_runs
    loss = os.path.join(out, "series", "batch16", "Train-loss.series.txt")
    top1 = os.path.join(out, "series", "batch32", "Validation-top1.series.txt")
    plt.figure()
    M.plot_series(loss)                                       # nnabla's own reader
    x, y = plt.gca().get_lines()[0].get_data()
    plt.close("all")
    assert list(x) == list(range(5, 95, 5)) and y[0] == pytest.approx(2.294059, abs=1e-5)
    png = tmp_path / "cli.png"
    cli = os.path.join(os.path.dirname(sys.executable), "nnabla_cli")
    proc = subprocess.run([cli, "plot_series", "-o", str(png), "-l", "loss", "-l", "top1",
                           loss, top1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def mllog(key, time_ms, value=None, **metadata):
    return ":::MLLOG " + json.dumps({"namespace": "", "time_ms": time_ms, "event_type": "x",
                                     "key": key, "value": value, "metadata": metadata})


@pytest.mark.parametrize("stop,ttt,to_target", [
    (True, "10.0 s (success)", "4.0 s (top-1 ≥ 75.9%)"),   # run_stop - run_start; first >= 0.759
    (False, "no run_stop yet", "4.0 s (top-1 ≥ 75.9%)"),
])
def test_mlperf_time_to_train_from_mlperf_log(tmp_path, stop, ttt, to_target):
    run = copy_run(B16, tmp_path / "run")
    lines = [mllog("init_start", 999000), mllog("run_start", 1_000_000),
             mllog("eval_accuracy", 1_002_000, 0.5, epoch_num=1),
             mllog("eval_accuracy", 1_004_000, 0.76, epoch_num=2),
             mllog("eval_accuracy", 1_006_000, 0.8, epoch_num=3)]
    lines += [mllog("run_stop", 1_010_000, status="success")] if stop else []
    with open(os.path.join(run, "mlperf.log"), "w") as f:
        f.write("\n".join(lines) + "\n")
    t = table(report(run, "--out", str(tmp_path / "r")).stdout)
    assert t["MLPerf time-to-train"] == [ttt]
    assert t["MLPerf time to target"] == [to_target]


def test_runs_without_mlperf_log_say_so(two_runs):
    proc, _ = two_runs
    assert table(proc.stdout)["MLPerf time-to-train"] == ["n/a (no mlperf.log)"] * 2
