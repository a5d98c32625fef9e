"""comm/'s all-reduce benchmark across an emulated cluster (needs root; docs/results.md).

    python -m tools.cluster_bench                        # make cluster-bench: 4 nodes x 2, 2 rails
    python -m tools.cluster_bench --nodes 2 --ranks-per-node 4 --json runs/cb_2x4.jsonl
    python -m tools.cluster_bench --rails 1 --algorithms torus2d,ring

It brings up its own cluster (``python -m tools.minicluster``, name ``cbench``), runs
tools/bench_comm.py on it twice, and takes the cluster down again on every exit path:
  1. Open MPI's default collective components: torus2d, ring, hierarchical, native, plain;
  2. with ``coll/han`` excluded (OMPI_MCA_coll=^han): native and plain again (torus2d too, as
     the yardstick inside that run).
Before each run a short probe job with ``coll_base_verbose`` says which component serves
MPI_Allreduce on the world communicator (native and plain); every JSON row records it with
the cluster's shape (nodes, ranks_per_node, rails, rail_per_rank, rate_mbit, coll).
Afterwards it prints the ResNet-50 gradient rows of both runs, the targets of issue 15 and the
bandwidth model's bound for the shape.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from tools import minicluster
from tools.minicluster.layout import rate_mbit as rate_mbit_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "tools", "bench_comm.py")
VARIANTS = (("default", {}), ("^han", {"OMPI_MCA_coll": "^han"}))
LIBRARY = ("native", "plain")          # the rows that are one MPI_Allreduce of Open MPI's
PROBE = ("from mpi4py import MPI; import numpy as np; a = np.ones(4, np.float32); "
         "MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, a)")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--ranks-per-node", type=int, default=2)
    p.add_argument("--rails", type=int, default=2)
    p.add_argument("--rate", default="200mbit", help="every link's rate (tbf; default 200mbit)")
    p.add_argument("--no-rail-per-rank", action="store_true",
                   help="let Open MPI stripe each pair's traffic over all rails")
    p.add_argument("--algorithms", default="torus2d,ring,hierarchical,native,plain")
    p.add_argument("--variants", default="default,^han",
                   help="collective components: default and/or ^han (coll/han excluded)")
    p.add_argument("--name", default="cbench", help="the emulated cluster's name")
    p.add_argument("--json", default="runs/cluster_bench.jsonl",
                   help="JSON lines of every row of every run (default runs/cluster_bench.jsonl)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    p.add_argument("bench_args", nargs="*",
                   help="after --: tools/bench_comm.py arguments (default: "
                        "--min-bytes 4K --max-bytes 64M --iter-bytes 8M --resnet-width 0.25 "
                        "--rounds 3: about 5 minutes at 200 Mbit/s)")
    args = p.parse_args(argv)
    # iter-bytes 8M: a round moves ~8 MB per message and algorithm (han's native runs at
    # ~5 MB/s here); width 0.25: ResNet-50's 161 arrays at 1/16 of the elements (7.6 MiB)
    args.bench_args = args.bench_args or ["--min-bytes", "4K", "--max-bytes", "64M",
                                          "--iter-bytes", "8M", "--resnet-width", "0.25",
                                          "--rounds", "3"]
    return args


def serving_component(verbose_log):
    """The component serving MPI_Allreduce on MPI_COMM_WORLD, from one rank's
    coll_base_verbose lines: Open MPI takes each function from the available module of
    highest priority (han 35, tuned 30, ... in 5.0; coll/base/coll_base_comm_select.c)."""
    best, in_world = None, False
    for line in verbose_log.splitlines():
        if "new communicator:" in line:
            in_world = "MPI_COMM_WORLD" in line
        m = re.search(r"component available: (\w+), priority: (\d+)", line)
        if in_world and m and m.group(1) not in ("self", "inter", "sync", "ftagree", "adapt"):
            if best is None or int(m.group(2)) > best[1]:
                best = (m.group(1), int(m.group(2)))
    return best[0] if best else None


def probe_component(cluster, ranks_per_node, env):
    env = {**env, "OMPI_MCA_coll_base_verbose": "20"}
    r = cluster.run([sys.executable, "-c", PROBE], ranks_per_node, env=env, timeout=120)
    first = r.stdout + r.stderr
    pid = re.search(r"\[([\w-]+:\d+)\] coll:base:comm_select", first)
    if r.returncode != 0 or not pid:
        return None
    return serving_component("\n".join(l for l in first.splitlines() if pid.group(1) in l))


def bandwidth_bound(x, y, rails):
    """Flat ring over torus time in the bandwidth model: the flat ring moves 2(N-1)/N S over
    one link per node; the torus's X column rings move 2(Y-1)/Y S/X each, min(X, rails) at once
    (intra-node phases free)."""
    n = x * y
    return min(x, rails) * ((n - 1) / n) / ((y - 1) / y) if y > 1 else float("inf")


def summarize(rows, x, y, rails):
    res = [r for r in rows if r["message"] == "resnet50"]
    if not res:
        return
    print(f"\n# ResNet-50 gradients ({res[0]['bytes'] / 2**20:.1f} MiB at width "
          f"{res[0].get('resnet_width')}), medians, {x}x{y} on {rails} rail(s)")
    print(f"# {'coll':<8} {'algorithm':<13} {'component':<10} {'time_ms':>9}")
    for r in res:
        print(f"  {r['coll']:<8} {r['algorithm']:<13} {str(r.get('component') or '-'):<10} "
              f"{r['time_us'] / 1e3:>9.1f}")
    t = {(r["coll"], r["algorithm"]): r["time_us"] for r in res}
    torus = t.get(("default", "torus2d"))
    ring = t.get(("default", "ring"))
    natives = {k[0]: v for k, v in t.items() if k[1] == "native"}
    bound = bandwidth_bound(x, y, rails)
    if torus and ring:
        ratio = ring / torus
        print(f"# torus2d vs ring: {ratio:.2f}x (target >= 1.6: "
              f"{'met' if ratio >= 1.6 else 'SHORT'}); bandwidth bound {bound:.2f}x, reached "
              f"{ratio / bound:.0%} (target >= 75%: {'met' if ratio >= 0.75 * bound else 'SHORT'})")
    if torus and natives:
        coll, fastest = min(natives.items(), key=lambda kv: kv[1])
        ratio = fastest / torus
        print(f"# torus2d vs the faster native ({coll}): {ratio:.2f}x (target >= 1.3: "
              f"{'met' if ratio >= 1.3 else 'SHORT'})")


def main(argv=None):
    args = parse_args(argv)
    variants = [v for v in VARIANTS if v[0] in args.variants.split(",")]
    if not variants:
        sys.exit(f"error: --variants {args.variants!r}: use default and/or ^han")
    problem = minicluster.cannot_run_here(args.name + "probe")
    if problem:
        sys.exit(f"error: cluster-bench: {problem}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    # a job's time limit or Ctrl-C: the finally below still takes the cluster down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("cluster-bench: stopped by SIGTERM"))
    try:
        cluster = minicluster.Cluster.up(args.nodes, args.rails, args.rate, name=args.name)
    except minicluster.ClusterError as e:
        sys.exit(f"error: {e}")
    rate_mbit = rate_mbit_of(args.rate)
    rows, started = [], time.time()
    try:
        for coll, env in variants:
            component = probe_component(cluster, args.ranks_per_node, env)
            algorithms = args.algorithms if coll == "default" else ",".join(
                a for a in args.algorithms.split(",") if a in ("torus2d", *LIBRARY))
            tags = {"rails": args.rails, "rail_per_rank": not args.no_rail_per_rank,
                    "rate_mbit": rate_mbit, "coll": coll, "component": component}
            print(f"# cluster-bench: {args.nodes} nodes x {args.ranks_per_node} ranks, "
                  f"{args.rails} rail(s) at {args.rate}, coll {coll}: MPI_Allreduce served by "
                  f"{component or 'unknown'}", flush=True)
            with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
                argv = [sys.executable, BENCH, "--algorithms", algorithms, "--json", out.name,
                        *[f"--tag={k}={json.dumps(v)}" for k, v in tags.items()],
                        *args.bench_args]
                p = cluster.popen(argv, args.ranks_per_node, not args.no_rail_per_rank,
                                  env=env)
                try:
                    code = p.wait(timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    p.wait()
                    sys.exit(f"error: the {coll} run took over {args.timeout:g} s; pass a "
                             "smaller --max-bytes after -- or a larger --timeout")
                if code != 0:
                    sys.exit(f"error: the benchmark ({coll}) exited with {code}")
                for line in out:
                    if line.strip():
                        row = json.loads(line)     # the component serves MPI_Allreduce only
                        row["component"] = component if row["algorithm"] in LIBRARY else None
                        rows.append(row)
    finally:
        cluster.down()
    with open(args.json, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    grid = rows[0]["grid"].split("x") if rows else (args.ranks_per_node, args.nodes)
    summarize(rows, int(grid[0]), int(grid[1]), args.rails)
    print(f"# {len(rows)} rows in {args.json}; {time.time() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
