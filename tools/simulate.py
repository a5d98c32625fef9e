"""Command line of the scale model: ``python -m tools.simulate COMMAND`` (the model: scale_model/).

Every error is one line on stderr ("error: ...") and exit status 2, before any work is done.
The model lives in the scale_model package; this file only parses, prints and plots.
"""
import argparse
import json
import math
import os
import sys

from scale_model import calibration
from scale_model import fit as simulate_fit
from scale_model import fit_cluster
from scale_model import mlperf
from scale_model import model as sim
from scale_model import presets as simulate_presets
from scale_model.presets import PresetError

GPU_COUNTS = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

# The paper's runs (see ../shared/reference/paper.md). Each value says how sure we are.
PAPER_RUNS = [
    {"name": "v1: 224 s", "reported_s": 224.0, "gpus": 2176,
     "stages": [(5, 34816), (90, 69632)], "config": "configs/paper_224s.yaml",
     "assumptions": [
         "2,176 V100 (confirmed, NVIDIA blog) = 544 nodes x 4 (4 per node: ABCI docs)",
         "batch 34K -> 68K (confirmed) read as 34,816 -> 69,632 = 16 -> 32 per GPU (derived)",
         "first 5 epochs at the smaller batch (confirmed, InfoQ)",
         "90 epochs in all (ASSUMED: the paper's epoch count was not found)",
         "grid 4 x 544 (ASSUMED: a row = a node; the paper's grid was not found)"]},
    {"name": "v2: 122 s", "reported_s": 122.0, "gpus": 3456,
     "stages": [(90, 55296)], "config": "configs/paper_122s.yaml",
     "assumptions": [
         "3,456 V100 = 864 nodes x 4 (UNCONFIRMED recollection; the v2 GPU count was not found)",
         "one stage of 55,296 = 16 per GPU (ASSUMED: the v2 batch schedule was not found)",
         "90 epochs (ASSUMED); grid 4 x 864 (ASSUMED)"]},
]
EFFICIENCY_RUN = {"gpus": 1088, "reported": 0.9162, "local_batch": 32,
                  "assumptions": ["1,088 V100 = 272 nodes x 4, 91.62% (confirmed, NVIDIA blog)",
                                  "32 images per GPU (ASSUMED) and weak scaling: efficiency = "
                                  "compute / step time at a fixed per-GPU batch (ASSUMED "
                                  "definition)"]}


class Parser(argparse.ArgumentParser):
    def error(self, message):             # one line, not argparse's usage block
        raise sim.SimError(f"{message} (see {self.prog} -h)")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return parse


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be a positive integer")
    return values


def _stages(text):
    """'5:34816,90:69632' -> [(5.0, 34816), (90.0, 69632)]."""
    out = []
    for part in text.split(","):
        until, sep, batch = part.partition(":")
        try:
            out.append((float(until), int(batch)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"stage {part!r} is not UNTIL_EPOCH:GLOBAL_BATCH (e.g. 5:34816,90:69632)")
        if not sep:
            raise argparse.ArgumentTypeError(f"stage {part!r} lacks ':' (e.g. 5:34816)")
    return out


def _common(p, batch=True):
    p.add_argument("--preset", default="abci2-v100",
                   help=" | ".join(simulate_presets.PRESETS))
    p.add_argument("--params", type=_positive(int), default=sim.RESNET50_PARAMETERS,
                   help="gradient elements (default ResNet-50: 25,557,032)")
    p.add_argument("--bytes-per-param", type=_positive(int), default=2,
                   help="gradient wire format: 2 = fp16 (default), 4 = fp32")
    p.add_argument("--overlap", type=float, default=sim.DEFAULT_OVERLAP,
                   help="fraction of backward that can hide the all-reduce (default 0.5)")
    p.add_argument("--ring-channels", type=_positive(int), default=1,
                   help="concurrent rings of a flat ring (1 = comm/'s ring; NCCL uses several)")
    if batch:
        p.add_argument("--local-batch", type=_positive(int), default=32)


def build_parser():
    p = Parser(prog="python -m tools.simulate", description=sim.__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    t = sub.add_parser("table", help="all-reduce ms and scaling efficiency per GPU count")
    _common(t)
    t.add_argument("--gpus", type=_int_list, default=list(GPU_COUNTS))
    t.add_argument("--markdown", action="store_true")
    pl = sub.add_parser("plot", help="PNG of all-reduce time and efficiency vs GPU count")
    _common(pl)
    pl.add_argument("--presets", default="abci2-v100,abci3-h200")
    pl.add_argument("--out", default="docs/scale_model.png")
    tt = sub.add_parser("ttt", help="time to train a batch schedule")
    _common(tt, batch=False)
    tt.add_argument("--gpus", type=_positive(int), help="world size (GPUs)")
    tt.add_argument("--stages", type=_stages,
                    help="UNTIL_EPOCH:GLOBAL_BATCH,... e.g. 5:34816,90:69632")
    tt.add_argument("--config",
                    help="a recipe YAML with a stages list (or train.global_batch/epochs)")
    tt.add_argument("--algorithm", default="torus2d")
    tt.add_argument("--grid", help="XxY (default: X = GPUs per node)")
    tt.add_argument("--eval-every", type=float, default=0.0,
                    help="epochs between evaluations (0 = none)")
    tt.add_argument("--speed", type=_positive(float), default=1.0,
                    help="multiply the preset's per-GPU throughput (what-if)")
    pa = sub.add_parser("paper", help="the paper's runs: predicted beside reported")
    _common(pa, batch=False)
    pa.add_argument("--markdown", action="store_true")
    g = sub.add_parser("grid", help="best torus grid for a node count")
    _common(g, batch=False)
    g.add_argument("--nodes", type=_positive(int), required=True)
    g.add_argument("--top", type=_positive(int), default=5)
    f = sub.add_parser("fit", help="fit alpha/beta on bench_comm --json output and check it")
    f.add_argument("file")
    f.add_argument("--fit-algorithm", default="ring")
    f.add_argument("--fit-ranks", type=_positive(int))
    f.add_argument("--fit-min-bytes", type=float, default=0.0)
    f.add_argument("--fit-max-bytes", type=float, default=math.inf)
    f.add_argument("--host-cores", type=_positive(int),
                   help="shared-host reading: ranks share this many cores and one memory "
                        "system (see scale_model/fit.py); default: one link per rank")
    f.add_argument("--time-key", help="timing field to fit (default time_us; e.g. min_us)")
    f.add_argument("--json", help="also write the full report here")
    fc = sub.add_parser("fit-cluster", help="fit alpha/beta per tier on emulated-cluster rows; "
                        "predict held-out shapes")
    fc.add_argument("file", help="JSON lines of bench_comm --json on the emulated cluster")
    fc.add_argument("--fit-shapes", default=fit_cluster.DEFAULT_FIT_SHAPES,
                    help="NODESxRANKS[:RAILS[:rpr|striped]],... to fit on; every other shape "
                         f"is held out (default {fit_cluster.DEFAULT_FIT_SHAPES})")
    fc.add_argument("--fit-algorithms", default=",".join(fit_cluster.COUNTED_ALGORITHMS),
                    help="algorithms whose rows are fitted (default: comm/'s own rings, ring "
                         "and torus2d; hierarchical's leader phase and native/plain are Open "
                         "MPI's MPI_Allreduce)")
    fc.add_argument("--min-bytes", type=int, default=fit_cluster.MIN_COUNTED_BYTES,
                    help="rows of smaller messages are shown, not fitted or counted (default "
                         f"{fit_cluster.MIN_COUNTED_BYTES}: below it a step is CPU scheduling)")
    fc.add_argument("--markdown", help="also write the printed tables to this file")
    fc.add_argument("--json", help="also write the full report here")
    pd = sub.add_parser("predict", help="step and time to train of an MLPerf-style run (MXNet, "
                        "Horovod, NCCL) on a preset, with the calibration's error band")
    pd.add_argument("--system", required=True,
                    help="preset: " + ", ".join(simulate_presets.PRESETS))
    pd.add_argument("--accelerators", type=_positive(int), required=True, help="GPUs in all")
    pd.add_argument("--global-batch", type=_positive(int), required=True)
    pd.add_argument("--epochs", type=_positive(float), help="also the time to train this many")
    pd.add_argument("--eval-every", type=float, default=0.0,
                    help="epochs between evaluations, counted in the time to train (0 = none)")
    pd.add_argument("--json", action="store_true", help="one JSON line")
    va = sub.add_parser("validate", help="MLPerf calibration rows: measured against predicted; "
                        "the paper's runs explained by the calibrated model")
    va.add_argument("--markdown", action="store_true")
    va.add_argument("--plot", help="also write the predicted-against-measured PNG here")
    pr = sub.add_parser("presets", help="every preset number with its source (Markdown)")
    pr.add_argument("names", nargs="*")
    return p


# --- commands ---------------------------------------------------------------------------------
def overlap_assumption(a, whose):
    """The line saying which overlap a command assumes and why: --overlap is a what-if, not
    what train_resnet50.py does (its dry run takes the overlap from sim.trainer_overlap)."""
    given = "given by --overlap" if a.overlap != sim.DEFAULT_OVERLAP else \
        f"the default {sim.DEFAULT_OVERLAP:g} of --overlap, an assumption"
    return (f"assumed: overlap {a.overlap:g} of backward ({given}): how much of backward "
            f"{whose} hides the all-reduce behind is not known; our trainer runs torus2d, ring "
            f"and hierarchical after backward (overlap 0: {sim.OVERLAP_RULE}; its --dry-run "
            "says what it overlaps)")


def cmd_table(a):
    size = a.params * a.bytes_per_param
    rows = sim.scaling_rows(a.preset, a.gpus, size, a.local_batch, a.overlap,
                            ring_channels=a.ring_channels)
    compute = sim.Compute.from_preset(a.preset).seconds(a.local_batch)
    print(f"# {a.preset}: all-reduce of {size / 1e6:.1f} MB, local batch {a.local_batch} "
          f"(compute {compute * 1e3:.1f} ms/step), overlap {a.overlap:g}")
    print("# " + overlap_assumption(a, "a trainer"))
    head = ["GPUs", "nodes", "torus grid"] + [f"{x} ms" for x in sim.ALGORITHMS] + \
        [f"{x} eff" for x in sim.ALGORITHMS]
    table = [[str(r["gpus"]), str(r["nodes"]), "x".join(map(str, r["grid"]))]
             + [f"{r[x]['allreduce_s'] * 1e3:.2f}" for x in sim.ALGORITHMS]
             + [f"{r[x]['efficiency'] * 100:.1f}%" for x in sim.ALGORITHMS] for r in rows]
    _print_table(head, table, a.markdown)


def cmd_plot(a):
    names = [n.strip() for n in a.presets.split(",") if n.strip()]
    for n in names:
        simulate_presets.get_preset(n)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    size = a.params * a.bytes_per_param
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 3.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        rows = sim.scaling_rows(name, GPU_COUNTS, size, a.local_batch, a.overlap,
                                ring_channels=a.ring_channels)
        for algo in sim.ALGORITHMS:
            style = "--" if algo == "nccl_tree" else "-"
            row[0].plot([r["gpus"] for r in rows], [r[algo]["allreduce_s"] * 1e3 for r in rows],
                        style, marker="o", ms=3, label=algo)
            row[1].plot([r["gpus"] for r in rows], [r[algo]["efficiency"] * 100 for r in rows],
                        style, marker="o", ms=3, label=algo)
        row[0].set(xscale="log", yscale="log", ylabel="all-reduce (ms)",
                   title=f"{name}: {size / 1e6:.0f} MB gradients")
        row[1].set(xscale="log", ylabel="scaling efficiency (%)", ylim=(0, 102),
                   title=f"{name}: {a.local_batch}/GPU, overlap {a.overlap:g}")
        for ax in row:
            ax.set_xlabel("GPUs")
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Predicted by python -m tools.simulate plot (alpha-beta model; not measured)",
                 fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp.png"
    fig.savefig(tmp, dpi=72)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


def stages_from_config(path):
    """Loose read of a recipe: a 'stages' list anywhere, else train.global_batch/epochs."""
    import yaml
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except OSError as e:
        raise sim.SimError(f"cannot read config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise sim.SimError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}")

    def find(node):
        if isinstance(node, dict):
            st = node.get("stages")
            if isinstance(st, list) and st and all(isinstance(s, dict) for s in st):
                return st
            for v in node.values():
                found = find(v)
                if found:
                    return found
        return None
    stages = find(doc)
    if stages:
        return sim.normalize_stages(stages)
    train = doc.get("train", {}) if isinstance(doc, dict) else {}
    if "global_batch" in train and "epochs" in train:
        return sim.normalize_stages([(train["epochs"], train["global_batch"])])
    raise sim.SimError(f"{path} has no stages list and no train.global_batch/train.epochs; "
                       "pass --stages UNTIL:BATCH,...")


def cmd_ttt(a):
    if (a.stages is None) == (a.config is None):
        raise sim.SimError("give exactly one of --stages or --config")
    stages = a.stages if a.stages is not None else stages_from_config(a.config)
    if a.gpus is None and not all(isinstance(s, dict) and s.get("world_size") for s in stages):
        raise sim.SimError("--gpus is required (the world size the schedule runs on)")
    r = sim.time_to_train(stages, a.gpus, a.preset, a.algorithm, a.grid, None, a.params,
                          a.bytes_per_param, a.overlap, eval_every_epochs=a.eval_every,
                          ring_channels=a.ring_channels, speed=a.speed)
    _print_ttt(r, a)


def _print_ttt(r, a):
    head = ["until epoch", "global batch", "GPUs", "per GPU", "grid", "steps", "step ms",
            "all-reduce ms", "exposed ms", "efficiency", "seconds"]
    rows = [[f"{s['until_epoch']:g}", str(s["global_batch"]), str(s["world_size"]),
             str(s["local_batch"]), "x".join(map(str, s["grid"])) if s["grid"] else "-",
             str(s["steps"]), f"{s['step_s'] * 1e3:.2f}", f"{s['allreduce_s'] * 1e3:.2f}",
             f"{s['exposed_s'] * 1e3:.2f}", f"{s['efficiency'] * 100:.1f}%", f"{s['seconds']:.1f}"]
            for s in r["stages"]]
    _print_table(head, rows, False)
    print(f"train {r['train_s']:.1f} s + eval {r['eval_s']:.1f} s ({r['evals']} passes) = "
          f"{r['total_s']:.1f} s  [{r['preset']}, {r['algorithm']}, overlap {r['overlap']:g}, "
          f"{8 * r['bytes_per_param']}-bit gradients]")
    print(overlap_assumption(a, "a trainer"))


def implied_speed(run, a):
    """Throughput multiplier that makes the predicted time equal the reported one."""
    def total(speed):
        return sim.time_to_train(run["stages"], run["gpus"], a.preset, "torus2d", None, None,
                                 a.params, a.bytes_per_param, a.overlap,
                                 ring_channels=a.ring_channels, speed=speed)["total_s"]
    lo, hi = 1e-3, 1e3
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if total(mid) > run["reported_s"] else (lo, mid)
    return math.sqrt(lo * hi)


def cmd_paper(a):
    preset = simulate_presets.get_preset(a.preset)
    compute = sim.Compute.from_preset(preset)
    head = ["run", "GPUs", "reported", "predicted (torus2d)", "torus2d, overlap 0 / 1", "ring",
            "hierarchical", "implied per-GPU img/s at 32"]
    rows, notes = [], []
    for run in PAPER_RUNS:
        def total(algo, overlap=a.overlap):
            return sim.time_to_train(run["stages"], run["gpus"], preset, algo, None, None,
                                     a.params, a.bytes_per_param, overlap,
                                     ring_channels=a.ring_channels)["total_s"]
        speed = implied_speed(run, a)
        rows.append([run["name"], f"{run['gpus']:,}", f"{run['reported_s']:g} s",
                     f"{total('torus2d'):.0f} s",
                     f"{total('torus2d', 0.0):.0f} / {total('torus2d', 1.0):.0f} s",
                     f"{total('ring'):.0f} s", f"{total('hierarchical'):.0f} s",
                     f"{32 / compute.seconds(32) * speed:.0f}"])
        notes += [f"{run['name']}: {x}" for x in run["assumptions"]]
    eff = sim.predict_step(EFFICIENCY_RUN["local_batch"], EFFICIENCY_RUN["gpus"], None, preset,
                           "torus2d", None, a.params, a.bytes_per_param, a.overlap,
                           a.ring_channels)
    eff_range = [sim.predict_step(EFFICIENCY_RUN["local_batch"], EFFICIENCY_RUN["gpus"], None,
                                  preset, "torus2d", None, a.params, a.bytes_per_param, o,
                                  a.ring_channels)["efficiency"] * 100 for o in (0.0, 1.0)]
    rows.append(["scaling efficiency", f"{EFFICIENCY_RUN['gpus']:,}",
                 f"{EFFICIENCY_RUN['reported'] * 100:.2f}%", f"{eff['efficiency'] * 100:.1f}%",
                 f"{eff_range[0]:.1f}% / {eff_range[1]:.1f}%", "", "", ""])
    notes += [f"efficiency: {x}" for x in EFFICIENCY_RUN["assumptions"]]
    print(f"# preset {preset.name}; {8 * a.bytes_per_param}-bit gradients "
          f"({a.params:,} parameters); overlap {a.overlap:g}; per-GPU compute "
          f"{32 / compute.seconds(32):.0f} img/s at 32 per GPU, "
          f"{16 / compute.seconds(16):.0f} at 16 "
          "(the preset's MLPerf-calibrated compute curve); eval and start-up not counted")
    _print_table(head, rows, a.markdown)
    print("assumptions:")
    assumption = overlap_assumption(a, "the paper's software (not ours)")
    if assumption.startswith("assumed: "):      # (str.removeprefix needs Python 3.9)
        assumption = assumption[len("assumed: "):]
    print("  - " + assumption + "; the overlap 0 / 1 column brackets it")
    for n in notes:
        print(f"  - {n}")
    print("  - 'implied' = the per-GPU throughput at 32 images/GPU that makes the torus2d "
          "prediction equal the reported time, everything else unchanged")


def cmd_grid(a):
    links = sim.Links.from_preset(a.preset, a.ring_channels)
    n = a.nodes * links.local_size
    size = a.params * a.bytes_per_param
    rows = sim.best_grid(n, links, size)
    auto = sim.auto_grid(n, links.local_size)
    auto_s = sim.allreduce_time("torus2d", size, n, links, auto)
    print(f"# {a.preset}: {a.nodes} nodes x {links.local_size} = {n} GPUs, {size / 1e6:.1f} MB; "
          f"auto grid {auto[0]}x{auto[1]} = {auto_s * 1e3:.2f} ms")
    _print_table(["grid", "all-reduce ms", "vs auto"],
                 [[f"{r['grid'][0]}x{r['grid'][1]}", f"{r['seconds'] * 1e3:.2f}",
                   f"{r['seconds'] / auto_s:.2f}x"] for r in rows[:a.top]], False)


def cmd_fit(a):
    rows = simulate_fit.read_rows(a.file, a.time_key)
    r = simulate_fit.calibrate(rows, a.fit_algorithm, a.fit_ranks, a.fit_min_bytes,
                               a.fit_max_bytes, a.host_cores)
    print(f"# fit on {a.fit_algorithm} rows (ranks {a.fit_ranks or 'any'}, bytes "
          f"{a.fit_min_bytes:g}..{a.fit_max_bytes:g}"
          f"{f', shared host of {a.host_cores} cores' if a.host_cores else ''}): "
          f"alpha {r['alpha_s'] * 1e6:.2f} us/step, "
          f"beta {r['beta_s_per_byte'] * 1e9:.4f} ns/B ({r['bandwidth_GBps']:.2f} GB/s)")
    _print_table(["algorithm", "ranks", "grid", "bytes", "measured us", "predicted us", "error",
                  "fitted"],
                 [[x["algorithm"], str(x["ranks"]), x["grid"] or "-", f"{x['bytes']:.0f}",
                   f"{x['measured_us']:.1f}", f"{x['predicted_us']:.1f}",
                   f"{x['error'] * 100:+.0f}%", "yes" if x["fitted"] else ""]
                  for x in r["rows"]], False)
    print("summary (|error|):")
    _print_table(["algorithm", "rows", "fitted", "median", "max", "within 25%"],
                 [[s["algorithm"], str(s["rows"]), "yes" if s["fitted"] else "held out",
                   f"{s['median_abs_error'] * 100:.0f}%", f"{s['max_abs_error'] * 100:.0f}%",
                   f"{s['within_25pct'] * 100:.0f}%"] for s in r["summary"]], False)
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(r, f, indent=1)
        os.replace(tmp, a.json)


def cmd_fit_cluster(a):
    specs = fit_cluster.parse_shapes(a.fit_shapes)       # bad input fails before the read
    algorithms = tuple(x.strip() for x in a.fit_algorithms.split(",") if x.strip())
    fit_cluster.check_algorithms(algorithms)
    rows = fit_cluster.read_cluster_rows(a.file)
    r = fit_cluster.calibrate_cluster(rows, specs, algorithms, a.min_bytes)
    command = ("python -m tools.simulate fit-cluster " + a.file
               + (f" --fit-shapes {a.fit_shapes}"
                  if a.fit_shapes != fit_cluster.DEFAULT_FIT_SHAPES else "")
               + (f" --fit-algorithms {a.fit_algorithms}"
                  if algorithms != fit_cluster.COUNTED_ALGORITHMS else "")
               + (f" --min-bytes {a.min_bytes}"
                  if a.min_bytes != fit_cluster.MIN_COUNTED_BYTES else ""))
    text = fit_cluster.markdown(r, command)
    print(text, end="")
    for path, content in ((a.markdown, text), (a.json, json.dumps(r, indent=1) + "\n")):
        if path:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(content)
            os.replace(tmp, path)


def cmd_presets(a):
    print(simulate_presets.markdown_table(a.names or None))


def _print_table(head, rows, markdown):
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(" --- " for _ in head) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in [head] + rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def cmd_predict(a):
    step = mlperf.predict(a.system, a.accelerators, a.global_batch)
    band = calibration.validate()
    out = {"system": step["system"], "accelerators": a.accelerators, "nodes": step["nodes"],
           "per_node": step["per_node"], "global_batch": a.global_batch,
           "local_batch": step["local_batch"], "step_ms": step["step_s"] * 1e3,
           "images_per_s": step["images_per_s"], "compute_ms": step["compute_s"] * 1e3,
           "allreduce_ms": step["allreduce_s"] * 1e3,
           "allreduce_algorithm": step["allreduce_algorithm"],
           "exposed_allreduce_ms": step["exposed_s"] * 1e3, "horovod_groups": step["groups"],
           "calibration_median_abs_error": band["median_abs_error"],
           "calibration_max_abs_error": band["max_abs_error"]}
    if a.epochs:
        ttt = mlperf.time_to_train(step, a.epochs, a.eval_every)
        out.update(epochs=a.epochs, train_s=ttt["train_s"], eval_s=ttt["eval_s"],
                   time_to_train_s=ttt["time_to_train_s"])
    elif a.eval_every:
        raise sim.SimError("--eval-every needs --epochs (the evaluations are counted in the "
                           "time to train)")
    if a.json:
        print(json.dumps(out))
        return
    print(f"{out['system']}: {a.accelerators} GPUs ({out['nodes']} nodes x {out['per_node']}), "
          f"global batch {a.global_batch} = {out['local_batch']} per GPU")
    print(f"step {out['step_ms']:.2f} ms = compute {out['compute_ms']:.2f} ms + exposed "
          f"all-reduce {out['exposed_allreduce_ms']:.2f} ms (NCCL {out['allreduce_algorithm']} "
          f"{out['allreduce_ms']:.2f} ms, Horovod groups {out['horovod_groups']}); "
          f"{out['images_per_s']:,.0f} images/s")
    if a.epochs:
        print(f"time to train {out['time_to_train_s']:.1f} s = {out['train_s']:.1f} s of "
              f"{a.epochs:g} epochs + {out['eval_s']:.1f} s evaluation (start-up not counted)")
    print("error band: " + calibration.error_band(band))


def cmd_validate(a):
    r = calibration.validate()
    fit = r["fit"]
    print(f"# fitted on {len(r['rows'])} rows: step overhead {fit['overhead_s'] * 1e3:.3f} ms "
          "(every preset); peak images/s per GPU: "
          + ", ".join(f"{k} {v:.0f}" for k, v in fit["peak_images_per_s"].items()))
    head = ["preset", "system (round)", "GPUs", "per node", "global batch", "per GPU",
            "measured ms", "predicted ms", "error", "compute ms", "all-reduce ms", "exposed ms"]
    rows = [[x["row"].preset, f"{x['row'].system} ({x['row'].round})",
             str(x["row"].accelerators), str(x["row"].per_node), f"{x['row'].global_batch:,}",
             str(x["predicted"]["local_batch"]), f"{x['row'].step_ms:.1f}",
             f"{x['predicted']['step_s'] * 1e3:.1f}", f"{x['error'] * 100:+.1f}%",
             f"{x['predicted']['compute_s'] * 1e3:.1f}",
             f"{x['predicted']['allreduce_s'] * 1e3:.2f} "
             f"({x['predicted']['allreduce_algorithm']})",
             f"{x['predicted']['exposed_s'] * 1e3:.2f}"] for x in r["rows"]]
    _print_table(head, rows, a.markdown)
    print(f"\nabsolute error: median {r['median_abs_error']:.1%}, worst {r['max_abs_error']:.1%} "
          f"(target {calibration.TARGET_CALIBRATION:.0%}): "
          f"{'within' if r['within_target'] else 'MISSES'} the target")
    stale = calibration.presets_in_sync(fit)
    print("presets: " + (f"STALE, update scale_model/presets.py: {', '.join(stale)}" if stale
                         else "the stored compute of every DGX preset is this fit's"))
    _print_paper_explained(a.markdown)
    if a.plot:
        plot_validation(r, a.plot)
    return 1 if stale else 0


def _print_paper_explained(markdown):
    print("\n# the paper's runs on abci2-v100 with the calibrated compute (torus2d after "
          "backward as comm/ runs it; NCCL's own all-reduce beside it; evaluation every epoch)")
    head = ["run", "GPUs", "reported s", "compute s", "communication s (torus2d)",
            "(NCCL instead)", "evaluation s", "modelled s", "rest s", "rest per step ms",
            "speed if the rest were compute"]
    rows = []
    for run in PAPER_RUNS:
        x = calibration.explain_run(run)
        rows.append([run["name"], f"{run['gpus']:,}", f"{x['reported_s']:g}",
                     f"{x['compute_s']:.1f}", f"{x['communication_s']:.1f}",
                     f"{x['nccl_communication_s']:.1f}", f"{x['evaluation_s']:.1f}",
                     f"{x['modelled_s']:.1f}", f"{x['rest_s']:.1f}",
                     f"{x['rest_per_step_ms']:.1f}",
                     f"{x['compute_speed_if_rest_were_compute']:.0%}"])
    _print_table(head, rows, markdown)


def plot_validation(result, out):
    """Predicted against measured step time (left) and the per-GPU compute curves with the
    rows' measured per-GPU throughput (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    names = list(result["fit"]["peak_images_per_s"])
    colours = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for x in result["rows"]:
        r, colour = x["row"], colours[x["row"].preset]
        marker = "o" if r.accelerators <= r.per_node else "s"
        left.scatter(r.step_ms, x["predicted"]["step_s"] * 1e3, color=colour, marker=marker)
        right.scatter(x["predicted"]["local_batch"], r.global_batch / r.step_ms * 1e3
                      / r.accelerators, color=colour, marker=marker)
    line = [8, 200]
    left.plot(line, line, "k-", lw=0.8)
    for f in (0.9, 1.1):
        left.plot(line, [v * f for v in line], "k:", lw=0.8)
    left.set(xscale="log", yscale="log", xlabel="measured step (ms)",
             ylabel="predicted step (ms)", title="MLPerf calibration rows (dotted: +-10%)")
    batches = [2 ** (k / 4) for k in range(8, 38)]
    fit = result["fit"]
    for name in names:
        curve = mlperf.ComputeCurve(fit["overhead_s"], fit["peak_images_per_s"][name])
        right.plot(batches, [curve.images_per_s_at(b) for b in batches], color=colours[name],
                   label=name)
    right.set(xscale="log", xlabel="images per GPU per step", ylabel="images/s per GPU",
              title="compute curves; measured (o: 1 node, s: more)")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("python -m tools.simulate validate --plot " + out, fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=72)
    os.replace(tmp, out)
    print(f"wrote {out}")


COMMANDS = {"table": cmd_table, "plot": cmd_plot, "ttt": cmd_ttt, "paper": cmd_paper,
            "grid": cmd_grid, "fit": cmd_fit, "fit-cluster": cmd_fit_cluster,
            "presets": cmd_presets, "predict": cmd_predict, "validate": cmd_validate}


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "preset"):
            simulate_presets.get_preset(args.preset)
        if hasattr(args, "overlap") and not 0 <= args.overlap <= 1:
            raise sim.SimError(f"--overlap {args.overlap} must lie in [0, 1]")
        status = COMMANDS[args.command](args)
    except (sim.SimError, PresetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
