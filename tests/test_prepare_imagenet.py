"""From the official ImageNet archives (generated, in their real layout) to packed shards, and
the loaders reading those shards by index exactly as they read the image folder.

Real tars (nested train tar, flat val tar, devkit tar.gz with a meta.mat written by scipy),
real JPEGs (one CMYK) and a PNG named .JPEG, the real DALI and Pillow loaders.
"""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from conftest import PYTHON, REPO
from data import official_archives as oa
from data.build import list_data
from data.dali_loader import DaliTrainLoader, DaliValLoader
from data.imagefolder import DataError, list_imagenet
from data.node_shuffle import node_share
from data.packed import list_packed
from data.pil_loader import PilTrainLoader, PilValLoader
from training.config import load_config

CLASSES, PER_CLASS, VAL = 6, 7, 30


def prepare(*args, timeout=300):
    return subprocess.run([PYTHON, "-m", "data.prepare_imagenet", "--no-progress", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def official_args(src, out, labels="devkit"):
    return ["--train-tar", f"{src}/{oa.TRAIN_TAR}", "--val-tar", f"{src}/{oa.VAL_TAR}",
            *(["--devkit", f"{src}/{oa.DEVKIT}"] if labels == "devkit" else
              ["--val-labels", f"{src}/LOC_val_solution.csv"]), "--out", str(out)]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    src = tmp_path_factory.mktemp("official")
    truth = oa.generate(str(src), CLASSES, PER_CLASS, VAL, size=20, seed=1)
    return str(src), truth


@pytest.fixture(scope="module")
def packed(official, tmp_path_factory):
    src, _ = official
    out = tmp_path_factory.mktemp("packed") / "set"
    r = prepare(*official_args(src, out), "--allow-partial", "--shard-size", "0.02",
                "--workers", "2")
    assert r.returncode == 0, r.stderr
    return str(out), r.stdout


@pytest.fixture(scope="module")
def folder(official, tmp_path_factory):
    """The same images as an ImageNet-layout folder, extracted the classic way."""
    src, truth = official
    root = tmp_path_factory.mktemp("folder")
    with tarfile.open(f"{src}/{oa.TRAIN_TAR}") as outer:
        for member in outer:
            target = root / "train" / member.name[:-4]
            target.mkdir(parents=True)
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                inner.extractall(target)
    with tarfile.open(f"{src}/{oa.VAL_TAR}") as val:
        for member in val:
            target = root / "val" / truth["val"][member.name]
            target.mkdir(parents=True, exist_ok=True)
            (target / member.name).write_bytes(val.extractfile(member).read())
    return str(root)


pytestmark = pytest.mark.procs


def test_every_validation_image_gets_its_devkit_label_in_sorted_wnid_order(official, packed):
    src, truth = official
    out, stdout = packed
    train, val = list_packed(out)
    classes = sorted(truth["devkit_order"])
    assert train.classes == classes and len(classes) == CLASSES
    assert truth["devkit_order"] != classes      # the generator's IDs are not in WNID order
    with open(os.path.join(out, "classes.txt")) as f:
        assert [line.split("\t")[0] for line in f] == classes
    assert (len(train), len(val)) == (CLASSES * PER_CLASS, VAL)
    for i in range(len(val)):
        member = val.name(i).rsplit(":", 1)[1]
        wnid = truth["val"][member.replace(".jpg", ".JPEG")]
        assert val.labels[i] == classes.index(wnid), member
        with tarfile.open(os.path.join(out, val.shards[int(val.index[i]["shard"])])) as t:
            cls = t.extractfile(member.rsplit(".", 1)[0] + ".cls").read()
        assert int(cls) == val.labels[i]       # the .cls member says the same


def test_the_kaggle_csv_gives_the_same_labels(official, packed, tmp_path):
    src, _ = official
    r = prepare(*official_args(src, tmp_path / "csv", labels="csv"), "--allow-partial",
                "--shard-size", "0.02", "--workers", "1")
    assert r.returncode == 0, r.stderr
    a, b = list_packed(packed[0])[1], list_packed(str(tmp_path / "csv"))[1]
    assert np.array_equal(a.labels, b.labels)
    assert [a.read(i) for i in range(len(a))] == [b.read(i) for i in range(len(b))]


def test_odd_formats_are_kept_and_reported_and_everything_decodes(official, packed):
    src, truth = official
    out, stdout = packed
    assert f"{truth['odd']['cmyk']}: a CMYK JPEG, kept as it is" in stdout
    assert f"{truth['odd']['png']}: a PNG named .JPEG, stored as KEY.png" in stdout
    manifest = json.load(open(os.path.join(out, "index.json")))
    assert len(manifest["odd_files"]["png_stored_as_png"]) == 1
    from data.checks import check_bytes
    for listing in list_packed(out):
        for i in range(len(listing)):
            assert check_bytes(listing.read(i)) is None
    png_key = os.path.splitext(truth["odd"]["png"])[0]
    members = [m for s in manifest["splits"]["train"]["shards"]
               for m in tarfile.open(os.path.join(out, s["name"])).getnames()]
    assert f"{png_key}.png" in members and f"{png_key}.jpg" not in members


def test_the_webdataset_library_reads_the_shards(packed):
    wds = pytest.importorskip("webdataset")
    out, _ = packed
    train, _ = list_packed(out)
    seen = {}
    for sample in wds.WebDataset([os.path.join(out, s) for s in train.shards],
                                 shardshuffle=False):
        image = sample.get("jpg", sample.get("png"))
        seen[sample["__key__"]] = (int(sample["cls"]), image)
    assert len(seen) == len(train)
    for i in range(len(train)):
        key = os.path.splitext(train.name(i).rsplit(":", 1)[1])[0]
        assert seen[key] == (int(train.labels[i]), train.read(i))


def test_packed_and_folder_loaders_give_the_same_samples_labels_and_crops(packed, folder):
    packed_train, packed_val = list_packed(packed[0])
    folder_train, folder_val = list_imagenet(folder)
    assert np.array_equal(packed_train.labels, folder_train.labels)
    for Loader in (PilTrainLoader, DaliTrainLoader):
        a = Loader(packed_train, 16, shard_id=1, num_shards=2, seed=5, num_threads=1)
        b = Loader(folder_train, 16, shard_id=1, num_shards=2, seed=5, num_threads=1)
        for batch in (5, 3, 8, 8):        # batch-size changes, across an epoch boundary
            (x, y), (x2, y2) = a.next_batch(batch), b.next_batch(batch)
            assert np.array_equal(x, x2) and np.array_equal(y, y2)
        assert a.state() == b.state()
        a.close(), b.close()
    for Loader in (PilValLoader, DaliValLoader):
        for (x, y, n), (x2, y2, n2) in zip(Loader(packed_val, 16, 8), Loader(folder_val, 16, 8)):
            assert n == n2 and np.array_equal(x, x2) and np.array_equal(y, y2)


def test_a_mid_epoch_resume_on_packed_data_is_bitwise(packed):
    train, _ = list_packed(packed[0])
    whole = DaliTrainLoader(train, 16, seed=2, num_threads=1)
    first = [whole.next_batch(4) for _ in range(3)]
    state = whole.state()
    rest = [whole.next_batch(b) for b in (6, 6, 4)]
    resumed = DaliTrainLoader(list_packed(packed[0])[0], 16, seed=2, num_threads=2,
                              state=state)
    again = [resumed.next_batch(b) for b in (6, 6, 4)]
    assert len(first) == 3
    for (x, y), (x2, y2) in zip(rest, again):
        assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_the_trainer_finds_a_packed_set_without_listing_it(packed, folder):
    cfg = load_config(None, [f"data.dir={packed[0]}"]).data
    train, val = list_data(cfg)
    assert type(train).__name__ == "PackedListing" and len(val) == VAL
    cfg = load_config(None, [f"data.dir={folder}", "data.format=packed"]).data
    with pytest.raises(DataError, match="is not a packed data set.*prepare_imagenet"):
        list_data(cfg)


def test_node_shuffle_streams_each_nodes_share_exactly_and_resumes(official, tmp_path):
    src, _ = official
    out = tmp_path / "many"
    r = prepare(*official_args(src, out), "--allow-partial", "--shard-size", "0.005",
                "--workers", "2")
    assert r.returncode == 0, r.stderr
    train, _ = list_packed(str(out))
    nodes, per_node = 3, 2
    assert len(train.shards) >= nodes
    shares = [node_share(train, k, nodes, per_node) for k in range(nodes)]
    rows = np.concatenate([s.index for s in shares])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, train.index.tolist()))
    lengths = {s.stream_args["epoch_length"] for s in shares}
    assert len(lengths) == 1                    # every node's stream equally long
    length = lengths.pop()
    for k, share in enumerate(shares):
        loaders = [PilTrainLoader(share, 8, shard_id=r, num_shards=per_node, seed=k,
                                  num_threads=1) for r in range(per_node)]
        taken = [l.stream.take(length // per_node)[0] for l in loaders]
        assert set(np.concatenate(taken)) == set(range(len(share)))   # one epoch: all of it
        assert loaders[0].stream.state() == {"epoch": 1, "offset": 0}
    with pytest.raises(DataError, match="needs at least 99 training shards"):
        node_share(train, 0, 99, 1)


def test_a_killed_prepare_resumes_and_ends_with_the_same_set(official, tmp_path):
    src, _ = official
    args = [*official_args(src, tmp_path / "a"), "--allow-partial", "--shard-size", "0.004",
            "--workers", "1", "--no-progress"]
    p = subprocess.Popen([PYTHON, "-m", "data.prepare_imagenet", *args], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = tmp_path / "a" / ".prepare"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if work.is_dir() and len(list(work.glob("*.tar.json"))) >= 2:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "prepare ended before it could be killed"
    assert not (tmp_path / "a" / "index.json").exists()
    r = prepare(*args[:-1])
    assert r.returncode == 0 and "resuming:" in r.stdout, r.stdout + r.stderr
    fresh = prepare(*[a if a != str(tmp_path / "a") else str(tmp_path / "b") for a in args])
    assert fresh.returncode == 0, fresh.stderr
    shards = [json.load(open(tmp_path / d / "index.json"))["splits"] for d in "ab"]
    assert shards[0] == shards[1]               # same shards, same bytes (sha256)


# --- bad input: one line each, before work is wasted ------------------------------------------
def one_line_error(r, *phrases):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_a_tar_that_is_not_imagenets_is_one_line(official, tmp_path):
    src, _ = official
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as t:
        info = tarfile.TarInfo("holiday/photo1.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    args = official_args(src, tmp_path / "o")
    r = prepare(*[str(other) if a.endswith(oa.TRAIN_TAR) else a for a in args])
    one_line_error(r, "is not ImageNet's training tar", "holiday/photo1.jpg")
    swapped = prepare("--train-tar", f"{src}/{oa.VAL_TAR}", "--val-tar", f"{src}/{oa.TRAIN_TAR}",
                      "--devkit", f"{src}/{oa.DEVKIT}", "--out", str(tmp_path / "s"))
    one_line_error(swapped, "looks like the validation tar: swap --train-tar and --val-tar")
    r = prepare(*official_args(src, tmp_path / "c"))
    one_line_error(r, f"train {CLASSES * PER_CLASS:,} (ImageNet-1k: 1,281,167)", "--allow-partial")
    r = prepare(*official_args(src, tmp_path / "m"), "--verify-md5", "--allow-partial")
    one_line_error(r, "not the published 1d675b47d978889d74fa0da5fadfb00e", "fetch it again")
    assert not (tmp_path / "m").exists() and not (tmp_path / "c" / "index.json").exists()


def test_missing_validation_labels_are_one_line(official, tmp_path):
    src, _ = official
    short = tmp_path / "LOC_val_solution.csv"
    lines = open(f"{src}/LOC_val_solution.csv").read().splitlines()
    short.write_text("\n".join(lines[:-2]) + "\n")       # two images lose their label
    args = official_args(src, tmp_path / "o", labels="csv")
    r = prepare(*[str(short) if a.endswith(".csv") else a for a in args], "--allow-partial")
    one_line_error(r, "no label for 2 validation image(s)", f"ILSVRC2012_val_{VAL - 1:08d}")
    args = official_args(src, tmp_path / "p")
    r = prepare(*[str(short) if a.endswith(oa.DEVKIT) else a for a in args], "--allow-partial")
    one_line_error(r, "--devkit", "pass the official ILSVRC2012_devkit_t12.tar.gz")


def test_a_truncated_shard_is_one_line(packed, tmp_path):
    import shutil
    copy = tmp_path / "set"
    shutil.copytree(packed[0], copy)
    train, _ = list_packed(str(copy))
    last = int(np.argmax(train.index["offset"] * (train.index["shard"] == 0)))
    with open(copy / train.shards[0], "r+b") as f:
        f.truncate(int(train.index[last]["offset"]) + 10)
    train, _ = list_packed(str(copy))
    with pytest.raises(DataError, match=r"train-000000.tar is truncated .*copy it again"):
        train.read(last)
    loader = DaliTrainLoader(train, 16, num_threads=1)
    with pytest.raises(DataError, match="is truncated"):
        for _ in range(len(train)):
            loader.next_batch(4)


def test_a_folder_packs_to_the_same_samples_as_the_tars(packed, folder, tmp_path):
    r = prepare("--from-folder", folder, "--out", str(tmp_path / "f"), "--allow-partial",
                "--shard-size", "0.02", "--workers", "2")
    assert r.returncode == 0, r.stderr
    for a, b in zip(list_packed(packed[0]), list_packed(str(tmp_path / "f"))):
        assert a.classes == b.classes and np.array_equal(a.labels, b.labels)
        assert [a.read(i) for i in range(len(a))] == [b.read(i) for i in range(len(b))]


def test_staging_a_truncated_source_shard_is_one_line(packed, tmp_path):
    import shutil
    src = tmp_path / "src"
    shutil.copytree(packed[0], src)
    shard = sorted(src.glob("train-*.tar"))[0]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    r = subprocess.run([PYTHON, "-m", "data.stage", str(src), str(tmp_path / "dst")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    one_line_error(r, shard.name, "the source is truncated; prepare the set again")
    assert not (tmp_path / "dst" / shard.name).exists()
    assert not (tmp_path / "dst" / "index.json").exists()


def test_the_dry_run_states_the_node_shuffle_trade_off(packed):
    from conftest import run_trainer
    r = run_trainer("--config", "configs/cpu_demo.yaml", "--data-dir", packed[0], "--dry-run",
                    "--world-size", "4", "--local-size", "2", "--set", "data.shuffle=node")
    assert r.returncode == 0, r.stderr
    assert "shuffle    node: each node reads only its 1/2 of the training shards" in r.stdout
    assert "instead of one global permutation" in r.stdout
    assert "format     packed:" in r.stdout
