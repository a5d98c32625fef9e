"""make cluster-bench (tools/cluster_bench.py) on its own emulated cluster: 3 nodes x 2 ranks,
2 rails, both collective variants, ``--check`` on short sizes. Needs root and network
namespaces, like tests/test_minicluster.py (whose helpers check that nothing is left)."""
import json
import os
import subprocess
import sys

import pytest

from mpi import REPO
from test_minicluster import NOTHING, fresh_name, leftovers, machine, root_links  # noqa: F401

pytestmark = [pytest.mark.procs, pytest.mark.root]

NODES, G = 3, 2


def test_cluster_bench_checks_every_algorithm_across_nodes_and_names_the_components(
        machine, tmp_path):  # noqa: F811
    name, root, out = fresh_name(), str(tmp_path / "state"), tmp_path / "rows.jsonl"
    before = root_links()
    env = dict(os.environ, MINICLUSTER_STATE_DIR=root, PYTHONPATH=REPO)
    r = subprocess.run(
        [sys.executable, "-m", "tools.cluster_bench", "--name", name, "--nodes", str(NODES),
         "--ranks-per-node", str(G), "--json", str(out), "--",
         "--check", "--min-bytes", "4K", "--max-bytes", "64K", "--factor", "16",
         "--resnet-width", "0.0625", "--rounds", "1", "--iter-bytes", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_coll = {c: [x for x in rows if x["coll"] == c] for c in ("default", "^han")}
    assert [x["algorithm"] for x in by_coll["default"][:5]] == \
        ["torus2d", "ring", "hierarchical", "native", "plain"]
    assert [x["algorithm"] for x in by_coll["^han"][:3]] == ["torus2d", "native", "plain"]
    assert len(rows) == 3 * (5 + 3)          # 4K, 64K and ResNet-50's list, in two runs
    for x in rows:
        assert x["wrong"] == 0, x            # exact integer patterns: any wrong sum is a bug
        assert (x["nodes"], x["ranks_per_node"], x["grid"]) == (NODES, G, f"{G}x{NODES}")
        assert x["rails"] == 2 and x["rail_per_rank"] is True and x["rate_mbit"] == 200
    # torus2d's columns span the nodes, so comm.column_phase=auto made them rings
    assert {x["column_phase"] for x in rows if x["algorithm"] == "torus2d"} == {"ring"}
    # Open MPI 5.0 picks coll/han for a communicator across nodes; without it, tuned
    served = {(x["coll"], x["component"]) for x in rows if x["algorithm"] in ("native", "plain")}
    assert served == {("default", "han"), ("^han", "tuned")}
    assert {x["component"] for x in rows if x["algorithm"] not in ("native", "plain")} == {None}
    resnet = [x for x in rows if x["message"] == "resnet50"]
    assert {x["arrays"] for x in resnet} == {161}
    # 2 x (5/6) / (2/3): two column rings at once, one per rail, against one flat ring
    assert "# torus2d vs ring:" in r.stdout and "bandwidth bound 2.50x" in r.stdout
    assert leftovers(name, root, before) == NOTHING
