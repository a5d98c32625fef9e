"""make setup's installer choice, run for real with the package index out of reach (a closed
port on the loopback; nothing leaves the machine): uv trusts the system's certificates, and
when it cannot reach the index the setup says so in one line and installs with pip."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.procs]

SETUP = os.path.join(REPO, "tools", "setup_env.sh")
CLOSED = "http://127.0.0.1:9/simple"       # the discard port: nothing listens there


def has_uv():
    return shutil.which("uv") or os.path.exists(os.path.expanduser("~/.local/bin/uv"))


def test_uv_without_the_index_falls_back_to_pip_in_one_line(tmp_path):
    if not has_uv():
        pytest.skip("no uv here: the setup uses pip from the start")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_")) and k not in ("GPU", "SITE_MPI", "CUDA_RUNTIME")}
    env.update(PYTHON=os.path.realpath(sys.executable), UV_INDEX_URL=CLOSED, UV_NO_CACHE="1",
               PIP_INDEX_URL=CLOSED, PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0",
               PIP_TIMEOUT="2", PIP_NO_CACHE_DIR="1", HOME=str(tmp_path))
    env.pop("PIP_FIND_LINKS", None)
    home = os.path.expanduser("~/.local/bin")
    env["PATH"] = home + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["bash", SETUP, str(tmp_path / "venv")], capture_output=True,
                          text=True, timeout=240, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out                          # pip cannot reach it either
    assert "with uv, trusting the system's certificates" in proc.stdout, out
    fallback = [ln for ln in out.splitlines() if "uv cannot reach the package index" in ln]
    assert len(fallback) == 1 and "installing with pip instead" in fallback[0], out
    assert "127.0.0.1" in proc.stderr + proc.stdout.split(fallback[0])[-1], out   # pip tried
    assert "ready:" not in out
