"""Open MPI's own launcher across the emulated nodes.

mpirun (PRRTE) runs in the head namespace with its own hostname. It starts one daemon per node
through its ssh launcher, whose "ssh" is replaced by ``agent`` (written into the cluster's
state dir): instead of logging in, the agent runs the daemon's command inside the node's
network namespace, in a new UTS namespace carrying the node's hostname and a new PID
namespace. Open MPI's "same node" is "served by the same daemon" (ompi_rte.c reads
PMIX_LOCAL_PEERS from it), so ranks under one daemon share a node for MPI_COMM_TYPE_SHARED,
``comm.grid=auto`` and the sm transport; ranks under different daemons talk TCP over the rails.

Clean-up is structural: the agent holds PR_SET_PDEATHSIG=KILL (setpriv), so if mpirun dies by
any means its daemons' PID namespaces die with it, and every rank of that node with them.
"""
import os
import shlex

from .layout import Layout

HERE = os.path.dirname(os.path.abspath(__file__))
RAIL_WRAPPER = os.path.join(HERE, "rail_per_rank.sh")

AGENT = """#!/bin/sh
# PRRTE's "ssh" for the emulated cluster {name} (python -m tools.minicluster; written by up).
# Called as: agent [ssh options] HOST COMMAND...  HOST is a node's name or one of its addresses.
# Runs COMMAND (PRRTE's daemon) as ssh would, but inside HOST's network namespace, with HOST as
# hostname (new UTS namespace) in a new PID namespace whose processes all die with the daemon,
# and with the parent-death signal set so that they also die if mpirun does. Each node has its
# own TMPDIR for each job, removed when the daemon ends: PRRTE names its session dir after the
# daemon's pid, the same in every node's PID namespace, and the nodes share this machine's /tmp.
while [ $# -gt 0 ]; do
    case $1 in
        -o|-l|-p|-i|-F|-J) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
host=$1
shift
case $host in
{cases}
    *) echo "minicluster agent: '$host' is not a node of cluster {name} ({first} ... {last})" >&2
       exit 255 ;;
esac
# This job's TMPDIR, and a directory in memory for Open MPI's shared-memory backing files
# (directly in /dev/shm they are left behind when a job is killed). Both are named after this
# agent's pid, which lives as long as the node's daemon: those of ended jobs are removed here.
tmp={state_dir}/tmp
shm=${{MINICLUSTER_SHM:-/dev/shm}}
for dir in "$tmp/$ns".* "$shm/minicluster.$ns".*; do
    if [ -d "$dir" ] && ! kill -0 "${{dir##*.}}" 2>/dev/null; then rm -rf "$dir"; fi
done
export TMPDIR=$tmp/$ns.$$
shm=$shm/minicluster.$ns.$$
mkdir -p "$TMPDIR" "$shm"
export OMPI_MCA_btl_sm_backing_directory="$shm" OMPI_MCA_shmem_mmap_backing_file_base_dir="$shm"
# The node's local disk: {state_dir}/nodes/NODE, kept for the cluster's life, seen by the
# node's processes at LOCAL_DIR (the same path on every node, each with its own contents)
# through a bind mount in the daemon's own mount namespace: it vanishes with the daemon.
export LOCAL_DIR={state_dir}/local MINICLUSTER_NODE_DIR={state_dir}/nodes/$ns
mkdir -p "$LOCAL_DIR" "$MINICLUSTER_NODE_DIR"
exec setpriv --pdeathsig KILL ip netns exec "$ns" unshare --uts --pid --fork --kill-child \\
    --mount --propagation private \\
    sh -c 'hostname "$0" && mount --bind "$MINICLUSTER_NODE_DIR" "$LOCAL_DIR" && sh -c "$1"; status=$?; rm -rf "$TMPDIR" "$2"; exit $status' \\
    "$ns" "$*" "$shm"
"""


def agent_script(layout: Layout, state_dir):
    cases = []
    for i, node in enumerate(layout.node_names, start=1):
        names = [node] + [layout.address(i, r) for r in range(layout.rails)]
        cases.append(f"    {'|'.join(names)}) ns={node} ;;")
    return AGENT.format(name=layout.name, cases="\n".join(cases), first=layout.node(1),
                        last=layout.node(layout.nodes), state_dir=shlex.quote(state_dir))


def local_dir(state_dir):
    """Where every node sees its own local disk (jobs get it as $LOCAL_DIR)."""
    return os.path.join(state_dir, "local")


def hostfile_text(layout: Layout, ranks_per_node, nodes=None):
    names = layout.node_names[:nodes] if nodes else layout.node_names
    return "".join(f"{n} slots={ranks_per_node}\n" for n in names)


def cluster_flags(layout: Layout, agent, given=()):
    """The mpirun options that make Open MPI use the emulated nodes (measured to work:
    ../shared/reference/emulated-cluster.md), leaving out any the caller's ``given`` arguments
    already set (mpirun refuses e.g. --bind-to twice; the caller's choice wins)."""
    options = [
        ("--prtemca", "plm", "ssh"),             # not Slurm's srun, even inside an allocation
        ("--prtemca", "plm_ssh_agent", agent),
        ("--prtemca", "plm_ssh_no_tree_spawn", "1"),   # mpirun starts every daemon itself
        ("--prtemca", "oob_tcp_if_include", layout.subnet(0)),   # control traffic on rail 0
        ("--mca", "pml", "ob1"),
        ("--mca", "btl", "self,sm,tcp"),         # TCP between nodes, sm inside one
        ("--mca", "btl_tcp_if_include", ",".join(layout.subnets)),
        # Every "node" shares this machine's cores: no binding (else rank 0 of every node sits
        # on core 0) and yield while waiting instead of spinning.
        ("--bind-to", "none"),
        ("--mca", "mpi_yield_when_idle", "1"),
    ]
    if os.geteuid() == 0:
        options.append(("--allow-run-as-root",))
    given = list(given)
    flags = []
    for opt in options:
        key = list(opt[:2] if opt[0] in ("--mca", "--prtemca") else opt[:1])
        if not any(given[k:k + len(key)] == key for k in range(len(given))):
            flags += opt
    return flags


def rail_env(layout: Layout):
    """What the per-rank rail wrapper reads: the rails' subnets in rail order."""
    return {"MINICLUSTER_RAILS": ",".join(layout.subnets)}


def in_head(layout: Layout, argv):
    """``argv`` run in the head namespace under the head's own hostname (exec, no fork: the
    returned command's pid is argv's, so signals to it reach mpirun)."""
    return ["ip", "netns", "exec", layout.head, "unshare", "--uts", "sh", "-c",
            'hostname "$0" && exec "$@"', layout.head, *argv]


def mpirun_command(layout: Layout, agent, mpirun, mpirun_args):
    """The full command: mpirun with the cluster's flags, then ``mpirun_args`` as given
    (they hold -np, placement and the program)."""
    return in_head(layout, [mpirun, *cluster_flags(layout, agent, mpirun_args), *mpirun_args])


def job_args(layout: Layout, hostfile, ranks_per_node, argv, rail_per_rank=False, nodes=None):
    """mpirun arguments for G ranks on each node: by-slot mapping, so node k holds ranks
    kG ... kG+G-1 (a row of the torus); the rail wrapper in front of the program if asked."""
    n = nodes or layout.nodes
    wrapper = [RAIL_WRAPPER] if rail_per_rank else []
    return ["-np", str(n * ranks_per_node), "--hostfile", hostfile,
            "--map-by", f"ppr:{ranks_per_node}:node", *wrapper, *argv]


def quote(argv):
    return " ".join(shlex.quote(a) for a in argv)
