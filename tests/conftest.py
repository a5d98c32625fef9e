"""Shared fixtures (a small toy data set of real JPEGs, made once per test session) and the
fast tier's safety net: a test that starts a process without its marker fails
(tests/process_guard.py; the tiers are described in tests/README.md)."""
import os
import shutil
import subprocess
import sys

import pytest

import process_guard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

PYTHON = sys.executable
# The session's toy set (toy_dir); tests/test_loss_curve.py records it with its stored curve.
TOY = dict(classes=10, train_per_class=24, val_per_class=8, size=32, seed=0)


def pytest_addoption(parser):
    parser.addoption("--golden-update", action="store_true",
                     help="rewrite the stored loss curves (tests/golden/*/loss_curve.jsonl) "
                          "from this run instead of comparing with them (make golden-update)")


def pytest_configure(config):
    # Imported before the guard is armed: importing numpy.testing runs `lscpu` (numpy 1.26's
    # SVE probe), which a test touching np.testing for the first time would be blamed for.
    import numpy.testing  # noqa: F401
    process_guard.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Armed from before the test's fixtures are made until its teardown starts."""
    process_guard.GUARD.arm(item.nodeid, {m.name for m in item.iter_markers()})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    process_guard.GUARD.disarm()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that caught the guard's error still fails."""
    report = yield
    if call.when in ("setup", "call") and report.passed and process_guard.GUARD.violations:
        report.outcome = "failed"
        report.longrepr = "\n".join(process_guard.GUARD.violations)
    return report


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
    generate(str(out), **TOY)
    return str(out)


def run_trainer(*args, timeout=600, cwd=REPO):
    """Run train_resnet50.py in a subprocess; returns the CompletedProcess."""
    return subprocess.run([PYTHON, os.path.join(REPO, "train_resnet50.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
