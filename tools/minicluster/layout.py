"""What an emulated cluster is made of, as names and addresses (pure: no system calls).

A cluster called NAME is a set of network namespaces whose names all start with ``NAME-``:

    NAME-switch        one Linux bridge per rail ("rail0", "rail1", ...): the switches
    NAME-head          where mpirun runs; one veth into rail 0 (address .254)
    NAME-node1 ...     the nodes; node i has one veth per rail ("rail0", ...), address .i

Interface names live inside the namespaces, so they never meet the root namespace's or
another cluster's: the switch-side end of node i's rail r is "n{i}r{r}" in NAME-switch.
Rail r is its own private /24 (10.77.r.0/24), with no gateway and no default route.
"""
import re
from dataclasses import asdict, dataclass

DEFAULT_NAME = "mc"
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,9}")     # no '-': a name can never prefix another's
SUBNET_BASE = "10.77"                           # rail r: 10.77.r.0/24
HEAD_HOST = 254
MAX_NODES = 200
MAX_RAILS = 8
RATE_RE = re.compile(r"\d+(\.\d+)?(bit|kbit|mbit|gbit)")
TBF = {"burst": "256kb", "latency": "100ms"}     # measured to reach 186-197 of 200 Mbit/s


class LayoutError(ValueError):
    """A cluster request that cannot be built; the message says what would work."""


@dataclass(frozen=True)
class Layout:
    name: str
    nodes: int
    rails: int
    rate: str

    def __post_init__(self):
        check_name(self.name)
        if not 1 <= self.nodes <= MAX_NODES:
            raise LayoutError(f"--nodes {self.nodes}: a cluster has 1 to {MAX_NODES} nodes")
        if not 1 <= self.rails <= MAX_RAILS:
            raise LayoutError(f"--rails {self.rails}: a node has 1 to {MAX_RAILS} rails")
        check_rate(self.rate)

    # --- namespaces and interfaces ---------------------------------------------------------
    @property
    def switch(self):
        return f"{self.name}-switch"

    @property
    def head(self):
        return f"{self.name}-head"

    def node(self, i):
        """Node i (1-based): its namespace name, which is also its hostname."""
        return f"{self.name}-node{i}"

    @property
    def node_names(self):
        return [self.node(i) for i in range(1, self.nodes + 1)]

    @property
    def namespaces(self):
        return [self.switch, self.head, *self.node_names]

    def node_index(self, node):
        """1-based index of a node given as its name, 'nodeI' or 'I'."""
        m = re.fullmatch(rf"(?:{re.escape(self.name)}-)?(?:node)?(\d+)", str(node))
        if not m or not 1 <= int(m.group(1)) <= self.nodes:
            raise LayoutError(f"{node!r} is not a node of cluster {self.name!r} (nodes: "
                              f"{self.node(1)} ... {self.node(self.nodes)}, or 1 ... "
                              f"{self.nodes})")
        return int(m.group(1))

    @staticmethod
    def bridge(rail):
        return f"rail{rail}"

    @staticmethod
    def port(i, rail):
        """The switch-side end of node i's rail (in the switch namespace); 'h' for the head."""
        return f"{'h' if i == 'head' else f'n{i}'}r{rail}"

    # --- addresses -------------------------------------------------------------------------
    @staticmethod
    def subnet(rail):
        return f"{SUBNET_BASE}.{rail}.0/24"

    @property
    def subnets(self):
        return [self.subnet(r) for r in range(self.rails)]

    @staticmethod
    def address(i, rail):
        return f"{SUBNET_BASE}.{rail}.{HEAD_HOST if i == 'head' else i}"

    def to_dict(self):
        return asdict(self)


def check_name(name):
    if not NAME_RE.fullmatch(name or ""):
        raise LayoutError(f"cluster name {name!r}: use 1-10 lower-case letters and digits, "
                          f"starting with a letter (e.g. {DEFAULT_NAME}, t42)")
    return name


def check_rate(rate):
    if not RATE_RE.fullmatch(str(rate)):
        raise LayoutError(f"--rate {rate!r}: give a tc rate such as 200mbit, 1gbit or 500kbit")
    return rate


def rate_mbit(rate):
    """A tc rate (checked) in Mbit/s: 200mbit -> 200.0, 1gbit -> 1000.0."""
    m = RATE_RE.fullmatch(check_rate(rate))
    scale = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}[m.group(2)]
    return float(rate[:m.start(2)]) * scale


def namespace_pattern(name):
    """Matches exactly the namespaces a cluster called ``name`` can have made."""
    return re.compile(rf"{re.escape(check_name(name))}-(switch|head|node[0-9]+)")


def shm_pattern(name):
    """What a cluster's jobs can leave in /dev/shm: the agent's per-job directories
    (minicluster.NODE.PID) and Open MPI's backing files had they gone there directly
    (sm_segment.HOST.UID.JOB.RANK)."""
    node = rf"{re.escape(check_name(name))}-(head|node[0-9]+)"
    return re.compile(rf"minicluster\.{node}\.[0-9]+|sm_segment\.{node}\..+")
