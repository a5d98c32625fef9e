"""The scale model against MLPerf's published ResNet-50 runs (issue 26): DGX presets and their
sources, NCCL's all-reduce as the runs used it, the compute fit on the calibration rows, and
``python -m tools.simulate predict`` / ``validate``."""
import json
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, REPO
from scale_model import calibration, mlperf
from scale_model import model as sim
from scale_model.presets import get_preset

DGX = ("dgx1-v100", "dgx2h-v100", "dgxa100-40g", "dgxa100-80g", "dgxh100")
S = sim.RESNET50_PARAMETERS * 2


# --- presets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DGX)
def test_dgx_presets_cite_the_mlperf_system_nccl_and_config(name):
    f = get_preset(name).numeric_fields()
    for key in ("gpus_per_node", "intra_bw_GBps", "inter_adapters", "inter_bw_GBps"):
        assert "mlcommons/training_results_v" in f[key].source and \
            "NVIDIA/systems/" in f[key].source and ".json" in f[key].source, key
    for key in ("intra_alpha_us", "inter_alpha_us", "call_latency_us", "tree_intra_alpha_us",
                "tree_inter_alpha_us", "tree_bw_fraction", "tree_bw_cap_GBps"):
        assert "NVIDIA/nccl src/graph/tuning.cc v2." in f[key].source, key
    for key in ("ref_batch", "allreduce_groups"):
        assert "implementations/mxnet/config_DGX" in f[key].source, key
    for key in ("train_images_per_s", "step_overhead_ms"):
        assert f[key].status == "fitted" and "scale_model/calibration.py" in f[key].source
    assert {v.status for v in f.values()} <= {"confirmed", "measured", "derived", "fitted",
                                               "assumed"}


def test_stored_compute_is_what_the_fit_gives_and_abci_shares_its_gpu():
    fit = calibration.fit_compute()
    assert calibration.presets_in_sync(fit) == []
    for abci, dgx in (("abci2-v100", "dgx1-v100"), ("abci3-h200", "dgxh100")):
        a, d = mlperf.ComputeCurve.from_preset(abci), mlperf.ComputeCurve.from_preset(dgx)
        assert a.overhead_s == pytest.approx(d.overhead_s)
        assert a.peak_images_per_s == pytest.approx(d.peak_images_per_s, rel=1e-3)


def test_a_stale_preset_is_reported():
    fit = calibration.fit_compute()
    fit["peak_images_per_s"]["dgxh100"] *= 1.05
    assert calibration.presets_in_sync(fit) == ["dgxh100"]


# --- NCCL's all-reduce and Horovod's groups -------------------------------------------------------
def test_nccl_picks_ring_in_a_node_and_tree_across_many():
    one = mlperf.nccl_allreduce(S, 8, "dgxa100-80g")
    many = mlperf.nccl_allreduce(S, 4096, "dgxa100-80g")
    assert one["algorithm"] == "ring" and one["seconds"] == one["ring_s"] < one["tree_s"]
    assert many["algorithm"] == "tree" and many["seconds"] == many["tree_s"] < many["ring_s"]
    assert mlperf.nccl_allreduce(S, 1, "dgxh100")["seconds"] == 0


def test_ring_across_nodes_uses_every_adapter():
    p = get_preset("dgxa100-80g")
    half = p.__class__(**{**p.__dict__, "inter_adapters": p.inter_adapters.__class__(
        4, "assumed", "test: half the adapters")})
    big = 4e9                                    # bandwidth-bound
    full, halved = (mlperf.nccl_allreduce(big, 64, x)["ring_s"] for x in (p, half))
    assert halved == pytest.approx(2 * full, rel=0.01)
    network = 8 * 25e9 * 0.9                     # 8 HDR adapters at the assumed 90%
    latency = (8.4 + (2 * 63 - 2 * 7) * 3.4 + 2 * 7 * 9.6) * 1e-6    # NCCL's ring, 8 nodes
    assert full == pytest.approx(latency + 2 * 63 / 64 * big / network, rel=1e-9)


def test_horovod_groups_hide_all_but_the_last_group_under_backward():
    one = mlperf.predict("dgxa100-40g", 16, 3264, groups=1)
    twenty = mlperf.predict("dgxa100-40g", 16, 3264, groups=20)
    assert one["hidden_s"] == 0 and one["exposed_s"] == one["allreduce_s"]
    assert twenty["exposed_s"] == pytest.approx(one["allreduce_s"] / 20)
    assert twenty["step_s"] < one["step_s"]


def test_small_per_gpu_batches_run_below_peak():
    curve = mlperf.ComputeCurve.from_preset("dgxh100")
    assert curve.images_per_s_at(16) < 0.5 * curve.peak_images_per_s
    assert curve.images_per_s_at(400) > 0.9 * curve.peak_images_per_s


# --- the fit -----------------------------------------------------------------------------------
def made_rows(overhead_s, peaks, noise=0.0, seed=0, overheads=None):
    """Rows shaped like the calibration rows whose step times are the model's own at known
    compute (times a little noise); ``overheads`` gives each preset its own overhead."""
    rng = np.random.RandomState(seed)
    rows = []
    for r in calibration.CALIBRATION_ROWS:
        o = (overheads or {}).get(r.preset, overhead_s)
        t = mlperf.predict(r.preset, r.accelerators, r.global_batch,
                           compute=mlperf.ComputeCurve(o, peaks[r.preset]),
                           groups=r.groups)["step_s"]
        rows.append(r.__class__(**{**r.__dict__, "step_ms": t * 1e3 * (1 + noise * rng.randn())}))
    return rows


PEAKS = {"dgx1-v100": 1300.0, "dgx2h-v100": 1500.0, "dgxa100-40g": 2500.0,
         "dgxa100-80g": 3000.0, "dgxh100": 8000.0}


def test_fit_recovers_known_compute_from_made_up_rows():
    fit = calibration.fit_compute(made_rows(5e-3, PEAKS))
    assert fit["overhead_s"] == pytest.approx(5e-3, rel=1e-4)
    for name, peak in PEAKS.items():
        assert fit["peak_images_per_s"][name] == pytest.approx(peak, rel=1e-4)
    r = calibration.validate(made_rows(5e-3, PEAKS))
    assert r["max_abs_error"] < 1e-4 and r["within_target"]


def test_fit_with_noise_stays_near_the_known_compute():
    fit = calibration.fit_compute(made_rows(5e-3, PEAKS, noise=0.02, seed=3))
    assert fit["overhead_s"] == pytest.approx(5e-3, rel=0.15)
    for name, peak in PEAKS.items():
        assert fit["peak_images_per_s"][name] == pytest.approx(peak, rel=0.05)


def test_the_verdict_can_fail_when_presets_do_not_share_an_overhead():
    rows = made_rows(3e-3, PEAKS, overheads={"dgxh100": 12e-3})
    assert not calibration.validate(rows)["within_target"]


def test_the_calibration_rows_are_reproduced_within_the_target():
    r = calibration.validate()
    assert len(r["rows"]) == 14 and r["within_target"]
    assert r["max_abs_error"] <= calibration.TARGET_CALIBRATION
    assert "within 8%" in calibration.error_band(r)


def test_the_paper_runs_are_split_into_parts_that_add_up():
    run = {"name": "v1", "reported_s": 224.0, "gpus": 2176, "stages": [(5, 34816), (90, 69632)]}
    x = calibration.explain_run(run)
    assert x["compute_s"] + x["communication_s"] + x["evaluation_s"] + x["rest_s"] == \
        pytest.approx(224.0)
    assert x["evaluations"] == 90 and 0 < x["evaluation_s"] < 2
    assert x["nccl_communication_s"] < x["communication_s"]     # tree: log2 of the nodes


# --- command line ------------------------------------------------------------------------------
def test_predict_on_a_calibration_row(capsys):
    from tools.simulate import main
    assert main(["predict", "--system", "dgxa100-80g", "--accelerators", "64",
                 "--global-batch", "3264", "--epochs", "37", "--eval-every", "4", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["step_ms"] == pytest.approx(19.6, rel=0.10)          # MLPerf v1.1 n8: 19.6 ms
    assert out["images_per_s"] == pytest.approx(3264 / out["step_ms"] * 1e3)
    assert out["local_batch"] == 51 and out["nodes"] == 8
    assert out["time_to_train_s"] == pytest.approx(out["train_s"] + out["eval_s"])
    assert out["train_s"] == pytest.approx(np.ceil(37 * 1281167 / 3264) * out["step_ms"] / 1e3)
    assert out["calibration_max_abs_error"] <= 0.10


@pytest.mark.parametrize("args,message", [
    (["--system", "dgx9"], "unknown preset 'dgx9'; known presets: abci2-v100"),
    (["--accelerators", "60"], "60 accelerators do not fill whole dgxa100-80g nodes of 8 GPUs"),
    (["--global-batch", "3265"], "global batch 3265 is not divisible by 64 accelerators"),
    (["--eval-every", "4"], "--eval-every needs --epochs"),
    (["--accelerators", "0"], "'0' must be positive"),
])
def test_predict_errors_are_one_line(args, message, capsys):
    from tools.simulate import main
    base = {"--system": "dgxa100-80g", "--accelerators": "64", "--global-batch": "3264"}
    base.update(dict(zip(args[::2], args[1::2])))
    assert main(["predict", *[v for kv in base.items() for v in kv]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_validate_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    from tools.simulate import main
    png = tmp_path / "validation.png"
    assert main(["validate", "--markdown", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| dgxa100-80g | dgxa100_n8_ngc21.09_mxnet (v1.1) | 64 | 8 | 3,264 | 51 | 19.6 |" in out
    assert "within the target" in out and "v1: 224 s" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.procs
def test_predict_entry_point_prints_one_json_line():
    r = subprocess.run([PYTHON, "-m", "tools.simulate", "predict", "--system", "dgxh100",
                        "--accelerators", "8", "--global-batch", "3200", "--json"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["step_ms"] == pytest.approx(57.1, rel=0.10)           # MLPerf v3.0: 57.1 ms
