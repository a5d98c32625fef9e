"""An emulated multi-node cluster on one machine, for real Open MPI over real TCP.

From the shell: ``python -m tools.minicluster up|run|mpirun|status|link|reshape|down``
(``__main__.py``). From Python:

    from tools import minicluster
    c = minicluster.Cluster.up(nodes=4, rails=2, rate="200mbit", name="t1")
    r = c.run([sys.executable, "x.py"], ranks_per_node=2, timeout=120)   # CompletedProcess
    p = c.popen([...], rail_per_rank=True, stdout=subprocess.PIPE)     # Popen, own session
    c.link("node2", up=False); c.reshape("100mbit"); c.status()
    c.down()                       # or minicluster.down("t1"): also clears a crashed run's

``rail_per_rank=True`` puts ``rail_per_rank.sh`` in front of the program: local rank L uses
only rail L mod K. ``minicluster.Cluster.attach(name)`` opens a cluster that is up.
Parts: layout.py (names, addresses), network.py (iproute2/tc), launch.py (mpirun, agent),
cluster.py (state, verbs).
"""
from .cluster import Cluster, ClusterError, default_name, down
from .layout import DEFAULT_NAME, Layout
from .launch import RAIL_WRAPPER
from .network import cannot_run_here

__all__ = ["Cluster", "ClusterError", "Layout", "DEFAULT_NAME", "RAIL_WRAPPER", "default_name",
           "down", "cannot_run_here"]
