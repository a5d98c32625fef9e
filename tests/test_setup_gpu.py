"""GPU=1 make setup's decision about the CUDA 12 runtime, read from its dry run (nothing is
installed, nothing is downloaded): a site's CUDA is kept, a machine without one gets the
runtime wheels from PyPI. (Installing and loading them needs a GPU machine: docs/gpu.md.)"""
import os
import subprocess

import pytest

from conftest import REPO

SETUP = os.path.join(REPO, "tools", "setup_env.sh")


def dry_run(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "LD_LIBRARY_PATH", "GPU",
                         "CUDA_RUNTIME", "SITE_MPI")}
    base.update(SETUP_DRY_RUN="1", GPU="1", **env)
    proc = subprocess.run(["bash", SETUP, str(tmp_path / "venv")], capture_output=True,
                          text=True, timeout=60, env=base)
    assert not (tmp_path / "venv").exists()                   # a dry run creates nothing
    return proc


def fake_cuda(tmp_path):
    lib = tmp_path / "cuda-12.6" / "lib64"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.12").write_bytes(b"")
    return lib


def has_system_cuda():
    out = subprocess.run(["bash", "-c", "ldconfig -p 2>/dev/null | grep -c 'libcudart.so.12 '; "
                          "ls /usr/local/cuda/lib64/libcudart.so.12 2>/dev/null"],
                         capture_output=True, text=True).stdout
    return out.strip() not in ("", "0")


@pytest.mark.procs
def test_without_a_cuda_runtime_the_wheels_come_from_pypi(tmp_path):
    if has_system_cuda():
        pytest.skip("this machine has a CUDA 12 runtime: the site case covers it")
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA 12 runtime found" in proc.stdout
    assert "requirements-cuda-runtime.txt" in proc.stdout.splitlines()[-1]


@pytest.mark.procs
def test_a_site_cuda_module_is_kept(tmp_path):
    lib = fake_cuda(tmp_path)
    for env in ({"CUDA_HOME": str(lib.parent)}, {"LD_LIBRARY_PATH": f"/nonexistent:{lib}"}):
        proc = dry_run(tmp_path, **env)
        assert proc.returncode == 0, proc.stderr
        assert f"libcudart.so.12 in {lib}) is kept" in proc.stdout
        assert "requirements-cuda-runtime.txt" not in proc.stdout


@pytest.mark.procs
def test_the_venv_own_runtime_is_not_mistaken_for_a_site_one(tmp_path):
    """After `source .venv/bin/gpu_env.sh` the PyPI runtime is on LD_LIBRARY_PATH; a second
    setup must not take it for a site module."""
    if has_system_cuda():
        pytest.skip("this machine has a CUDA 12 runtime")
    own = tmp_path / "venv" / "lib" / "nvidia" / "cuda_runtime" / "lib"
    proc = dry_run(tmp_path, LD_LIBRARY_PATH=str(own))
    assert "no CUDA 12 runtime found" in proc.stdout, proc.stdout


@pytest.mark.procs
def test_forcing_and_a_bad_value(tmp_path):
    lib = fake_cuda(tmp_path)
    proc = dry_run(tmp_path, CUDA_HOME=str(lib.parent), CUDA_RUNTIME="pypi")
    assert "requirements-cuda-runtime.txt" in proc.stdout.splitlines()[-1]
    bad = dry_run(tmp_path, CUDA_RUNTIME="conda")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        "setup_env: error: CUDA_RUNTIME=conda: use site, pypi or leave it unset (detected)"]


def test_pinned_runtime_covers_what_libnnabla_cuda_needs():
    """libnnabla_cuda-120_8.so NEEDs these sonames (readelf, gpu-path-audit.md); each comes
    from a pinned wheel, and gpu_env.sh's directory list names every one of them."""
    pins = {}
    for name in ("requirements-gpu.txt", "requirements-cuda-runtime.txt"):
        for line in open(os.path.join(REPO, name)):
            line = line.split("#")[0].strip()
            if line:
                pkg, version = line.split("==")
                pins[pkg] = version
    needed = {"cuda_runtime": "nvidia-cuda-runtime-cu12", "cublas": "nvidia-cublas-cu12",
              "cusolver": "nvidia-cusolver-cu12", "curand": "nvidia-curand-cu12",
              "cufft": "nvidia-cufft-cu12", "cudnn": "nvidia-cudnn-cu12"}
    assert all(pkg in pins for pkg in needed.values()), pins
    text = open(SETUP).read()
    listed = text.split("libdirs+=(")[1].split(")")[0].split()
    assert {"cuda_runtime", "cublas", "cusolver", "curand", "cufft"} <= set(listed)
