"""Scale model (scale_model/, CLI tools/simulate.py): closed forms, monotonicity, presets, the fit and the CLI."""
import json
import math
import os
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, REPO
from scale_model import fit as simulate_fit
from scale_model import model as sim
from scale_model import presets as simulate_presets

S = sim.RESNET50_PARAMETERS * 2
V100 = sim.Links.from_preset("abci2-v100")
H200 = sim.Links.from_preset("abci3-h200")


def phases(algo, n, links=V100, grid=None, size=S):
    return sim.allreduce_phases(algo, size, n, links, grid)


# --- closed forms -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 4, 8, 17, 2176])
def test_ring_steps_and_bytes_match_closed_forms(n):
    ph = phases("ring", n)
    assert sum(p.steps for p in ph) == sim.ring_steps(n) == 2 * (n - 1)
    assert sum(p.bytes_per_rank for p in ph) == pytest.approx(2 * (n - 1) / n * S)


@pytest.mark.parametrize("x,y", [(1, 1), (4, 1), (1, 4), (2, 3), (3, 2), (4, 544), (8, 16),
                                 (64, 34)])
def test_torus_steps_and_bytes_match_closed_forms(x, y):
    ph = phases("torus2d", x * y, grid=(x, y))
    assert sum(p.steps for p in ph) == sim.torus_steps(x, y) == 2 * (x - 1) + 2 * (y - 1)
    # bandwidth-optimal like the ring: the same bytes per rank, fewer steps
    assert sum(p.bytes_per_rank for p in ph) == pytest.approx(
        sim.allreduce_bytes_per_rank(x * y, S), abs=1e-6)
    assert [p.name for p in ph] == (["rs_row"] if x > 1 else []) + \
        (["ar_col"] if y > 1 else []) + (["ag_row"] if x > 1 else [])


@pytest.mark.parametrize("n,local", [(8, 4), (64, 8), (2176, 4), (4, 4)])
def test_hierarchical_prices_plans_phases(n, local):
    # a reduce and a broadcast along the node, L-1 steps each (one pipelined library call),
    # and a ring all-reduce among the Y leaders over one adapter
    links = sim.Links(**{**V100.__dict__, "local_size": local})
    ph = phases("hierarchical", n, links)
    y = n // local
    assert [(p.name, p.tier, p.steps) for p in ph] == \
        [("reduce_row", "intra", local - 1)] + \
        ([("ar_leaders", "inter", 2 * (y - 1))] if y > 1 else []) + \
        [("bcast_row", "intra", local - 1)]
    assert sum(p.bytes_per_rank for p in ph) == pytest.approx(
        2 * (local - 1) / local * S + (2 * (y - 1) / y * S if y > 1 else 0))
    assert ph[0].seconds - links.call_latency == pytest.approx(
        (local - 1) * (links.intra_alpha + S / local / links.intra_bw))


def test_torus_phase_tiers_follow_the_node_layout():
    # 4 GPUs per node: a 4x544 grid keeps rows inside nodes, columns cross them
    tiers = {p.name: p.tier for p in phases("torus2d", 2176, grid=(4, 544))}
    assert tiers == {"rs_row": "intra", "ar_col": "inter",
                     "ag_row": "intra"}
    # rows of 8 span two 4-GPU nodes
    assert {p.tier for p in phases("torus2d", 64, grid=(8, 8))} == {"inter"}


def test_column_rings_share_the_nodes_adapters():
    # 8 GPUs/node, 8 adapters: the 8 column rings get one adapter each; with 2 adapters, a quarter
    narrow = sim.Links(**{**H200.__dict__, "adapters": 2})
    col = [p for p in phases("torus2d", 64, H200) if p.name == "ar_col"][0]
    col2 = [p for p in phases("torus2d", 64, narrow) if p.name == "ar_col"][0]
    m = S / 64
    assert col.seconds - H200.call_latency == pytest.approx(
        14 * (H200.inter_alpha + m / H200.inter_bw))
    assert col2.seconds - H200.call_latency == pytest.approx(
        14 * (H200.inter_alpha + m / (H200.inter_bw * 2 / 8)))


def test_flat_ring_uses_one_adapter_unless_given_channels():
    big = 4e9   # bandwidth-bound: 8 rings over 8 adapters move the bytes ~8x faster
    one = sim.allreduce_time("ring", big, 64, H200)
    eight = sim.allreduce_time("ring", big, 64, sim.Links(**{**H200.__dict__, "ring_channels": 8}))
    assert one / 8 < eight < one / 6


def test_single_rank_costs_nothing_and_native_is_the_nccl_reference():
    for algo in sim.ALGORITHMS:
        assert phases(algo, 1) == []
    assert sim.allreduce_time("native", S, 64, V100) == sim.allreduce_time("nccl_tree", S, 64, V100)


# --- monotonicity -----------------------------------------------------------------------------
@pytest.mark.parametrize("algo", sim.ALGORITHMS)
@pytest.mark.parametrize("links", [V100, H200], ids=["v100", "h200"])
def test_time_grows_with_message_size(algo, links):
    times = [sim.allreduce_time(algo, s, 256, links) for s in np.geomspace(1e3, 1e9, 13)]
    assert all(b > a for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("algo", ["ring", "torus2d", "hierarchical", "nccl_tree"])
def test_time_does_not_shrink_with_more_ranks(algo):
    counts = [4, 8, 16, 64, 256, 1024, 4096]
    times = [sim.allreduce_time(algo, S, n, V100) for n in counts]
    assert all(b >= a for a, b in zip(times, times[1:])), times


def test_torus_beats_flat_ring_at_scale_and_best_grid_is_no_worse_than_auto():
    ring = sim.allreduce_time("ring", S, 2176, V100)
    assert sim.allreduce_time("torus2d", S, 2176, V100) < ring / 2
    rows = sim.best_grid(2176, V100, S)
    assert all(r["grid"][0] * r["grid"][1] == 2176 for r in rows)
    assert [r["seconds"] for r in rows] == sorted(r["seconds"] for r in rows)
    assert rows[0]["seconds"] <= sim.allreduce_time("torus2d", S, 2176, V100, (4, 544))


# --- step time and time to train ---------------------------------------------------------------
def test_step_time_hides_communication_only_within_backward():
    r = sim.step_time(compute_s=0.03, allreduce_s=0.005, overlap=1.0)
    assert r["step_s"] == pytest.approx(0.03) and r["exposed_s"] == 0
    r = sim.step_time(compute_s=0.03, allreduce_s=0.05, overlap=0.5)
    assert r["hidden_s"] == pytest.approx(0.5 * 0.03 * 2 / 3)
    assert r["step_s"] == pytest.approx(0.03 + 0.05 - 0.01)
    assert sim.step_time(0.03, 0.05, 0.0)["step_s"] == pytest.approx(0.08)


def test_predict_step_for_the_dry_run():
    r = sim.predict_step(local_batch=32, world_size=1088, local_size=4, preset="abci2-v100")
    assert r["grid"] == (4, 272) and r["size_bytes"] == S
    assert r["step_s"] >= r["compute_s"] > 0 and 0 < r["efficiency"] <= 1
    assert r["allreduce_s"] == pytest.approx(sum(p["seconds"] for p in r["phases"]))
    assert r["images_per_s"] == pytest.approx(1088 * 32 / r["step_s"])
    # the compute model passes through the preset's published point
    p = simulate_presets.get_preset("abci2-v100")
    assert sim.Compute.from_preset(p).seconds(p.ref_batch.value) == pytest.approx(
        p.ref_batch.value / p.train_images_per_s.value)


def test_all_reduce_callback_pays_a_blocking_host_check_per_gradient():
    """nnabla's callback runs one world MPI_Allreduce per gradient array before packing it:
    charged in full (no overlap hides a waiting host), growing with log2 of the node count."""
    n, checks = 2176, sim.RESNET50_GRADIENT_ARRAYS
    one = sim.host_check_seconds(n, V100)
    assert one == pytest.approx(2 * V100.intra_alpha + 10 * V100.inter_alpha)   # 4/node, 544 nodes
    assert sim.host_check_seconds(1, V100) == 0
    assert sim.host_check_seconds(8, V100) < one
    plain = sim.predict_step(16, n, 4, "abci2-v100", "native")
    callback = sim.predict_step(16, n, 4, "abci2-v100", "native", callback_checks=checks)
    assert callback["callback_s"] == pytest.approx(checks * one)
    assert callback["step_s"] == pytest.approx(plain["step_s"] + checks * one)
    assert callback["efficiency"] < plain["efficiency"]
    assert "host checks" in sim.describe_step(callback)[0]
    assert "host checks" not in sim.describe_step(plain)[0]


def test_describe_step_names_the_phases_for_the_dry_run():
    lines = sim.describe_step(sim.predict_step(32, 2176, 4))
    assert len(lines) == 2
    assert "2176 GPUs (4 per node), 32 per GPU" in lines[0]
    assert "torus2d 4x544 of 51.1 MB" in lines[1] and "ar_col" in lines[1]
    assert "none (one rank)" in sim.describe_step(sim.predict_step(32, 1))[1]


def test_describe_step_says_how_much_backward_hides_and_each_assumption():
    hidden = sim.predict_step(32, 2176, 4, overlap=0.5)
    exposed = sim.predict_step(32, 2176, 4, overlap=0.0)
    assert f"overlap 0.5 of backward hides {hidden['hidden_s'] * 1e3:.2f} ms" in \
        sim.describe_step(hidden)[1] and hidden["hidden_s"] > 0
    assert "overlap 0 of backward hides 0.00 ms" in sim.describe_step(exposed)[1]
    assert exposed["exposed_s"] == exposed["allreduce_s"]
    lines = sim.describe_assumptions(hidden)
    assert lines[0].startswith("overlap 0.5 of backward: the model's default")
    assert "backward = 2/3 of compute (backward ~ 2x forward; not measured)" in lines
    assert sim.describe_assumptions(exposed, "why")[0] == "overlap 0 of backward: why"
    assert not any("backward = 2/3" in ln for ln in sim.describe_assumptions(exposed))


def test_time_to_train_takes_a_stage_own_overlap():
    """The trainer's overlap can differ by stage (a stage that accumulates has no callback)."""
    stages = [(5, 34816), (90, 69632)]
    hidden = sim.time_to_train(stages, 2176, overlap=0.5)
    exposed = sim.time_to_train(stages, 2176, overlap=0.0)
    mixed = sim.time_to_train([{"until_epoch": 5, "global_batch": 34816, "overlap": 0.0},
                               {"until_epoch": 90, "global_batch": 69632}], 2176, overlap=0.5)
    assert [s["overlap"] for s in mixed["stages"]] == [0.0, 0.5]
    assert mixed["stages"][0]["seconds"] == pytest.approx(exposed["stages"][0]["seconds"])
    assert mixed["stages"][1]["seconds"] == pytest.approx(hidden["stages"][1]["seconds"])
    assert hidden["train_s"] < mixed["train_s"] < exposed["train_s"]


def test_time_to_train_counts_samples_across_stages():
    images = 1_000_000
    r = sim.time_to_train([(5, 34816), (90, 69632)], 2176, images=images)
    first = math.ceil(5 * images / 34816)
    second = math.ceil((90 * images - first * 34816) / 69632)
    assert [s["steps"] for s in r["stages"]] == [first, second]
    assert [s["local_batch"] for s in r["stages"]] == [16, 32]
    assert r["train_s"] == pytest.approx(sum(s["steps"] * s["step_s"] for s in r["stages"]))
    with_eval = sim.time_to_train([(5, 34816), (90, 69632)], 2176, images=images,
                                  eval_every_epochs=4)
    assert with_eval["evals"] == 23 and with_eval["total_s"] > r["total_s"]


@pytest.mark.parametrize("stages,gpus,message", [
    ([(5, 34816), (90, 69632)], 3456, "stage 0: global_batch=34816 is not divisible by 3456"),
    ([(5, 4096), (5, 8192)], 8, "stage 1: until_epoch=5 must be a number above"),
    ([{"global_batch": 8}], 8, "stage 0 needs until_epoch and global_batch"),
    ([(5, 0)], 8, "global_batch=0 must be a positive integer"),
    ([], 8, "no stages"),
])
def test_bad_stages_name_the_stage(stages, gpus, message):
    with pytest.raises(sim.SimError, match=message):
        sim.time_to_train(stages, gpus)


@pytest.mark.parametrize("call,message", [
    (lambda: sim.allreduce_time("ring", 0, 8, V100), "message size 0 bytes must be positive"),
    (lambda: sim.allreduce_time("butterfly", S, 8, V100), "unknown algorithm 'butterfly'"),
    (lambda: sim.allreduce_time("torus2d", S, 16, V100, "3x5"), "grid 3x5 has 15 ranks"),
    (lambda: sim.allreduce_time("torus2d", S, 16, V100, "4by4"), "not of the form XxY"),
    (lambda: sim.predict_step(0, 8), "local batch=0 must be a positive integer"),
    (lambda: sim.predict_step(32, 8, overlap=1.5), r"overlap=1.5 must lie in \[0, 1\]"),
    (lambda: sim.predict_step(32, 8, preset="dgx"), "unknown preset 'dgx'"),
])
def test_bad_model_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- presets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(simulate_presets.PRESETS))
def test_every_preset_number_has_a_source_and_a_status(name):
    p = simulate_presets.get_preset(name)
    fields = p.numeric_fields()
    # every field but the name and description is a number with a source: no bare floats
    assert set(fields) == set(p.__dataclass_fields__) - {"name", "description"}
    for key, v in fields.items():
        assert isinstance(v.value, (int, float)) and v.value > 0, key
        assert v.status in simulate_presets.STATUSES, key
        assert len(v.source) > 20, f"{name}.{key} has no real source"
    assert sim.Links.from_preset(p).local_size == fields["gpus_per_node"].value
    assert name in simulate_presets.markdown_table().splitlines()[0]


# --- calibration fit -----------------------------------------------------------------------------
def synthetic_rows(alpha, beta, noise, seed=0, host_cores=None):
    rng = np.random.RandomState(seed)
    rows = []
    for n, grid in ((2, None), (4, None), (4, (2, 2)), (8, (4, 2))):
        for algo in ("ring", "torus2d", "native"):
            for size in np.geomspace(4096, 256 << 20, 9):
                row = simulate_fit.Row(n, algo, float(size), 1.0,
                                       grid if algo == "torus2d" else None)
                t = simulate_fit.predict_us(row, alpha, beta, host_cores)
                rows.append(row.__class__(**{**row.__dict__,
                                             "time_us": t * (1 + noise * rng.randn())}))
    return rows


@pytest.mark.parametrize("host_cores", [None, 2])
def test_fit_recovers_known_alpha_and_beta(host_cores):
    alpha, beta = 25e-6, 1 / 3e9
    rows = synthetic_rows(alpha, beta, noise=0.02, host_cores=host_cores)
    r = simulate_fit.calibrate(rows, "ring", host_cores=host_cores)
    assert r["alpha_s"] == pytest.approx(alpha, rel=0.05)
    assert r["beta_s_per_byte"] == pytest.approx(beta, rel=0.05)
    held_out = [s for s in r["summary"] if not s["fitted"]]
    assert held_out and all(s["max_abs_error"] < 0.1 for s in held_out)


def test_fit_reads_bench_json_lines_and_skips_tables(tmp_path):
    path = tmp_path / "bench.jsonl"
    lines = ["# size count type time_us algbw busbw", "   4096  1024 float 12.0 0.3 0.5"]
    for row in synthetic_rows(10e-6, 1e-9, 0.0):
        lines.append(json.dumps({"n": row.ranks, "algorithm": row.algorithm, "bytes": row.bytes,
                                 "time_us": row.time_us,
                                 "grid": list(row.grid) if row.grid else "auto"}))
    path.write_text("\n".join(lines) + "\n")
    rows = simulate_fit.read_rows(str(path))
    assert len(rows) == len(lines) - 2 and rows[0].grid is None
    assert any(r.grid == (4, 2) for r in rows)


@pytest.mark.parametrize("text,message", [
    ("", "holds no JSON measurement lines"),
    ('{"ranks": 4, "algorithm": "ring", "bytes": 8}\n', "no time in microseconds"),
    ('{"ranks": 4, "algorithm": "ring", "bytes": 8, "time_us": 1\n', "line 1 is not valid JSON"),
    ('{"ranks": 4, "algorithm": "torus2d", "grid": "3x3", "bytes": 8, "time_us": 1}\n',
     "grid 3x3 has 9 ranks"),
    ('{"ranks": 4, "algorithm": "ring", "bytes": -8, "time_us": 1}\n', "must be positive"),
])
def test_fit_input_errors(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(sim.SimError, match=message):
        simulate_fit.read_rows(str(path))


# --- CLI ------------------------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([PYTHON, "-m", "tools.simulate", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.mark.procs
def test_cli_entry_point_error_is_one_line_and_nonzero():
    r = run_cli("table", "--preset", "nope")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: unknown preset 'nope'; known presets: abci2-v100, abci3-h200, dgx1-v100, "
        "dgx2h-v100, dgxa100-40g, dgxa100-80g, dgxh100"]


@pytest.mark.parametrize("args,message", [
    (["table", "--preset", "nope"], "unknown preset 'nope'"),
    (["table", "--gpus", "4,0"], "every count must be a positive integer"),
    (["table", "--params", "-5"], "must be positive"),
    (["ttt", "--gpus", "16", "--stages", "5:64", "--grid", "3x5"], "grid 3x5 has 15 ranks"),
    (["ttt", "--gpus", "3456", "--stages", "5:34816"], "not divisible by 3456"),
    (["ttt", "--gpus", "8", "--stages", "5-34816"], "is not UNTIL_EPOCH:GLOBAL_BATCH"),
    (["ttt", "--gpus", "8"], "give exactly one of --stages or --config"),
    (["fit", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
    (["grid"], "the following arguments are required: --nodes"),
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_cli_errors_are_one_line_and_nonzero(args, message, capsys):
    from tools.simulate import main
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert message in err


@pytest.mark.procs
def test_cli_ttt_reads_a_recipe_and_plot_writes_a_png(tmp_path):
    cfg = tmp_path / "sched.yaml"
    cfg.write_text("batch:\n  stages:\n    - {until_epoch: 5, global_batch: 34816}\n"
                   "    - {until_epoch: 90, global_batch: 69632}\n")
    r = run_cli("ttt", "--config", str(cfg), "--gpus", "2176")
    assert r.returncode == 0, r.stderr
    assert "4x544" in r.stdout and "train " in r.stdout
    out = tmp_path / "scale.png"
    r = run_cli("plot", "--out", str(out), "--presets", "abci2-v100")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists(str(out) + ".tmp.png")


@pytest.mark.parametrize("args,expect", [
    (["paper"], "  - overlap 0.5 of backward (the default 0.5 of --overlap, an assumption): how "
                "much of backward the paper's software (not ours) hides"),
    (["table", "--gpus", "8"], "# assumed: overlap 0.5 of backward (the default 0.5 of "
                               "--overlap, an assumption)"),
    (["ttt", "--gpus", "8", "--stages", "1:64", "--overlap", "0"],
     "assumed: overlap 0 of backward (given by --overlap)"),
])
def test_cli_says_which_overlap_it_assumes_and_what_the_trainer_does(args, expect, capsys):
    from tools.simulate import main
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(expect))
    assert "our trainer runs torus2d, ring and hierarchical after backward" in line
    assert sim.OVERLAP_RULE in line


@pytest.mark.procs
def test_bench_comm_under_mpirun_feeds_the_fitter(tmp_path):
    """Real mpirun, 2 ranks: the JSON lines tools/bench_comm.py writes are what the fitter
    reads (make sim-calibrate fits on them)."""
    out = tmp_path / "bench.jsonl"
    mpirun = os.path.join(os.path.dirname(PYTHON), "mpirun")
    r = subprocess.run([mpirun, "--oversubscribe", "--allow-run-as-root", "-np", "2", PYTHON,
                        os.path.join(REPO, "tools", "bench_comm.py"), "--grid", "2x1",
                        "--algorithms", "ring,torus2d,native", "--min-bytes", "4K",
                        "--max-bytes", "1M", "--factor", "16", "--no-resnet", "--rounds", "2",
                        "--json", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = simulate_fit.read_rows(str(out))
    assert sorted({(x.algorithm, x.ranks) for x in rows}) == [("native", 2), ("ring", 2),
                                                              ("torus2d", 2)]
    assert sorted({x.bytes for x in rows}) == [4096, 65536, 1048576]
    assert {x.grid for x in rows if x.algorithm == "torus2d"} == {(2, 1)}
    # the fitter's step/byte accounting applies to every row (whether a fit on these timings
    # succeeds depends on the machine's load, so that is left to make sim-calibrate)
    assert {simulate_fit.features(x)[0] for x in rows if x.algorithm != "native"} == {2}
