"""Launch a script under the venv's real ``mpirun`` (shared by every multi-rank test).

    from mpi import run_mpi, WORKERS
    proc = run_mpi(4, [os.path.join(WORKERS, "allreduce_cases.py"), "--grids", "2x2"])

Adds --oversubscribe (this machine has 2 cores), as root --allow-run-as-root, and puts Open
MPI's shared-memory backing files in SHM_DIR (a directory of this test session, removed when
it ends by conftest.py): in /dev/shm itself a job that is aborted or killed, as several tests
do on purpose, leaves its sm_segment files behind. Returns
the CompletedProcess (text stdout/stderr); raises subprocess.TimeoutExpired after
``timeout`` seconds, having killed mpirun and its ranks.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(REPO, "tests", "mpi_workers")
BIN = os.path.dirname(sys.executable)
SHM_DIR = tempfile.mkdtemp(prefix="pytest-mpi-shm-",
                           dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def mpirun_path():
    local = os.path.join(BIN, "mpirun")
    return local if os.path.exists(local) else shutil.which("mpirun")


def mpirun_command(np_, argv, python=sys.executable):
    cmd = [mpirun_path(), "--oversubscribe", "-np", str(np_),
           "--mca", "btl_sm_backing_directory", SHM_DIR,
           "--mca", "shmem_mmap_backing_file_base_dir", SHM_DIR]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd + [python, *argv]


def run_mpi(np_, argv, timeout=120, env=None, cwd=REPO):
    """Run ``python argv...`` on ``np_`` ranks; ``env`` entries are added to os.environ."""
    full_env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    proc = subprocess.Popen(mpirun_command(np_, argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)     # mpirun and the ranks it started
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def error_lines(stderr, prefix="error:"):
    """The ranks' one-line errors in a job's stderr. mpirun interleaves the ranks' streams
    with its own MPI_ABORT notice, which can leave a stray space in front of a rank's line
    (seen in full runs of make test), so lines are compared stripped."""
    return [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith(prefix)]
