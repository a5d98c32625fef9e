"""The cluster's network, made and unmade with iproute2 and tc (subprocess; no Python deps).

Nothing is created in the root namespace: every veth is created with both ends already in
their namespaces (``ip link add NAME netns A type veth peer name PEER netns B``), the bridges
live in the switch namespace, and IPv6 is switched off in every namespace before any
interface exists, so the only addresses are the rails' IPv4 ones (no link-local chatter).
"""
import json
import os
import shutil
import signal
import subprocess
import time

from .layout import TBF, Layout, namespace_pattern, shm_pattern

TOOLS = ("ip", "tc", "unshare", "setpriv", "sysctl")


class NetworkError(RuntimeError):
    """An iproute2/tc command failed; the message names the command and its error."""


def sh(*argv, check=True):
    """Run one command; returns stdout. Raises NetworkError with the command and stderr."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {r.stderr.strip() or r.returncode}")
    return r.stdout


def ip(ns, *args, check=True):
    return sh("ip", "-n", ns, *args, check=check)


# --- can this machine do it? -----------------------------------------------------------------
def cannot_run_here(probe_name):
    """None if this machine can build a cluster, else one line saying why not. Builds and
    removes a throwaway namespace ``PROBE_NAME-switch`` with a bridge and a shaped veth."""
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces): run it as root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"missing {', '.join(missing)} (iproute2, util-linux, procps): "
                "apt-get install iproute2 util-linux procps")
    ns = f"{probe_name}-switch"
    try:
        sh("ip", "netns", "add", ns)
    except NetworkError as e:
        return f"no network namespaces here ({e})"
    steps = [("no veth interfaces here",
              lambda: ip(ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1")),
             ("no Linux bridges here", lambda: ip(ns, "link", "add", "b0", "type", "bridge")),
             ("no tbf qdisc here, so links cannot be shaped", lambda: shape(ns, "p0", "1mbit"))]
    try:
        for problem, step in steps:
            try:
                step()
            except NetworkError as e:
                return f"{problem} ({e})"
    finally:
        sh("ip", "netns", "del", ns, check=False)
    return None


# --- building ---------------------------------------------------------------------------------
# Per-namespace sysctls, set before any interface exists:
# - no IPv6: no link-local addresses, router solicitations or duplicate-address probes;
# - TCP gives up on a peer that acknowledges nothing after 5 retransmissions (about 12.6 s;
#   Linux's default 15 is about 15 min). When a node drops off, the watchdog aborts the job,
#   but mpirun then waits for the lost node's daemon until TCP gives up (measured here: still
#   waiting after 40 s with the default; about 25 s after the abort with 6).
SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
           "net.ipv4.tcp_retries2=5")


def add_namespace(ns):
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", *SYSCTLS)
    ip(ns, "link", "set", "lo", "up")


def shape(ns, dev, rate, verb="add"):
    sh("tc", "-n", ns, "qdisc", verb, "dev", dev, "root", "tbf", "rate", rate,
       "burst", TBF["burst"], "latency", TBF["latency"])


def build(layout: Layout, made):
    """Make the whole cluster; ``made`` (a list) is appended with each namespace as soon as
    it exists, so a failure part-way can be undone exactly."""
    L = layout
    for ns in L.namespaces:
        add_namespace(ns)
        made.append(ns)
    for r in range(L.rails):   # an unmanaged switch: no IGMP snooping (it would send reports)
        ip(L.switch, "link", "add", L.bridge(r), "type", "bridge", "mcast_snooping", "0")
        ip(L.switch, "link", "set", L.bridge(r), "up")
    for i in range(1, L.nodes + 1):
        for r in range(L.rails):
            _plug(L, L.node(i), i, r, L.rate)
    _plug(L, L.head, "head", 0, None)      # the head carries only mpirun's control traffic
    check_isolated(L)


def _plug(L, ns, i, rail, rate):
    """A veth from ``ns`` (named railR there) into rail R's bridge, with its address."""
    dev, port = L.bridge(rail), L.port(i, rail)
    sh("ip", "link", "add", "name", dev, "netns", ns, "type", "veth",
       "peer", "name", port, "netns", L.switch)
    ip(L.switch, "link", "set", port, "master", L.bridge(rail))
    ip(ns, "addr", "add", f"{L.address(i, rail)}/24", "dev", dev)
    if rate:                                 # both ends: node egress and switch egress
        shape(ns, dev, rate)
        shape(L.switch, port, rate)
    ip(L.switch, "link", "set", port, "up")
    ip(ns, "link", "set", dev, "up")


def check_isolated(L):
    """No route out: every namespace's routes are the rails' own /24s (no default route)."""
    subnets = set(L.subnets)
    for ns in L.namespaces:
        for route in json.loads(ip(ns, "-j", "route", "show") or "[]"):
            if route.get("dst") not in subnets:
                raise NetworkError(f"unexpected route in {ns}: {route}")


def reshape(L: Layout, rate):
    for i in range(1, L.nodes + 1):
        for r in range(L.rails):
            shape(L.node(i), L.bridge(r), rate, "change")
            shape(L.switch, L.port(i, r), rate, "change")


def set_link(L: Layout, i, up, rails=None):
    """Node i's cables at the switch: down means every packet to or from it is lost
    (its own interfaces keep their addresses and routes, as a pulled cable does)."""
    for r in rails if rails is not None else range(L.rails):
        ip(L.switch, "link", "set", L.port(i, r), "up" if up else "down")
    if up:
        # While the cable was out, the neighbour entries of the node and of its peers went
        # FAILED, and a connect() to a FAILED entry fails at once with EHOSTUNREACH (measured:
        # the first attempt 0.07-0.15 s after `link up`, then fine 0.3 s later). Open MPI's
        # daemons do not retry that connect: the next job failed in 4 of 7 tries ("A daemon
        # failed to report back"). Forgotten entries are resolved afresh by the first packet.
        for ns in (L.head, *L.node_names):
            ip(ns, "neigh", "flush", "all")


# --- looking --------------------------------------------------------------------------------
def namespaces():
    return [line.split()[0] for line in sh("ip", "netns", "list", check=False).splitlines()
            if line.strip()]


def namespaces_of(name):
    pattern = namespace_pattern(name)
    return [ns for ns in namespaces() if pattern.fullmatch(ns)]


def pids(ns):
    return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]


def links(ns):
    return json.loads(ip(ns, "-j", "-s", "link", "show", check=False) or "[]")


def qdisc_rates(ns):
    """{device: tbf rate in bit/s} (tc's JSON gives bytes/s)."""
    out = {}
    for q in json.loads(sh("tc", "-n", ns, "-j", "qdisc", "show", check=False) or "[]"):
        if q.get("kind") == "tbf" and "rate" in q.get("options", {}):
            out[q["dev"]] = 8 * q["options"]["rate"]
    return out


# --- unmaking ---------------------------------------------------------------------------------
def kill_processes(nss, grace_s=3.0):
    """SIGTERM every process in these namespaces, SIGKILL what is left after ``grace_s``."""
    victims = {p for ns in nss for p in pids(ns)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in victims:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            victims = {p for ns in nss for p in pids(ns)}
            if not victims:
                return []
            time.sleep(0.1)
    return sorted(victims)


SHM = "/dev/shm"


def shm_files_of(name):
    pattern = shm_pattern(name)
    try:
        return sorted(os.path.join(SHM, f) for f in os.listdir(SHM) if pattern.fullmatch(f))
    except FileNotFoundError:
        return []


def destroy(nss):
    """Kill what runs in the namespaces, then delete them (their veths and bridges go with
    them). Returns what could not be removed, as one-line problems."""
    problems = []
    alive = kill_processes(nss)
    if alive:
        problems.append(f"processes {alive} would not die")
    for ns in nss:
        try:
            sh("ip", "netns", "del", ns)
        except NetworkError as e:
            problems.append(str(e))
    return problems
