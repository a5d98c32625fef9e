"""The emulated cluster (tools/minicluster): real Open MPI over real TCP between network
namespaces, the trainer and a rendered job script across it, and a node that drops off.

Needs root and network namespaces with veth and tbf (CI here is root); elsewhere the tests
that build a cluster skip with one line naming why. One 4-node x 2-rail cluster, with a name
unique to this test session so that concurrent runs of the suite never meet, serves the whole
module; its fixture removes it also when a test fails, and checks that nothing is left.
"""
import json
import os
import re
import secrets
import subprocess
import sys
import time

import numpy as np
import pytest

from mpi import REPO, WORKERS
from test_jobs import option, render_ok, try_out
from test_resume import digests, records, trainer, wait_for_step
from tools import minicluster
from tools.minicluster import launch, network
from tools.minicluster.layout import Layout, LayoutError, namespace_pattern
from training.checkpoint import list_checkpoints

NODES, RAILS, G = 4, 2, 2
TIMEOUT_S = 10      # comm.timeout_s of the training runs: the cut run must end within it + margin
# test_resume's tiny run for 3 epochs: 15 updates at batch 16, then 15 at 32; grid from nodes
SHAPE = ["--set", "train.epochs=3", "--set", "batch.stages=[{until_epoch: 1, global_batch: "
         "16}, {until_epoch: 3, global_batch: 32}]", "--set", "comm.grid=auto",
         "--set", f"comm.timeout_s={TIMEOUT_S}",
         # momentum SGD as in cpu_demo.yaml: test_resume's LARS at a peak of 2.0 diverges at
         # 2 images per rank on 8 ranks (BN statistics of 2 images)
         "--set", "optim.optimizer=momentum", "--set", "optim.peak_lr=null",
         "--set", "optim.base_lr=0.8", "--set", "optim.decay=cosine", "--set", "optim.end_lr=null"]
TOTAL_STEPS = 30
RANK_ENV = {"PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"}


# --- without root: names, addresses and the launch agent ----------------------------------
def test_layout_names_addresses_and_bad_requests():
    L = Layout("t1", 3, 2, "200mbit")
    assert L.namespaces == ["t1-switch", "t1-head", "t1-node1", "t1-node2", "t1-node3"]
    assert L.subnets == ["10.77.0.0/24", "10.77.1.0/24"]
    assert L.address(2, 1) == "10.77.1.2" and L.address("head", 0) == "10.77.0.254"
    assert [L.node_index(n) for n in ("t1-node3", "node2", "1")] == [3, 2, 1]
    with pytest.raises(LayoutError, match="'node4' is not a node of cluster 't1'"):
        L.node_index("node4")
    for bad, text in [(dict(name="T-1"), "lower-case letters and digits"),
                      (dict(nodes=0), "1 to 200 nodes"), (dict(rails=9), "1 to 8 rails"),
                      (dict(rate="fast"), "a tc rate such as 200mbit")]:
        with pytest.raises(LayoutError, match=text):
            Layout(**{**dict(name="t1", nodes=2, rails=1, rate="1gbit"), **bad})
    mine = namespace_pattern("t1")
    assert mine.fullmatch("t1-node12") and mine.fullmatch("t1-switch")
    assert not any(mine.fullmatch(ns) for ns in ("t10-node1", "t1x-head", "t1-node", "t1-foo"))


@pytest.mark.procs
def test_the_agent_runs_the_daemon_inside_the_node_it_names(tmp_path):
    """The agent as PRRTE calls it (ssh options, HOST, the daemon's command words), with
    `setpriv` replaced by a recorder: the rest of the chain is what would run."""
    agent = tmp_path / "agent"
    agent.write_text(launch.agent_script(Layout("t1", 3, 2, "200mbit"), str(tmp_path)))
    agent.chmod(0o755)
    (tmp_path / "setpriv").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "setpriv").chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", MINICLUSTER_SHM=str(tmp_path))

    def call(*argv):
        return subprocess.run([str(agent), *argv], capture_output=True, text=True, env=env)

    r = call("-x", "-o", "BatchMode=yes", "t1-node2", "PRTE_PREFIX=/x;", "prted", "--a b")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:6] == ["--pdeathsig", "KILL", "ip", "netns", "exec", "t1-node2"]
    assert lines[6:11] == ["unshare", "--uts", "--pid", "--fork", "--kill-child"]
    assert lines[-3:-1] == ["t1-node2", "PRTE_PREFIX=/x; prted --a b"]   # joined, as ssh does
    job_dirs = [p.name for p in (tmp_path / "tmp").iterdir()] + \
        [p.name for p in tmp_path.glob("minicluster.*")]
    assert len(job_dirs) == 2 and all(d.startswith(("t1-node2.", "minicluster.t1-node2."))
                                      for d in job_dirs)
    stale = tmp_path / "minicluster.t1-node2.999999999"   # an ended job's (no such pid)
    stale.mkdir()
    call("t1-node2", "prted")
    assert not stale.exists()
    assert "t1-node3" in call("10.77.1.3", "prted").stdout.splitlines()   # by address too
    bad = call("elsewhere", "prted")
    assert bad.returncode == 255 and "'elsewhere' is not a node of cluster t1" in bad.stderr


# --- the cluster --------------------------------------------------------------------------
def root_links():
    """Interfaces in the root namespace with names the cluster uses inside its namespaces
    (only those: another job on the machine may add its own meanwhile)."""
    ours = re.compile(r"rail\d+|n\d+r\d+|hr\d+|p[01]")
    return sorted(d["ifname"] for d in json.loads(network.sh("ip", "-j", "link", "show"))
                  if ours.fullmatch(d["ifname"]))


def processes_of(state_root):
    """Pids of processes started for the cluster: mpirun and the agent name the state dir on
    their command line; daemons and ranks have their TMPDIR in it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if state_root.encode() in cmd or f"TMPDIR={state_root}".encode() in env:
            found.append(int(pid))
    return found


def leftovers(name, state_root, links_before):
    return {"namespaces": network.namespaces_of(name), "processes": processes_of(state_root),
            "state_dir": os.path.exists(os.path.join(state_root, name)),
            "root_links_added": sorted(set(root_links()) - set(links_before)),
            "shm_files": network.shm_files_of(name)}


NOTHING = {"namespaces": [], "processes": [], "state_dir": False, "root_links_added": [],
           "shm_files": []}


def fresh_name():
    while True:
        name = "t" + secrets.token_hex(3)
        if not network.namespaces_of(name) and not network.namespaces_of(name + "x"):
            return name


@pytest.fixture(scope="module")
def machine():
    why = network.cannot_run_here(fresh_name())
    if why:
        pytest.skip(f"emulated cluster: {why}")


def cluster_for_tests(tmp_path_factory, nodes=NODES, rails=RAILS):
    """A cluster with a fresh name (a generator for module fixtures): removed at the end,
    also when a test fails, and checked to have left nothing behind."""
    name = fresh_name()
    root = str(tmp_path_factory.mktemp("minicluster"))
    before = root_links()
    try:
        c = minicluster.Cluster.up(nodes, rails, "200mbit", name=name, root=root)
        c.root_links_before = before
        c.cli_env = dict(os.environ, MINICLUSTER_NAME=name, MINICLUSTER_STATE_DIR=root,
                         PYTHONPATH=REPO)
        yield c
    finally:
        removed, problems = minicluster.down(name, root)
        assert problems == []
        left = leftovers(name, root, before)
        for pid in left["processes"]:
            os.kill(pid, 9)
        assert left == NOTHING, f"the cluster left {left}"


@pytest.fixture(scope="module")
def cluster(machine, tmp_path_factory):
    yield from cluster_for_tests(tmp_path_factory)


def cli(c, *argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "tools.minicluster", *argv], cwd=REPO,
                          env=c.cli_env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.procs
@pytest.mark.root
def test_up_builds_only_inside_its_namespaces_with_no_route_out(cluster):
    L = cluster.layout
    assert sorted(network.namespaces_of(L.name)) == sorted(L.namespaces)
    assert root_links() == cluster.root_links_before         # nothing in the root namespace
    for i, node in enumerate(L.node_names, start=1):
        addrs = json.loads(network.ip(node, "-j", "addr", "show"))
        got = {a["ifname"]: [(x["family"], x["local"]) for x in a["addr_info"]] for a in addrs}
        assert got == {"lo": [("inet", "127.0.0.1")],
                       **{f"rail{r}": [("inet", f"10.77.{r}.{i}")] for r in range(RAILS)}}
        routes = json.loads(network.ip(node, "-j", "route", "show", "table", "all"))
        assert {r["dst"] for r in routes if r.get("table", "main") == "main"} == set(L.subnets)
        assert not any(r["dst"] == "default" for r in routes)
        assert network.qdisc_rates(node) == {f"rail{r}": 200_000_000 for r in range(RAILS)}
    for ns in L.namespaces:             # silent until a job runs: no ARP, IPv6 or IGMP
        sent = {d["ifname"]: d["stats64"]["tx"]["packets"] for d in network.links(ns)}
        assert set(sent.values()) == {0}, (ns, sent)
    switch = network.qdisc_rates(L.switch)
    assert switch == {L.port(i, r): 200_000_000 for i in range(1, NODES + 1) for r in range(RAILS)}
    again = cli(cluster, "up")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "is already up" in again.stderr


@pytest.mark.procs
@pytest.mark.root
def test_reshape_and_link_change_every_link_and_come_back(cluster):
    assert cli(cluster, "reshape", "--rate", "100mbit").returncode == 0
    rates = network.qdisc_rates(cluster.layout.switch)
    assert set(rates.values()) == {100_000_000}
    assert set(network.qdisc_rates(cluster.layout.node(3)).values()) == {100_000_000}
    assert cli(cluster, "link", "node3", "down").returncode == 0
    state = json.loads(cli(cluster, "status", "--json").stdout)
    assert [[r["link"] for r in n["rails"]] for n in state["nodes"]] == \
        [["up", "up"], ["up", "up"], ["down", "down"], ["up", "up"]]
    assert cli(cluster, "link", "3", "up").returncode == 0
    assert cli(cluster, "reshape", "--rate", "200mbit").returncode == 0
    state = json.loads(cli(cluster, "status", "--json").stdout)
    assert all(r["link"] == "up" and r["rate_bps"] == [200_000_000] * 2
               for n in state["nodes"] for r in n["rails"])
    bad = cli(cluster, "link", "node9", "down")
    assert bad.returncode == 2 and "'node9' is not a node of cluster" in bad.stderr


@pytest.mark.procs
@pytest.mark.root
def test_run_exits_with_the_status_of_the_command(cluster):
    # An MPI program: one that exits at once (`true`) can hang Open MPI 5.0.11's mpirun, a
    # launch race in PRRTE (docs/emulated_cluster.md).
    exit7 = "import sys; from mpi4py import MPI; sys.exit(7 if MPI.COMM_WORLD.rank == 5 else 0)"
    r = cli(cluster, "run", "--", sys.executable, "-c", exit7)
    assert r.returncode == 7, r.stderr[-2000:]           # rank 5, on node 3


@pytest.mark.procs
@pytest.mark.root
def test_ranks_are_on_their_nodes_and_every_algorithm_is_exact_across_them(cluster):
    r = cli(cluster, "run", "--ranks-per-node", str(G), "--rail-per-rank", "--",
            sys.executable, os.path.join(WORKERS, "cluster_probe.py"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    L = cluster.layout
    for rank, me in enumerate(res["ranks"]):
        node = L.node(rank // G + 1)
        assert me["hostname"] == me["processor"] == node
        assert me["local_size"] == G                       # MPI's shared-memory split
        assert me["rail"] == str(rank % G % RAILS)
        assert me["btl_tcp_if_include"] == L.subnet(rank % G % RAILS)
    assert res["auto_grid"] == [G, NODES]                  # comm.grid=auto from the nodes
    assert res["column_ring"] is True        # columns span nodes: torus2d's ring column phase
    assert res["failures"] == [] and res["checked"] == 75   # (4 algorithms + 1) x 15 cases
    # Local rank 0 of node 1 sent to local rank 0 of node 2: with a rail per rank, on rail 0.
    sent, total = res["node1_sent"], res["rail_mb"] * 2 ** 20
    assert sent["rail0"] > total and sent["rail1"] < total / 100, sent


@pytest.mark.procs
@pytest.mark.root
def test_nccl_auto_grid_finds_the_nodes_when_mpirun_interleaves_the_ranks(cluster):
    """--map-by node: rank r on node r % 4, so consecutive ranks are on different nodes; comm's
    NCCL backend (over the double) must still make one row per node, as the MPI backend does,
    and agree with nnabla's local_rank (the GPU each rank takes)."""
    r = cli(cluster, "mpirun", "--", "-np", str(NODES * G), "--hostfile",
            cluster.hostfile(G), "--map-by", "node", sys.executable,
            os.path.join(WORKERS, "nccl_auto_grid.py"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    hosts = res["hosts"]
    assert hosts[0] != hosts[1] and hosts[0] == hosts[NODES]          # interleaved
    assert res["grid"] == [G, NODES] and res["sum_ok"] is True
    for row in res["rows"]:                                            # a row is a node
        assert len({hosts[rank] for rank in row}) == 1
        assert [res["local_ranks"][rank] for rank in row] == list(range(G))
    assert len({hosts[row[0]] for row in res["rows"]}) == NODES


@pytest.mark.procs
@pytest.mark.root
def test_killing_mpirun_ends_every_daemon_and_rank_even_on_a_cut_off_node(cluster):
    """No stray ranks when a job is killed without warning. The connected nodes' daemons see
    mpirun's sockets close; a node cut off sees nothing, and its daemon (PID 1 of its own PID
    namespace, so its ranks go with it) ends by the parent-death signal the agent set."""
    ready = "import time; from mpi4py import MPI; MPI.COMM_WORLD.Barrier(); print('ready', " \
            "flush=True); time.sleep(600)"
    p = cluster.popen([sys.executable, "-c", ready], G, env=RANK_ENV, text=True,
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    cut = cluster.layout.node(NODES)
    try:
        for _ in range(NODES * G):       # every rank is past MPI init and a barrier
            assert p.stdout.readline().strip() == "ready"
        assert all(len(network.pids(node)) > G for node in cluster.layout.node_names)
        cluster.link(cut, up=False)
        os.kill(p.pid, 9)                # mpirun alone, no warning
        try:
            p.communicate(timeout=60)    # ends when nothing holds its stdout any more
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            raise
        deadline = time.time() + 30
        while any(node_processes(cluster).values()) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(node_processes(cluster).values()), node_processes(cluster)
    finally:
        cluster.link(cut, up=True)


# --- training across the nodes --------------------------------------------------------------
def train(toy_dir, out, *extra):
    return [sys.executable, *trainer(toy_dir, out, *SHAPE, *extra)]


@pytest.fixture(scope="module")
def uninterrupted(cluster, toy_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cluster-reference"))
    r = cluster.run(train(toy_dir, out), G, timeout=600, cwd=REPO, env=RANK_ENV)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out


@pytest.mark.procs
@pytest.mark.root
@pytest.mark.train
def test_training_across_the_nodes_ends_identical_on_every_rank(cluster, uninterrupted):
    start = records(uninterrupted)[0]
    assert start["event"] == "start" and start["world_size"] == NODES * G
    assert start["comm_grid"] == f"{G}x{NODES}"            # X = ranks per node, Y = nodes
    assert start["host"] == cluster.layout.node(1)
    digests(uninterrupted, ranks=NODES * G)                # asserts every rank holds the same
    with open(os.path.join(uninterrupted, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "completed" and summary["steps"] == TOTAL_STEPS


def waited_on(line):
    """The ranks a watchdog line says it waits on ("waiting on rank 1 (...)", "ranks [2, 6]
    on other nodes (...)")."""
    waiting = line.split("waiting on", 1)[-1] if "waiting on" in line else ""
    found = re.findall(r"ranks? \[([\d, ]+)\]|rank (\d+)", waiting)
    return {int(x) for group, one in found for x in (group.split(",") if group else [one])}


def node_processes(c):
    return {ns: network.pids(ns) for ns in [c.layout.head, *c.layout.node_names]}


@pytest.mark.procs
@pytest.mark.root
@pytest.mark.train
def test_a_node_dropping_off_ends_the_run_and_resume_ends_as_uninterrupted(
        cluster, uninterrupted, toy_dir, tmp_path):
    out = str(tmp_path / "cut")
    env = RANK_ENV
    p = cluster.popen(train(toy_dir, out), G, cwd=REPO, env=env, text=True,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cut = cluster.layout.node(2)                         # ranks 2 and 3
    try:
        wait_for_step(os.path.join(out, "log.jsonl"), 4, p)   # after the checkpoint at 3
        cluster.link(cut, up=False)
        t0 = time.time()
        stdout, stderr = p.communicate(timeout=TIMEOUT_S + 120)
        waited = time.time() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
            p.communicate()
        cluster.link(cut, up=True)
    assert p.returncode != 0
    assert waited < TIMEOUT_S + 60, waited       # watchdog + TCP giving up on the lost daemon
    lines = [ln for ln in stderr.splitlines() if ln.startswith("comm watchdog: rank ")]
    assert lines, stderr[-3000:]
    assert all("on group " in ln and "aborting the job" in ln for ln in lines)
    assert any(waited_on(ln) & {2, 3} for ln in lines), lines    # the cut node's ranks
    # Nothing from a partial update: checkpoints only at steps the log completed, all whole.
    logged = max(r["step"] for r in records(out) if r["event"] == "step")
    assert logged < TOTAL_STEPS and not os.path.exists(os.path.join(out, "summary.json"))
    ckpt_dir = os.path.join(out, "checkpoints")
    ckpts = list_checkpoints(ckpt_dir)                   # what --resume can pick from
    steps = [int(os.path.basename(f)[5:-4]) for f in ckpts]
    assert steps and all(s % 3 == 0 and s <= logged for s in steps), (steps, logged)
    for f in ckpts:
        with np.load(f) as z:
            assert len(z.files) > 0
    others = set(os.listdir(ckpt_dir)) - {os.path.basename(f) for f in ckpts}
    assert all(f.startswith(".tmp-") for f in others), others   # a write cut short, unused
    deadline = time.time() + 30                  # the job's daemons and ranks die with mpirun
    while any(node_processes(cluster).values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(node_processes(cluster).values()), node_processes(cluster)

    resumed = cluster.run(train(toy_dir, out, "--resume"), G, timeout=600, cwd=REPO, env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"resume: step {steps[-1]} of {TOTAL_STEPS}" in resumed.stdout
    assert digests(out, ranks=NODES * G) == digests(uninterrupted, ranks=NODES * G)
    assert [r["step"] for r in records(out) if r["event"] == "step"] == \
        list(range(1, TOTAL_STEPS + 1))


@pytest.mark.procs
@pytest.mark.root
@pytest.mark.train
def test_a_rendered_pbs_job_runs_unchanged_across_the_nodes(cluster, toy_dir, tmp_path):
    script, _ = render_ok(tmp_path, "--system", "abci3", "--nodes", "2", "--walltime",
                          "1:00:00", "--group", "g")
    out = tmp_path / "tryout"
    r, calls = try_out(script, "--cluster", "--gpus-per-node", str(G), "--data-dir", toy_dir,
                       "--out", str(out), env=cluster.cli_env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (argv,) = calls
    assert option(argv, "--map-by") == f"ppr:{G}:node"      # the job's own placement ...
    hosts = open(option(argv, "--hostfile")).read().splitlines()
    assert hosts == [f"{cluster.layout.node(i)} slots={G}" for i in (1, 2)]   # ... and nodes
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 * G and start["comm_grid"] == f"{G}x2"   # found: auto
    assert start["host"] == cluster.layout.node(1)
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


# --- clean-up ---------------------------------------------------------------------------------
@pytest.mark.procs
@pytest.mark.root
def test_down_clears_what_a_crashed_run_left_and_nothing_else(machine, tmp_path):
    name = fresh_name()
    env = dict(os.environ, MINICLUSTER_NAME=name, MINICLUSTER_STATE_DIR=str(tmp_path),
               PYTHONPATH=REPO)
    mine, decoy = [f"{name}-switch", f"{name}-node3"], f"{name}x-node1"
    shm = [os.path.join(network.SHM, f"sm_segment.{host}.0.1a2b0001.0")
           for host in (f"{name}-node3", f"{name}x-node1")]
    sleeper = None
    try:
        for ns in [*mine, decoy]:
            network.sh("ip", "netns", "add", ns)
        sleeper = subprocess.Popen(["ip", "netns", "exec", f"{name}-node3", "sleep", "600"])
        for f in shm:                                         # a killed job's, and another's
            open(f, "w").close()
        up = subprocess.run([sys.executable, "-m", "tools.minicluster", "up"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
        assert up.returncode == 2 and "left namespaces behind" in up.stderr
        down = subprocess.run([sys.executable, "-m", "tools.minicluster", "down"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert "removed 2 namespace(s)" in down.stdout
        assert sleeper.wait(timeout=30) != 0                 # the process in it was ended
        assert network.namespaces_of(name) == [] and decoy in network.namespaces()
        assert [os.path.exists(f) for f in shm] == [False, True]
    finally:
        for f in shm:
            if os.path.exists(f):
                os.unlink(f)
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        network.destroy([ns for ns in [*mine, decoy] if ns in network.namespaces()])
    assert not network.namespaces_of(name) and not network.namespaces_of(name + "x")


@pytest.mark.procs
@pytest.mark.root
def test_down_removes_the_cluster_and_everything_it_started(cluster):
    name, root = cluster.layout.name, os.path.dirname(cluster.state_dir)
    r = cli(cluster, "down")
    assert r.returncode == 0 and f"removed {2 + NODES} namespace(s)" in r.stdout, r.stderr
    assert leftovers(name, root, cluster.root_links_before) == NOTHING
    again = cli(cluster, "down")
    assert again.returncode == 0 and "nothing was up" in again.stdout
