"""An emulated cluster on this machine: nodes as network namespaces joined by shaped links.

    python -m tools.minicluster up [--nodes 4] [--rails 2] [--rate 200mbit]
    python -m tools.minicluster run [--ranks-per-node 2] [--rail-per-rank] -- CMD ...
    python -m tools.minicluster mpirun -- MPIRUN_ARGS ...   # your own -np/--hostfile/--map-by
    python -m tools.minicluster status [--json | --hosts]
    python -m tools.minicluster link NODE down|up            # NODE: mc-node2, node2 or 2
    python -m tools.minicluster reshape --rate 100mbit
    python -m tools.minicluster down

Every verb takes --name NAME (default $MINICLUSTER_NAME or "mc"); the state lives in
$MINICLUSTER_STATE_DIR/NAME (default /run/minicluster/NAME). Needs root. `run` and `mpirun`
exit with the job's status. What it is and is not: docs/emulated_cluster.md.
"""
import argparse
import json
import os
import sys

from .cluster import Cluster, ClusterError, default_name, down
from .launch import quote
from .layout import DEFAULT_NAME


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.minicluster",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=None,
                        help=f"cluster name (default: $MINICLUSTER_NAME or {DEFAULT_NAME})")
    verbs = p.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", parents=[common], help="make the cluster")
    up.add_argument("--nodes", type=int, default=4)
    up.add_argument("--rails", type=int, default=2, help="links per node, one subnet each")
    up.add_argument("--rate", default="200mbit", help="tbf rate of every node link")
    run = verbs.add_parser("run", parents=[common], help="mpirun CMD, G ranks on every node")
    run.add_argument("--ranks-per-node", "-G", type=int, default=2)
    run.add_argument("--nodes", type=int, default=None, help="use only the first N nodes")
    run.add_argument("--rail-per-rank", action="store_true",
                     help="local rank L uses only rail L mod K")
    run.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    mpi = verbs.add_parser("mpirun", parents=[common],
                           help="Open MPI's mpirun on the cluster with your arguments")
    mpi.add_argument("args", nargs=argparse.REMAINDER, help="-- MPIRUN_ARGS...")
    st = verbs.add_parser("status", parents=[common], help="nodes, links, rates, counters")
    st.add_argument("--json", action="store_true")
    st.add_argument("--hosts", action="store_true", help="only the node names, one a line")
    st.add_argument("--local-dir", action="store_true",
                    help="only the path where each node sees its own local disk ($LOCAL_DIR)")
    verbs.add_parser("down", parents=[common], help="remove the cluster and any leftovers")
    rs = verbs.add_parser("reshape", parents=[common], help="change every link's rate")
    rs.add_argument("--rate", required=True)
    ln = verbs.add_parser("link", parents=[common], help="a node drops off / comes back")
    ln.add_argument("node")
    ln.add_argument("state", choices=["down", "up"])
    ln.add_argument("--rail", type=int, action="append", help="only this rail (repeatable)")
    return p.parse_args(argv)


def after_dashes(rest):
    return rest[1:] if rest[:1] == ["--"] else rest


def rate_text(node_end, switch_end):
    def mbit(bps):
        return "unshaped" if bps is None else f"{bps / 1e6:g}Mbit/s"
    same = node_end == switch_end
    return mbit(node_end) if same else f"{mbit(node_end)} (switch end {mbit(switch_end)})"


def print_status(s):
    print(f"cluster {s['name']}: {len(s['nodes'])} nodes, rails {', '.join(s['subnets'])}, "
          f"rate {s['rate']}; state {s['state_dir']}")
    print(f"  head {s['head']['namespace']} {s['head']['address']} (rail 0, unshaped), "
          f"processes {s['head']['processes']}")
    print(f"  {'node':<14} {'rail':<4} {'address':<12} {'link':<5} {'rate':<12} "
          f"{'tx bytes':>12} {'rx bytes':>12}  processes")
    for n in s["nodes"]:
        for r in n["rails"]:
            print(f"  {n['node']:<14} {r['rail']:<4} {r['address']:<12} {r['link']:<5} "
                  f"{rate_text(*r['rate_bps']):<12} {r['tx_bytes']:>12} {r['rx_bytes']:>12}  "
                  f"{n['processes'] if r['rail'] == 0 else ''}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    name = args.name or default_name()
    try:
        if args.verb == "up":
            c = Cluster.up(args.nodes, args.rails, args.rate, name)
            L = c.layout
            print(f"minicluster: {L.name} is up: {L.nodes} nodes ({L.node(1)} ... "
                  f"{L.node(L.nodes)}) x {L.rails} rails at {L.rate} "
                  f"({', '.join(L.subnets)}); head {L.head}; state {c.state_dir}")
            return 0
        if args.verb == "down":
            removed, problems = down(name)
            print(f"minicluster: {name}: removed {len(removed)} namespace(s)"
                  + (f" ({', '.join(removed)})" if removed else ": nothing was up"))
            for p in problems:
                print(f"minicluster: error: {p}", file=sys.stderr)
            return 1 if problems else 0
        c = Cluster.attach(name)
        if args.verb == "run":
            cmd = c.command(after_dashes(args.cmd), args.ranks_per_node, args.rail_per_rank,
                            args.nodes)
            return execute(c, cmd, args.dry_run)
        if args.verb == "mpirun":
            return execute(c, c.mpirun(after_dashes(args.args)), False)
        if args.verb == "status":
            if args.hosts:
                print("\n".join(c.layout.node_names))
                return 0
            if args.local_dir:
                print(c.local_dir)
                return 0
            s = c.status()
            print(json.dumps(s, indent=1)) if args.json else print_status(s)
            return 0
        if args.verb == "reshape":
            c.reshape(args.rate)
            print(f"minicluster: {name}: every node link now at {args.rate}")
            return 0
        if args.verb == "link":
            node = c.link(args.node, args.state == "up", args.rail)
            print(f"minicluster: {node} {args.state}"
                  + (f" (rails {args.rail})" if args.rail else " (every rail)"))
            return 0
    except ClusterError as e:
        print(f"minicluster: error: {e}", file=sys.stderr)
        return 2
    return 2


def execute(cluster, cmd, dry_run):
    """Replace this process by the job (its exit status and signals are mpirun's)."""
    if dry_run:
        print(quote(cmd))
        return 0
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, cluster.env())


if __name__ == "__main__":
    sys.exit(main())
