"""The scale model's per-tier fit on emulated-cluster rows (scale_model/fit_cluster.py,
``python -m tools.simulate fit-cluster``): recovery of known tiers, the rail and bucket
accounting, bad input, and the fit on the recorded rows of tests/golden/cluster_bench.jsonl."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from scale_model import fit_cluster as fc  # noqa: E402
from scale_model.model import SimError  # noqa: E402

PYTHON = sys.executable
GOLDEN = os.path.join(REPO, "tests", "golden", "cluster_bench.jsonl")
# intra 30 us + 500 MB/s per rank, a rail at 90% of its tbf rate after 200 us, 40 us per call
KNOWN = np.array([30e-6, 1 / 500e6, 200e-6, 1 / 0.9, 40e-6])
SHAPES = ((4, 2, 2, True), (2, 4, 2, True), (8, 1, 2, True), (4, 2, 1, True),
          (4, 2, 2, False))


def row_obj(nodes, g, rails, rpr, algorithm, nbytes, message="array", time_us=1.0, **extra):
    return {"ranks": nodes * g, "grid": f"{g}x{nodes}", "algorithm": algorithm,
            "message": message, "arrays": 1, "bytes": nbytes, "time_us": time_us,
            "bucket_mb": 4.0, "nodes": nodes, "ranks_per_node": g, "rails": rails,
            "rail_per_rank": rpr, "rate_mbit": 200, "coll": "default",
            "component": "han" if algorithm in fc.LIBRARY_ALGORITHMS else None, **extra}


def made_rows(p, noise=0.0, seed=0, shapes=SHAPES):
    """Rows whose times are the model's own at parameters p (times a little noise)."""
    rng = np.random.RandomState(seed)
    rows = []
    for shape in shapes:
        for algorithm in fc.MODEL_ALGORITHMS + fc.LIBRARY_ALGORITHMS:
            for nbytes in [4096 * 4 ** k for k in range(7)] + [25_557_032 * 4]:
                row = fc._row(row_obj(*shape, algorithm, nbytes), "made", len(rows) + 1)
                t = fc.predict_seconds(row, p) * 1e6 * (1 + noise * rng.randn())
                rows.append(fc._row(row_obj(*shape, algorithm, nbytes, time_us=t), "made",
                                    len(rows) + 1))
    return rows


# --- recovery of known tiers ------------------------------------------------------------------
# Every algorithm the model has and every size: five parameters need small messages (alphas)
# as well as large ones; the recorded rows' default fit counts fewer (test below).
EVERY = {"fit_algorithms": fc.MODEL_ALGORITHMS, "min_bytes": 0}


# Two fit shapes: on 4x2 alone torus2d and hierarchical both pay 6 intra steps and 3 calls per
# bucket (a reduce and a broadcast take X-1 steps, as comm/plan.py counts them) and the ring
# crosses nodes, so intra alpha and the call latency are not told apart; 2x4's rows are shorter.
FIT_SHAPES = "4x2:2,2x4:2"


def test_fit_recovers_known_tiers_exactly_without_noise():
    r = fc.calibrate_cluster(made_rows(KNOWN), FIT_SHAPES, **EVERY)
    assert np.allclose(list(r["parameters"].values()), KNOWN, rtol=1e-4)
    assert r["tiers"]["inter_MBps_per_rail"] == {"200": pytest.approx(22.5, rel=1e-4)}
    assert r["summary"]["held_out"]["max_abs_error"] < 1e-4
    assert {g["shape"] for g in r["summary"]["groups"] if g["set"] == "held out"} == \
        {"8x1", "4x2"}


def test_fit_with_noise_stays_near_the_known_tiers_and_predicts_held_out_shapes():
    r = fc.calibrate_cluster(made_rows(KNOWN, noise=0.03, seed=1), FIT_SHAPES, **EVERY)
    t = r["tiers"]
    assert t["inter_rate_fraction"] == pytest.approx(0.9, rel=0.05)
    assert t["inter_alpha_us"] == pytest.approx(200, rel=0.15)
    held = r["summary"]["held_out"]
    assert held["median_abs_error"] < 0.05 and held["max_abs_error"] < 0.15
    assert r["summary"]["meets_target"]


def test_a_wrong_model_misses_the_target():
    """The verdict can fail: rows made with rails that stripe are predicted as rail per rank."""
    rows = made_rows(KNOWN, shapes=((4, 2, 2, True), (8, 1, 2, False)))
    relabelled = [fc._row(row_obj(r.shape.nodes, r.shape.ranks_per_node, 2, True, r.algorithm,
                                  r.bytes, time_us=r.time_us), "made", r.line) for r in rows]
    s = fc.calibrate_cluster(relabelled, "4x2:2", **EVERY)["summary"]
    assert not s["meets_target"] and s["held_out"]["max_abs_error"] > 0.4


# --- accounting ---------------------------------------------------------------------------------
def test_striped_rails_give_one_flow_every_rail_and_rail_per_rank_one():
    big = 64 * 2 ** 20
    def t(shape, algorithm="torus2d"):
        return fc.predict_seconds(fc._row(row_obj(*shape, algorithm, big), "t", 1), KNOWN)
    # 8x1: the one column ring gets both rails when striped, one rail per rank (rail 0)
    assert t((8, 1, 2, False)) < 0.55 * t((8, 1, 2, True))
    assert t((8, 1, 2, True)) == pytest.approx(t((8, 1, 1, True)))
    # 4x2: two column rings, one per rail, or both striped over both: the same bandwidth
    assert t((4, 2, 2, False)) == pytest.approx(t((4, 2, 2, True)), rel=1e-9)
    # one rail for two column rings: half the bandwidth of two
    assert t((4, 2, 1, True)) > 1.8 * t((4, 2, 2, True))
    # the flat ring crosses each node boundary once, on one rail either way
    assert t((4, 2, 2, True), "ring") == pytest.approx(t((4, 2, 1, True), "ring"))


def test_messages_are_cut_into_comm_buckets_and_plain_is_one_call():
    ten = 10 * 2 ** 20
    assert fc.buckets(fc._row(row_obj(4, 2, 2, True, "ring", ten), "t", 1)) == \
        [(4 * 2 ** 20, 2), (2 * 2 ** 20, 1)]
    assert fc.buckets(fc._row(row_obj(4, 2, 2, True, "plain", ten), "t", 1)) == [(ten, 1)]
    # a torus bucket is padded to a multiple of X elements, as comm/plan.bucket_layout does
    assert fc.buckets(fc._row(row_obj(2, 4, 2, True, "torus2d", 4 * 6), "t", 1)) == [(32, 1)]


def test_library_rows_are_modelled_by_component():
    han = fc._row(row_obj(4, 2, 2, True, "native", 4096), "t", 1)
    tuned = fc._row({**row_obj(4, 2, 2, True, "plain", 4096), "component": "tuned"}, "t", 1)
    assert han.model_algorithm() == ("hierarchical", "han as hierarchical")
    assert tuned.model_algorithm() == ("ring", "tuned as ring")


# --- bad input ----------------------------------------------------------------------------------
def write(tmp_path, objs):
    path = tmp_path / "rows.jsonl"
    path.write_text("# a table line\n" + "".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


@pytest.mark.parametrize("change,message", [
    ({"rails": None}, "line 2: no rails; cluster rows need"),
    ({"ranks": 6}, "ranks=6 but nodes x ranks_per_node = 4 x 2"),
    ({"algorithm": "tree"}, "unknown algorithm 'tree'"),
    ({"time_us": 0}, "must be positive"),
    ({"grid": "3x3"}, "grid 3x3 has 9 ranks"),
    ({"algorithm": "hierarchical", "grid": "4x2"}, "record hierarchical with comm.grid=auto"),
])
def test_bad_rows_name_the_problem(tmp_path, change, message):
    obj = {k: v for k, v in {**row_obj(4, 2, 2, True, "ring", 4096), **change}.items()
           if v is not None}
    with pytest.raises(SimError, match=message):
        fc.read_cluster_rows(write(tmp_path, [obj]))


def test_no_rows_of_the_fit_shape_is_one_clear_error():
    rows = made_rows(KNOWN, shapes=((2, 4, 2, True), (8, 1, 2, True)))
    with pytest.raises(SimError, match=r"no rows of the fit shapes 4x2:2 .*the file has "
                                       r"2x4 on 2 per rank rails; 8x1 on 2 per rank rails"):
        fc.calibrate_cluster(rows, "4x2:2")


@pytest.mark.parametrize("text", ["4x", "4x2:0", "4x2:2:both", "4*2", "4x2:2:rpr:x"])
def test_bad_shape_specs(text):
    with pytest.raises(SimError, match="is not NODESxRANKS"):
        fc.parse_shapes(text)


def run_cli(*args):
    return subprocess.run([PYTHON, "-m", "tools.simulate", "fit-cluster", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["/nonexistent.jsonl"], "error: cannot read /nonexistent.jsonl"),
    (["ROWS", "--fit-shapes", "4x"], "error: shape '4x' is not NODESxRANKS"),
    (["ROWS", "--fit-shapes", "16x1"], "error: no rows of the fit shapes 16x1"),
    (["ROWS", "--fit-algorithms", "tree"], "error: fit algorithms tree: choose from"),
])
@pytest.mark.procs
def test_cli_errors_are_one_line(tmp_path, args, message):
    rows = write(tmp_path, [row_obj(4, 2, 2, True, "ring", 4096 * 4 ** k, time_us=1e3 * (k + 1))
                            for k in range(6)])
    r = run_cli(*[rows if a == "ROWS" else a for a in args])
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(message)


# --- the recorded rows (lead engineer's runs on the emulated cluster, /work/notes/cluster_rows.md)
def test_fit_on_the_recorded_cluster_rows():
    """Fitted on 4x2 with 2 rails (rail per rank), held out 2x4, 8x1 and 4x2 on one rail.
    The numbers are what the recorded rows give; docs/scale_model.md shows the same table."""
    r = fc.calibrate_cluster(fc.read_cluster_rows(GOLDEN))
    t = r["tiers"]
    assert 0.95 <= t["inter_rate_fraction"] <= 1.0         # TCP gets ~97% of tbf's 200 Mbit/s
    assert 120 <= t["inter_alpha_us"] <= 240                # 178 us per step
    assert 110 <= t["intra_MBps"] <= 200                    # 149 MB/s per rank, 8 ranks / 2 cores
    # counted: held-out ring and torus2d rows of 4 MiB and more (comm/'s bucket size)
    counted = [x for x in r["rows"] if x["set"] == "held out" and x["counted"]]
    assert {x["algorithm"] for x in counted} == {"ring", "torus2d"}
    assert min(x["bytes"] for x in counted) >= 4 * 2 ** 20
    h = r["summary"]["held_out"]
    assert h["rows"] == len(counted) == 18                   # 3 shapes x 2 algorithms x 3 sizes
    assert h["median_abs_error"] == pytest.approx(0.026, abs=0.005)
    assert h["max_abs_error"] == pytest.approx(0.13, abs=0.01)
    assert r["summary"]["meets_target"] is True
    # what is shown but not counted misses, and says so
    every = r["summary"]["held_out_every_size_and_comm_algorithm"]
    assert every["rows"] == 72 and every["max_abs_error"] > 1.0
    large = r["summary"]["held_out_by_algorithm_from_min_bytes"]
    assert large["hierarchical"]["median_abs_error"] > 0.30     # its leader phase is Open MPI's


def test_smaller_messages_counted_miss_the_worst_case_target():
    """From 256 KiB on, 2 nodes x 4 ranks' torus2d is predicted 41-42% too slow: chunks under
    tbf's 256 KB burst pass unshaped. The default's 4 MiB is a choice this test documents."""
    r = fc.calibrate_cluster(fc.read_cluster_rows(GOLDEN), min_bytes=256 * 2 ** 10)
    h = r["summary"]["held_out"]
    assert h["rows"] == 30 and h["median_abs_error"] < 0.05
    assert h["max_abs_error"] == pytest.approx(0.42, abs=0.02)
    assert r["summary"]["meets_target"] is False


@pytest.mark.procs
def test_cli_prints_and_writes_the_same_markdown(tmp_path):
    out = tmp_path / "calibration.md"
    r = run_cli(GOLDEN, "--markdown", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text() == r.stdout
    assert "| held out | 8x1 | 8 | 2 per rank | ring | 16 MiB | 1308.30 | 1223.61 | -6% | yes |" \
        in r.stdout
    assert "meets the target" in r.stdout
