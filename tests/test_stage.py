"""Staging a packed data set onto emulated nodes' local disks (python -m data.stage) and a
rendered job that stages and trains across them (jobs/try_locally.sh --cluster).

Real Open MPI over TCP between network namespaces (tools/minicluster), each node with its own
local directory at the same path ($LOCAL_DIR, a private bind mount per node). Needs root; the
cluster's fixture removes everything also when a test fails, and checks that nothing is left.
"""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import PYTHON, REPO
from data import official_archives as oa
from test_jobs import option, render_ok, try_out
from test_minicluster import cluster_for_tests, fresh_name
from tools.minicluster import network

pytestmark = [pytest.mark.procs, pytest.mark.root]
NODES = 3


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    src = tmp_path_factory.mktemp("official")
    oa.generate(str(src), classes=6, train_per_class=10, val_images=24, size=24, seed=2)
    out = tmp_path_factory.mktemp("packed") / "imagenet"
    r = subprocess.run([PYTHON, "-m", "data.prepare_imagenet", "--no-progress",
                        "--train-tar", f"{src}/{oa.TRAIN_TAR}", "--val-tar", f"{src}/{oa.VAL_TAR}",
                        "--devkit", f"{src}/{oa.DEVKIT}", "--out", str(out), "--allow-partial",
                        "--shard-size", "0.01", "--workers", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = network.cannot_run_here(fresh_name())
    if why:
        pytest.skip(f"emulated cluster: {why}")
    for c in cluster_for_tests(tmp_path_factory, nodes=NODES, rails=2):
        root = os.path.dirname(c.state_dir)
        yield c
    assert not mounts_under(root), "a node's local-dir mount outlived the cluster"


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if f" {path}" in line]


def stage(c, src, dst_name, *extra, nodes=NODES):
    r = c.run([PYTHON, "-m", "data.stage", src, os.path.join(c.local_dir, dst_name), *extra],
              ranks_per_node=1, nodes=nodes, env={"PYTHONPATH": REPO}, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def manifest_of(src):
    return json.load(open(os.path.join(src, "index.json")))


def shards_of(src):
    m = manifest_of(src)
    return [s for split in ("train", "val") for s in m["splits"][split]["shards"]]


def small_bytes(src):
    return sum(os.path.getsize(os.path.join(src, f)) for f in
               ("index.json", "classes.txt", "index-train.npy", "index-val.npy"))


def test_each_node_sees_its_own_local_dir_at_the_same_path(cluster):
    r = cluster.run(["sh", "-c", 'hostname > "$LOCAL_DIR/me" && echo "$LOCAL_DIR" '
                     '"$(ls "$LOCAL_DIR" | wc -l)"'], ranks_per_node=1, timeout=120)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split("\n")[:NODES]) == {f"{cluster.local_dir} 1"}
    for i in range(1, NODES + 1):
        node = cluster.layout.node(i)
        assert open(os.path.join(cluster.node_dir(node), "me")).read().strip() == node
    assert os.listdir(cluster.local_dir) == [] and not mounts_under(cluster.local_dir)


def test_staging_reads_the_source_once_and_leaves_identical_verified_copies(cluster, packed):
    result = stage(cluster, packed, "a")
    shards = shards_of(packed)
    total = sum(s["size"] for s in shards)
    assert result["bytes_read_from_source"] == total + small_bytes(packed)    # once in all
    assert result["bytes_written_per_node"] == [total] * NODES
    assert result["copied_files"] == len(shards) * NODES
    assert set(result) >= {"bytes_read_from_source", "bytes_written_per_node", "copied_files",
                           "seconds"}
    for i in range(1, NODES + 1):
        copy = os.path.join(cluster.node_dir(cluster.layout.node(i)), "a")
        for s in shards:
            assert sha256(os.path.join(copy, s["name"])) == s["sha256"]
        for f in ("index.json", "classes.txt", "index-train.npy", "index-val.npy"):
            assert sha256(os.path.join(copy, f)) == sha256(os.path.join(packed, f))

    again = stage(cluster, packed, "a")                  # a rerun copies nothing
    assert again["copied_files"] == 0 and again["bytes_written_per_node"] == [0] * NODES

    broken = os.path.join(cluster.node_dir(cluster.layout.node(2)), "a", shards[0]["name"])
    with open(broken, "r+b") as f:                       # same size, one byte flipped
        f.seek(700)
        byte = f.read(1)
        f.seek(700)
        f.write(bytes([byte[0] ^ 0xFF]))
    repaired = stage(cluster, packed, "a")
    assert repaired["copied_files"] == 1
    assert repaired["bytes_written_per_node"] == [0, shards[0]["size"], 0]
    assert sha256(broken) == shards[0]["sha256"]


def test_node_shuffle_stages_each_nodes_share_only(cluster, packed):
    result = stage(cluster, packed, "n", "--shuffle", "node")
    m = manifest_of(packed)
    train, val = m["splits"]["train"]["shards"], m["splits"]["val"]["shards"]
    assert len(train) >= NODES
    for i in range(NODES):
        copy = os.path.join(cluster.node_dir(cluster.layout.node(i + 1)), "n")
        held = sorted(f for f in os.listdir(copy) if f.startswith("train-"))
        assert held == [s["name"] for s in train[i::NODES]]
        assert all(os.path.exists(os.path.join(copy, s["name"])) for s in val)
    assert result["bytes_read_from_source"] == sum(s["size"] for s in train + val) + \
        small_bytes(packed)


@pytest.mark.parametrize("shuffle", ["global", "node"])
def test_a_rendered_job_stages_and_trains_across_the_nodes(cluster, packed, tmp_path, shuffle):
    script, _ = render_ok(tmp_path, "--system", "abci2", "--nodes", "2", "--walltime",
                          "1:00:00", "--group", "g", "--set", f"data.shuffle={shuffle}")
    out = tmp_path / "tryout"
    r, calls = try_out(script, "--cluster", "--gpus-per-node", "2", "--data-dir", packed,
                       "--out", str(out), env=cluster.cli_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (staging,) = [c for c in calls if "data.stage" in c]
    (training,) = [c for c in calls if "data.stage" not in c]
    staged = os.path.join(cluster.local_dir, "imagenet")
    assert staging[-5:] == ["data.stage", packed, staged, "--shuffle", shuffle]
    assert option(staging, "--map-by") == "ppr:1:node" and option(training, "--data-dir") == staged
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["config"]["data"]["dir"] == staged and start["world_size"] == 4
    assert start["config"]["data"]["shuffle"] == shuffle
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    train = manifest_of(packed)["splits"]["train"]["shards"]
    for i in (0, 1):
        copy = os.path.join(cluster.node_dir(cluster.layout.node(i + 1)), "imagenet")
        held = sorted(f for f in os.listdir(copy) if f.startswith("train-"))
        assert held == [s["name"] for s in (train if shuffle == "global" else train[i::2])]
        shutil.rmtree(copy)                 # the next job of this test stages afresh


def test_no_space_on_dst_is_one_line_before_copying(packed, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        r = subprocess.run([PYTHON, "-m", "data.stage", packed, str(small / "copy")], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert "GB free but the copy needs" in lines[0] and "data.shuffle=node" in lines[0]
        assert not [f for f in os.listdir(small / "copy") if f.endswith(".tar")]
        bad = subprocess.run([PYTHON, "-m", "data.stage", str(tmp_path), str(small / "x")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and "is not a packed data set" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        subprocess.run(["umount", str(small)], check=True)
