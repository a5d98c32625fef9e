"""A cluster's life: up, run jobs on it, reshape, cut a node off, down. State on disk.

The state dir (``$MINICLUSTER_STATE_DIR/NAME``, default ``/run/minicluster/NAME``) holds
``state.json`` (the layout and what was made), the launch agent, host files and each job's
per-node TMPDIR. The record is written before the first namespace, so a crash part-way
through ``up`` still leaves one; ``down`` removes what the record names plus any namespace
matching the cluster's own prefix (``NAME-switch``, ``NAME-head``, ``NAME-nodeI``) and what
jobs left in /dev/shm. A record whose namespaces are all gone (a reboot) counts as no cluster.
"""
import json
import os
import shutil
import subprocess
import sys

from . import launch, network
from .layout import DEFAULT_NAME, Layout, LayoutError, check_name, check_rate, namespace_pattern

STATE_ROOT = "/run/minicluster"


class ClusterError(RuntimeError):
    """One line: what is wrong and what to do about it."""


def default_name():
    return os.environ.get("MINICLUSTER_NAME", DEFAULT_NAME)


def state_root():
    return os.environ.get("MINICLUSTER_STATE_DIR", STATE_ROOT)


def mpirun_path():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    found = here if os.path.exists(here) else shutil.which("mpirun")
    if not found:
        raise ClusterError("no mpirun next to this Python or on PATH: run make setup")
    return found


class Cluster:
    def __init__(self, layout: Layout, state_dir):
        self.layout = layout
        self.state_dir = state_dir

    # --- finding and making -----------------------------------------------------------------
    @staticmethod
    def dir_for(name, root=None):
        return os.path.join(root or state_root(), check_name(name))

    @classmethod
    def attach(cls, name=None, root=None):
        """The cluster called ``name`` that is up (ClusterError if none is)."""
        name = name or default_name()
        d = cls.dir_for(name, root)
        try:
            with open(os.path.join(d, "state.json")) as f:
                state = json.load(f)
        except FileNotFoundError:
            raise ClusterError(f"no cluster {name!r} is up (no {d}/state.json): start one with "
                               "python -m tools.minicluster up (make cluster-up)") from None
        if not network.namespaces_of(name):
            raise ClusterError(f"cluster {name!r} is recorded in {d} but its namespaces are "
                               "gone (a reboot?): python -m tools.minicluster down, then up")
        return cls(Layout(**state["layout"]), d)

    @classmethod
    def up(cls, nodes=4, rails=2, rate="200mbit", name=None, root=None):
        try:
            layout = Layout(name or default_name(), nodes, rails, rate)
        except LayoutError as e:
            raise ClusterError(str(e)) from None
        d = cls.dir_for(layout.name, root)
        found = network.namespaces_of(layout.name)
        if os.path.exists(os.path.join(d, "state.json")) and found:
            raise ClusterError(f"cluster {layout.name!r} is already up ({d}): use it, or "
                               "python -m tools.minicluster down first (or --name OTHER)")
        if found:
            raise ClusterError(f"cluster {layout.name!r} left namespaces behind "
                               f"({', '.join(found)}): python -m tools.minicluster down "
                               f"--name {layout.name} clears them")
        why = network.cannot_run_here(layout.name)
        if why:
            raise ClusterError(f"cannot emulate a cluster here: {why}")
        shutil.rmtree(d, ignore_errors=True)       # a stale record (its namespaces are gone)
        os.makedirs(d)
        cluster = cls(layout, d)
        made = []
        cluster._write_state(made=layout.namespaces, complete=False)   # a record before work
        try:
            network.build(layout, made)
        except (network.NetworkError, OSError) as e:
            network.destroy(made)
            shutil.rmtree(d, ignore_errors=True)
            raise ClusterError(f"could not build cluster {layout.name!r} (removed what was "
                               f"made): {e}") from None
        with open(os.path.join(d, "agent"), "w") as f:
            f.write(launch.agent_script(layout, d))
        os.chmod(os.path.join(d, "agent"), 0o755)
        cluster._write_state(made=made, complete=True)
        return cluster

    def _write_state(self, **extra):
        tmp = os.path.join(self.state_dir, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"layout": self.layout.to_dict(), **extra}, f, indent=1)
        os.replace(tmp, os.path.join(self.state_dir, "state.json"))

    # --- running jobs -------------------------------------------------------------------------
    @property
    def local_dir(self):
        """The path of every node's own local directory (a private bind mount per node)."""
        return launch.local_dir(self.state_dir)

    def node_dir(self, node):
        """Where node ``node``'s local directory lives on this machine (for checks)."""
        return os.path.join(self.state_dir, "nodes", self.layout.node(self.layout.node_index(node)))

    @property
    def agent(self):
        return os.path.join(self.state_dir, "agent")

    def hostfile(self, ranks_per_node, nodes=None):
        """A host file naming the nodes with ``slots=G`` (written on demand)."""
        n = nodes or self.layout.nodes
        if not 1 <= n <= self.layout.nodes:
            raise ClusterError(f"{n} nodes asked for; cluster {self.layout.name!r} has "
                               f"{self.layout.nodes}")
        path = os.path.join(self.state_dir, f"hosts-{n}x{ranks_per_node}.txt")
        tmp = f"{path}.{os.getpid()}"        # another job may be reading it: replace, not rewrite
        with open(tmp, "w") as f:
            f.write(launch.hostfile_text(self.layout, ranks_per_node, n))
        os.replace(tmp, path)
        return path

    def mpirun(self, mpirun_args):
        """The command running Open MPI's mpirun in the head with the cluster's flags and
        ``mpirun_args`` unchanged (the caller places the ranks: -np, --hostfile, --map-by)."""
        return launch.mpirun_command(self.layout, self.agent, mpirun_path(), list(mpirun_args))

    def command(self, argv, ranks_per_node=2, rail_per_rank=False, nodes=None,
                mpirun_args=()):
        """The command that runs ``argv`` as G ranks on each node (rank k*G+l on node k+1)."""
        if ranks_per_node < 1:
            raise ClusterError(f"--ranks-per-node {ranks_per_node}: at least 1")
        if not argv:
            raise ClusterError("nothing to run: give the command after --")
        job = launch.job_args(self.layout, self.hostfile(ranks_per_node, nodes),
                              ranks_per_node, list(argv), rail_per_rank, nodes)
        return self.mpirun([*mpirun_args, *job])

    def env(self, extra=None):
        """The environment for mpirun: ours, the rails for the rail wrapper, and ``extra``."""
        return {**os.environ, **launch.rail_env(self.layout), **(extra or {})}

    def popen(self, argv, ranks_per_node=2, rail_per_rank=False, nodes=None, mpirun_args=(),
              env=None, **popen_kw):
        """Start a job; its own session, so os.killpg(p.pid, ...) reaches mpirun. Its daemons
        and ranks die with mpirun (see launch.py)."""
        popen_kw.setdefault("start_new_session", True)
        return subprocess.Popen(self.command(argv, ranks_per_node, rail_per_rank, nodes,
                                             mpirun_args), env=self.env(env), **popen_kw)

    def run(self, argv, ranks_per_node=2, rail_per_rank=False, nodes=None, mpirun_args=(),
            env=None, timeout=None, cwd=None):
        """Run a job to its end; returns a CompletedProcess with text stdout and stderr.
        On ``timeout`` (seconds) the job is killed and subprocess.TimeoutExpired raised."""
        p = self.popen(argv, ranks_per_node, rail_per_rank, nodes, mpirun_args, env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            raise
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    # --- changing the network -----------------------------------------------------------------
    def reshape(self, rate):
        try:
            check_rate(rate)
        except LayoutError as e:
            raise ClusterError(str(e)) from None
        network.reshape(self.layout, rate)
        self.layout = Layout(self.layout.name, self.layout.nodes, self.layout.rails, rate)
        self._write_state(made=self.layout.namespaces, complete=True)

    def link(self, node, up, rails=None):
        """Node ``node`` (name, 'nodeI' or I) drops off every rail (up=False) or comes back."""
        try:
            i = self.layout.node_index(node)
        except LayoutError as e:
            raise ClusterError(str(e)) from None
        network.set_link(self.layout, i, up, rails)
        return self.layout.node(i)

    # --- looking ------------------------------------------------------------------------------
    def status(self):
        """Live: per node its addresses, each rail's link state, tbf rates, byte counters and
        how many processes run in it."""
        L = self.layout
        ports = {d["ifname"]: d for d in network.links(L.switch)}
        rates = network.qdisc_rates(L.switch)
        nodes = []
        for i, node in enumerate(L.node_names, start=1):
            own = {d["ifname"]: d for d in network.links(node)}
            node_rates = network.qdisc_rates(node)
            rails = []
            for r in range(L.rails):
                port, dev = ports.get(L.port(i, r), {}), own.get(L.bridge(r), {})
                stats = dev.get("stats64", {})
                rails.append({"rail": r, "address": L.address(i, r),
                              "link": "up" if "UP" in port.get("flags", []) else "down",
                              # tbf at the node's end and at the switch's end, bit/s
                              "rate_bps": [node_rates.get(L.bridge(r)), rates.get(L.port(i, r))],
                              "tx_bytes": stats.get("tx", {}).get("bytes"),
                              "rx_bytes": stats.get("rx", {}).get("bytes")})
            nodes.append({"node": node, "rails": rails, "processes": len(network.pids(node))})
        return {"name": L.name, "state_dir": self.state_dir, "local_dir": self.local_dir,
                "rate": L.rate,
                "subnets": L.subnets, "head": {"namespace": L.head,
                                               "address": L.address("head", 0),
                                               "processes": len(network.pids(L.head))},
                "nodes": nodes}

    # --- unmaking ---------------------------------------------------------------------------
    def down(self):
        return down(self.layout.name, os.path.dirname(self.state_dir))


def down(name=None, root=None):
    """Remove cluster ``name``: what its state names and any leftover namespace with its
    prefix (a crashed earlier run). Returns (what was removed, problems)."""
    name = name or default_name()
    d = Cluster.dir_for(name, root)
    recorded = []
    try:
        with open(os.path.join(d, "state.json")) as f:
            recorded = json.load(f).get("made", [])
    except (FileNotFoundError, ValueError):
        pass
    existing, ours = set(network.namespaces()), namespace_pattern(name)
    nss = [ns for ns in recorded if ns in existing and ours.fullmatch(ns)]   # never another's
    nss += [ns for ns in network.namespaces_of(name) if ns not in nss]
    problems = network.destroy(nss)
    for f in network.shm_files_of(name):       # what killed jobs left in /dev/shm
        shutil.rmtree(f) if os.path.isdir(f) else os.unlink(f)
    if os.path.isdir(d) and not problems:
        shutil.rmtree(d)
    return nss, problems
