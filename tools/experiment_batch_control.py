"""The paper's claim at small scale: does batch-size control beat a constant large batch?

    python -m tools.experiment_batch_control              # make experiment-batch-control
    python -m tools.experiment_batch_control --seeds 0 --epochs 4 --out /tmp/quick

Trains three arms on the toy set, each with the same epochs and seeds, one single-process
`train_resnet50.py` per run (``--jobs`` at a time):

    small    a constant small global batch
    large    a constant large batch (the share of the toy set per update is printed; the
             paper's 68K is 5.3% of ImageNet)
    control  batch-size control: the small batch until --switch-epoch, then the large one

The learning rate follows the batch in use (the linear rule of configs/cpu_demo.yaml, whose
model, data and optimizer every arm shares). Then it reads every run with tools/report's
readers and prints, per arm, the mean and spread of final and best top-1, updates and wall
time, writes OUT/results.md and OUT/results.json, and plots top-1 against epoch and against
updates (--plot). A run whose summary.json says completed with the same command is reused
(--fresh retrains). Runs are deterministic, so accuracies repeat; wall times depend on what
else the machine runs.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.report.metrics import compute  # noqa: E402
from tools.report.runs import ReportError, load_run  # noqa: E402

ARMS = ("small", "large", "control")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.experiment_batch_control",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--data-dir", default=os.path.join(REPO, "data", "toy"),
                   help="the toy set (make toy-data); default %(default)s")
    p.add_argument("--out", default=os.path.join(REPO, "runs", "experiment_batch_control"))
    p.add_argument("--config", default=os.path.join(REPO, "configs", "cpu_demo.yaml"))
    p.add_argument("--epochs", type=float, default=12)
    p.add_argument("--small", type=int, default=128, help="small global batch")
    p.add_argument("--large", type=int, default=256, help="large global batch")
    p.add_argument("--switch-epoch", type=float, default=2.0,
                   help="control arm: epoch at which the batch grows")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one core each)")
    p.add_argument("--plot", default=os.path.join(REPO, "docs", "batch_control_experiment.png"))
    p.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    if not args.seeds or args.jobs < 1 or not 0 < args.switch_epoch < args.epochs:
        p.error("need at least one seed, --jobs >= 1 and 0 < --switch-epoch < --epochs")
    if not os.path.isdir(os.path.join(args.data_dir, "train")):
        p.error(f"--data-dir {args.data_dir} has no train/ folder: run make toy-data first")
    return args


def stages(args, arm):
    if arm == "control":
        return [(args.switch_epoch, args.small), (args.epochs, args.large)]
    return [(args.epochs, args.small if arm == "small" else args.large)]


def command(args, arm, seed, out):
    spec = ", ".join(f"{{until_epoch: {e:g}, global_batch: {b}}}" for e, b in stages(args, arm))
    return [sys.executable, os.path.join(REPO, "train_resnet50.py"), "--config", args.config,
            "--data-dir", args.data_dir, "--output-dir", out, "--overwrite",
            "--set", f"train.seed={seed}", "--set", f"train.epochs={args.epochs:g}",
            "--set", "train.global_batch=null", "--set", f"batch.stages=[{spec}]",
            "--set", "checkpoint.every_epochs=0", "--set", "comm.grid=auto"]


def finished(out, cmd):
    """A completed run of exactly this command (its argv is in the log's start line)."""
    try:
        with open(os.path.join(out, "summary.json")) as f:
            done = json.load(f).get("status") == "completed"
        with open(os.path.join(out, "log.jsonl")) as f:
            start = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    return done and start.get("argv") == cmd[2:]


def run_all(args):
    """Every (arm, seed) run, --jobs at a time; returns {(arm, seed): run dir}."""
    todo, dirs = [], {}
    for seed in args.seeds:
        for arm in ARMS:
            out = os.path.join(args.out, arm, f"seed{seed}")
            dirs[(arm, seed)] = out
            cmd = command(args, arm, seed, out)
            if args.fresh or not finished(out, cmd):
                todo.append((arm, seed, out, cmd))
    print(f"{len(todo)} of {len(dirs)} runs to train ({len(dirs) - len(todo)} reused), "
          f"{args.jobs} at a time; logs in {args.out}/<arm>/seed<N>.out", flush=True)
    running, failed, t_start = [], [], time.time()
    while todo or running:
        while todo and len(running) < args.jobs:
            arm, seed, out, cmd = todo.pop(0)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            log = open(out + ".out", "w")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            running.append((arm, seed, out, proc, log, time.time()))
        time.sleep(1)
        for item in [r for r in running if r[3].poll() is not None]:
            arm, seed, out, proc, log, t0 = item
            running.remove(item)
            log.close()
            state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            if proc.returncode:
                failed.append(f"{out}.out")
            print(f"[{time.time() - t_start:6.0f} s] {arm:7} seed {seed}: {state} in "
                  f"{time.time() - t0:.0f} s", flush=True)
    if failed:
        sys.exit("error: runs failed; see " + ", ".join(failed))
    return dirs


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(args, dirs):
    """Per arm: the runs' metrics (tools/report) and their mean and spread."""
    rows = {}
    for arm in ARMS:
        runs = []
        for seed in args.seeds:
            try:
                run = load_run(dirs[(arm, seed)], name=f"{arm}/seed{seed}")
            except ReportError as e:
                sys.exit(f"error: {e}")
            runs.append((seed, run, compute(run, [])))
        rows[arm] = {
            "batches": " -> ".join(str(b) for _, b in stages(args, arm)),
            "seeds": {seed: {"final": m.final_top1, "best": m.best_top1, "updates": m.steps,
                             "wall_s": m.wall_s} for seed, _, m in runs},
            "curves": {seed: [(r["epoch"], r["step"], r["val_top1"]) for r in run.events("eval")]
                       for seed, run, _ in runs}}
        for key in ("final", "best", "updates", "wall_s"):
            rows[arm][key] = mean_sd([s[key] for s in rows[arm]["seeds"].values()])
    return rows


def table(args, rows, images):
    share = lambda b: f"{100 * b / images:.1f}%"  # noqa: E731
    pct = lambda ms: f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"  # noqa: E731
    lines = [f"| arm | global batch (share of the {images:,} training images per update) | "
             f"final top-1 (%) | best top-1 (%) | updates | wall time (s) | final top-1 per seed "
             f"({', '.join(map(str, args.seeds))}) |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for arm in ARMS:
        r = rows[arm]
        batches = " → ".join(f"{b} ({share(b)})" for _, b in stages(args, arm))
        per_seed = ", ".join(f"{100 * s['final']:.1f}" for s in r["seeds"].values())
        lines.append(f"| {arm} | {batches} | {pct(r['final'])} | {pct(r['best'])} | "
                     f"{r['updates'][0]:.0f} | {r['wall_s'][0]:.0f} ± {r['wall_s'][1]:.0f} | "
                     f"{per_seed} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for i, arm in enumerate(ARMS):
        color = plt.get_cmap("tab10")(i)
        for j, curve in enumerate(rows[arm]["curves"].values()):
            label = f"{arm} ({rows[arm]['batches']})" if j == 0 else None
            for ax, x in zip(axes, (0, 1)):
                ax.plot([c[x] for c in curve], [100 * c[2] for c in curve], "o-", color=color,
                        alpha=0.7, markersize=2.5, lw=1, label=label)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("updates")
    axes[0].set_ylabel("validation top-1 (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", loc="lower right")
    fig.suptitle("Toy set: constant small and large batches against batch-size control "
                 "(one line per seed)", fontsize="medium")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    t0 = time.time()
    dirs = run_all(args)
    rows = summarise(args, dirs)
    images = load_run(dirs[("small", args.seeds[0])]).start.get("train_images") or 0
    text = table(args, rows, images)
    print(f"\n{len(args.seeds)} seeds per arm, {args.epochs:g} epochs each; mean ± sample standard "
          f"deviation over seeds\n{text}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({arm: {k: v for k, v in r.items()} for arm, r in rows.items()}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"`python -m tools.experiment_batch_control {shlex.join(argv)}`: "
                f"{len(args.seeds)} seeds per arm, {args.epochs:g} epochs; mean ± sample "
                f"standard deviation over seeds\n\n{text}\n")
    plot(rows, args.plot)
    print(f"\nwritten: {args.out}/results.md, results.json; plot {args.plot} "
          f"({time.time() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
