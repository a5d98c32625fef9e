"""Shared fixtures: a small toy data set of real JPEGs, made once per test session."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

PYTHON = sys.executable


@pytest.fixture(scope="session", autouse=True)
def mpi_shared_memory_files():
    """The session's directory for Open MPI's shared-memory files (tests/mpi.py), removed at
    the end with whatever aborted jobs left in it."""
    from mpi import SHM_DIR
    yield SHM_DIR
    shutil.rmtree(SHM_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """10 classes x (24 train + 8 val) JPEGs of 32 px."""
    from data.toy_imagenet import generate
    out = tmp_path_factory.mktemp("toy")
    generate(str(out), classes=10, train_per_class=24, val_per_class=8, size=32, seed=0)
    return str(out)


def run_trainer(*args, timeout=600, cwd=REPO):
    """Run train_resnet50.py in a subprocess; returns the CompletedProcess."""
    return subprocess.run([PYTHON, os.path.join(REPO, "train_resnet50.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
