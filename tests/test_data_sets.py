"""Data sets beyond the happy path: the checker, exclusion and file lists, synthetic data."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_trainer
from data.build import build_loaders, list_data
from data.imagefolder import DataError, list_file_lists, list_imagenet
from data.sampler import padded_epoch_length
from test_dali_loader import write_awkward, write_broken
from training.config import ConfigError, load_config


def checker(*args):
    return subprocess.run([sys.executable, "-m", "tools.check_dataset", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dirty_dir(toy_dir, tmp_path_factory):
    """The toy set plus awkward-but-valid and broken files, and an empty class folder."""
    root = tmp_path_factory.mktemp("dirty")
    shutil.copytree(toy_dir, root, dirs_exist_ok=True)
    first = sorted(os.listdir(root / "train"))[0]
    write_awkward(root / "train" / first)
    broken = write_broken(root / "val" / first)
    return root, first, broken


@pytest.mark.procs
def test_checker_finds_exactly_the_broken_files(dirty_dir, tmp_path):
    root, first, broken = dirty_dir
    exclude = tmp_path / "bad.txt"
    proc = checker(str(root), "--write-exclude", str(exclude), "--workers", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reported = sorted(line.split(": ")[1].split("/")[-1] for line in proc.stdout.splitlines()
                      if line.startswith("broken: "))
    assert reported == sorted(broken)               # grey, CMYK, PNG, tiny, wide are fine
    listed = [line.strip() for line in exclude.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(f"val/{first}/{name}" for name in broken)
    assert "data.exclude_list=" in proc.stdout


@pytest.mark.procs
def test_checker_passes_a_clean_set_and_flags_layout_problems(toy_dir, tmp_path):
    proc = checker(toy_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken, 0 other problems" in proc.stdout
    shutil.copytree(toy_dir, tmp_path / "d")
    (tmp_path / "d" / "train" / "zz_empty").mkdir()
    (tmp_path / "d" / "val" / "zz_only_in_val").mkdir()
    shutil.copy(next((tmp_path / "d" / "val").glob("*/*.JPEG")),
                tmp_path / "d" / "val" / "zz_only_in_val" / "x.JPEG")
    proc = checker(str(tmp_path / "d"))
    assert proc.returncode == 1
    assert "empty class: train/zz_empty" in proc.stdout
    assert "class mismatch: val has 1 classes that train lacks (zz_only_in_val)" in proc.stdout
    proc = checker(str(tmp_path / "missing"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


@pytest.mark.procs
def test_exclusion_list_drops_files_up_front(dirty_dir, tmp_path):
    root, first, broken = dirty_dir
    exclude = tmp_path / "bad.txt"
    checker(str(root), "--write-exclude", str(exclude))
    cfg = load_config(None, [f"data.dir={root}", "data.on_bad_image=skip",
                             f"data.exclude_list={exclude}", "data.image_size=16"]).data
    train, val = list_data(cfg)
    full_train, full_val = list_imagenet(str(root))
    assert len(train) == len(full_train) and train.excluded == 0
    assert len(val) == len(full_val) - len(broken) and val.excluded == len(broken)
    assert not any(os.path.basename(f) in broken for f in val.files)
    # every remaining file decodes: one pass of each DALI loader over all of them
    loader, val_loader = build_loaders(cfg, train, val, seed=0, val_batch_size=64)
    assert sum(valid for _, _, valid in val_loader) == len(val)
    loader.close()


def test_bad_image_policy_is_validated():
    with pytest.raises(ConfigError, match="on_bad_image=skip needs the list"):
        load_config(None, ["data.on_bad_image=skip"])
    with pytest.raises(ConfigError, match="exclude_list=bad.txt is read only with"):
        load_config(None, ["data.exclude_list=bad.txt"])
    with pytest.raises(ConfigError, match="train_list and data.val_list go together"):
        load_config(None, ["data.train_list=train_label"])
    with pytest.raises(ConfigError, match="data.device=gpu decodes with DALI"):
        load_config(None, ["data.device=gpu", "data.backend=pil"])
    with pytest.raises(DataError, match="exclusion list nope.txt does not exist"):
        list_data(load_config(None, ["data.dir=/tmp", "data.on_bad_image=skip",
                                     "data.exclude_list=nope.txt"]).data)


@pytest.mark.procs
def test_file_lists_match_the_folder_listing(toy_dir, tmp_path):
    train, val = list_imagenet(toy_dir)
    for name, listing in (("train_label", train), ("val_label", val)):
        with open(tmp_path / name, "w") as f:
            for path, label in zip(listing.files, listing.labels):
                f.write(f"{os.path.relpath(path, listing.root)} {label}\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()   # list paths are relative to DIR/train and DIR/val
    os.symlink(os.path.join(toy_dir, "train"), data_dir / "train")
    os.symlink(os.path.join(toy_dir, "val"), data_dir / "val")
    ltrain, lval = list_file_lists(str(data_dir), str(tmp_path / "train_label"),
                                   str(tmp_path / "val_label"))
    assert [os.path.realpath(f) for f in ltrain.files] == [os.path.realpath(f) for f in train.files]
    np.testing.assert_array_equal(ltrain.labels, train.labels)
    np.testing.assert_array_equal(lval.labels, val.labels)
    assert len(ltrain.classes) == 10 and lval.classes == ltrain.classes
    with open(tmp_path / "val_label", "a") as f:
        f.write("no_such_class/missing.JPEG 3\n")
    proc = checker(str(data_dir), "--train-list", str(tmp_path / "train_label"),
                   "--val-list", str(tmp_path / "val_label"))
    assert proc.returncode == 1 and "listed but missing: val/no_such_class/missing.JPEG" in \
        proc.stdout, proc.stdout
    (tmp_path / "broken_label").write_text("a.JPEG 1\nb.JPEG cat\n")
    with pytest.raises(DataError, match="broken_label line 2: expected `path label`"):
        list_file_lists(str(data_dir), str(tmp_path / "broken_label"), str(tmp_path / "val_label"))


def test_synthetic_backend_needs_no_files_and_keeps_the_contract():
    cfg = load_config(None, ["data.backend=synthetic", "data.synthetic_train_size=50",
                             "data.synthetic_val_size=23", "data.synthetic_classes=5",
                             "data.image_size=8"]).data
    train, val = list_data(cfg)
    assert len(train) == 50 and len(val) == 23 and len(train.classes) == 5
    counts = np.zeros(5, int)
    for rank in range(3):
        loader, val_loader = build_loaders(cfg, train, val, seed=0, val_batch_size=4,
                                           shard_id=rank, num_shards=3)
        per_rank = padded_epoch_length(50, 3) // 3
        x, y = loader.next_batch(5)
        assert x.shape == (5, 3, 8, 8) and x.dtype == np.float32 and y.shape == (5, 1)
        loader.next_batch(per_rank - 5)
        assert loader.state() == {"epoch": 1, "offset": 0}
        batches = list(val_loader)
        assert all(b[0].shape == (4, 3, 8, 8) for b in batches)
        for _, labels, valid in batches:
            counts += np.bincount(labels[:valid].ravel(), minlength=5)
    assert counts.sum() == 23 and counts.tolist() == np.bincount(val.labels, minlength=5).tolist()


@pytest.mark.procs
def test_trainer_stops_on_a_broken_image_with_one_line(toy_dir, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(toy_dir, root)
    first = sorted(os.listdir(root / "train"))[0]
    broken = write_broken(root / "train" / first)
    proc = run_trainer("--config", "configs/cpu_demo_constant.yaml", "--data-dir", str(root),
                       "--output-dir", str(tmp_path / "run"), "--set", "data.image_size=16",
                       "--set", "train.global_batch=256", "--set", "train.epochs=2")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot decode ") and any(b in last for b in broken), last
    assert "tools.check_dataset" in last and "data.exclude_list=" in last
