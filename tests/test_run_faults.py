"""Issue 21 through the real trainer and real mpirun: a failing rank ends the whole job, nothing
destroys a run, bad input is one line.

- a 4-rank run where one rank raises in its main thread, and one where its DALI reader
  (feeder) thread raises: the job ends non-zero soon after, naming the rank and exception
  (without comm/job.py's hook it waited for the watchdog's 300 s);
- a thread of one rank raising while the others wait in a barrier (comm/job.py alone);
- a rank whose MPI finds no peers (PMIx variables stripped: what a launcher/library mismatch
  gives) is refused instead of training alone as "rank 0";
- --resume where no checkpoint can be read: one line per file, the directory byte for byte
  unchanged (2 ranks);
- two runs on one output dir: the second is refused while the first holds the lock;
- a full disk at a checkpoint (a 7 MiB tmpfs, root): one line, no partial file, the previous
  checkpoints whole;
- the DALI loaders given JPEGs cut at many lengths or with garbage inside: one line naming
  the file, never a crash;
- command-line mistakes from the issue: one line each.
"""
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import PYTHON, REPO, run_trainer
from mpi import WORKERS, error_lines, mpirun_command, run_mpi
from training.checkpoint import list_checkpoints, load

pytestmark = [pytest.mark.procs]

# 240 toy images (test_resume's set), batch 16: 15 updates an epoch
TINY = ["--config", "configs/cpu_demo.yaml", "--set", "model.width=0.125",
        "--set", "data.image_size=32", "--set", "train.epochs=2",
        "--set", "train.global_batch=16", "--set", "batch.stages=[]",
        "--set", "optim.warmup_epochs=0.5", "--set", "eval.batch_size=20",
        "--set", "checkpoint.every_epochs=0", "--set", "train.log_every_steps=1"]
# generous: under load a 4-rank start takes tens of seconds; without the fix the job waits
# for the watchdog (comm.timeout_s=300) or forever
ENDS_WITHIN_S = 60


def fault_run(toy_dir, tmp_path, where, rank, step):
    marker = str(tmp_path / "fault-time")
    argv = [os.path.join(WORKERS, "trainer_fault.py"), where, str(rank), str(step), marker,
            "--", *TINY, "--set", "comm.grid=2x2", "--data-dir", toy_dir,
            "--output-dir", str(tmp_path / "run")]
    proc = run_mpi(4, argv, timeout=400)
    ended = time.time()
    assert os.path.exists(marker), proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(marker) as f:
        faulted = float(f.read())
    return proc, ended - faulted


@pytest.mark.train
@pytest.mark.parametrize("where,rank,thread", [("main", 1, "main thread"),
                                                ("feeder", 2, "feeder thread")])
def test_an_exception_on_one_rank_ends_the_whole_job(toy_dir, tmp_path, where, rank, thread):
    proc, after = fault_run(toy_dir, tmp_path, where, rank, 3)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, "error: rank ")
    assert lines and lines[0].startswith(f"error: rank {rank} on "), proc.stderr[-3000:]
    assert f"RuntimeError: injected fault in the {thread} of rank {rank}" in lines[0]
    assert after < ENDS_WITHIN_S, after


def test_an_exception_in_a_thread_ends_the_job_while_others_wait():
    t0 = time.time()
    proc = run_mpi(2, [os.path.join(WORKERS, "thread_fault.py")], timeout=120)
    assert proc.returncode != 0
    assert "not reached" not in proc.stdout
    assert "error: rank 1 on " in proc.stderr and ", thread feeder: ValueError: injected " \
        "fault in a thread of rank 1" in proc.stderr, proc.stderr[-2000:]
    assert time.time() - t0 < 110


def test_ranks_whose_mpi_finds_no_peers_are_refused(tmp_path):
    """The ranks' MPI cannot reach the mpirun that started them (its PMIx variables are
    gone), so each starts as a singleton: what a venv's Open MPI under another MPI's
    launcher gives. Without the check each would train alone as rank 0 of 1."""
    strip = tmp_path / "no_pmix.sh"
    strip.write_text("#!/bin/sh\nfor v in $(env | grep -E '^PMIX' | cut -d= -f1); do "
                     "unset \"$v\"; done\nexec \"$@\"\n")
    strip.chmod(0o755)
    cmd = mpirun_command(2, ["-c", "import comm; comm.create('native', None); "
                                   "print('trained alone')"], python=str(strip))
    cmd.insert(cmd.index(str(strip)) + 1, PYTHON)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode != 0 and "trained alone" not in proc.stdout
    assert "Open MPI's mpirun started 2 ranks (OMPI_COMM_WORLD_SIZE=2) but MPI sees 1" in \
        proc.stderr, proc.stderr[-2000:]


def tree_digest(root):
    """{relative path: sha256} of every file under ``root`` (symlinks and dirs by name)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                found[rel] = "dir"
    return found


def test_resume_on_unreadable_checkpoints_changes_nothing(toy_dir, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for step in (3, 6, 9):      # what a failing file system shows: files that do not load
        (run / "checkpoints" / f"step-{step:09d}.npz").write_bytes(b"PK\x03\x04" + bytes(500))
    (run / "log.jsonl").write_text('{"event": "start", "step": 0}\n')
    (run / "mlperf.log").write_text(":::MLLOG {}\n")
    (run / "config.yaml").write_text("note: the run's\n")
    before = tree_digest(run)
    proc = run_mpi(2, [os.path.join(REPO, "train_resnet50.py"), *TINY, "--set",
                       "comm.grid=2x1", "--data-dir", toy_dir, "--output-dir", str(run),
                       "--resume"], timeout=300)
    assert proc.returncode != 0
    assert tree_digest(run) == before
    errors = error_lines(proc.stderr, "error: ")
    named = {ln for ln in errors if "is unreadable" in ln}
    assert {f"step-{s:09d}.npz" for s in (3, 6, 9)} == {
        os.path.basename(ln.split()[2]) for ln in named}, proc.stderr[-2000:]
    assert any("nothing was changed" in ln for ln in errors)
    assert "Traceback" not in proc.stderr


@pytest.mark.train
def test_a_second_run_on_the_same_output_dir_is_refused(toy_dir, tmp_path):
    out = str(tmp_path / "run")
    first = subprocess.Popen([PYTHON, os.path.join(REPO, "train_resnet50.py"), *TINY,
                              "--set", "train.epochs=40", "--set", "data.backend=pil",
                              "--data-dir", toy_dir, "--output-dir", out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not os.path.exists(os.path.join(out, "log.jsonl")) and time.time() < deadline:
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.2)
        with open(os.path.join(out, ".lock")) as f:
            assert f"pid={first.pid}" in f.read()
        second = run_trainer(*TINY, "--data-dir", toy_dir, "--output-dir", out, "--overwrite",
                             timeout=300)
        assert second.returncode != 0
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"is in use by another run (pid {first.pid} on " in second.stderr
        assert first.poll() is None          # the first run goes on, its files in place
        assert not glob.glob(os.path.join(out, "replaced-*"))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    # killed without a chance to clean up: its lock is stale, and the next run takes it over
    proc = run_trainer(*TINY, "--set", "data.backend=pil", "--set", "train.epochs=1",
                       "--data-dir", toy_dir, "--output-dir", out, "--overwrite", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"stale lock of pid {first.pid}" in proc.stdout, proc.stdout
    assert glob.glob(os.path.join(out, "replaced-*", "log.jsonl"))    # the killed run's log
    assert not os.path.exists(os.path.join(out, ".lock"))


@pytest.fixture
def small_disk(tmp_path):
    """A 7 MiB tmpfs (two of this run's ~3 MiB checkpoints fit, a third does not), unmounted
    and removed afterwards even when the test fails."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(mnt)], check=True)
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        assert not os.path.ismount(mnt)


@pytest.mark.root
@pytest.mark.train
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous(toy_dir, small_disk):
    out = os.path.join(small_disk, "run")
    proc = run_trainer(*TINY, "--set", "data.backend=pil", "--set", "checkpoint.every_steps=2",
                       "--set", "checkpoint.keep=0", "--data-dir", toy_dir, "--output-dir", out,
                       timeout=400)
    assert proc.returncode != 0
    progress = ("stage ", "step ", "epoch ")        # the progress display shares stderr
    errors = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith(progress)]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr[-3000:]
    assert "No space left on device" in errors[0] and "previous checkpoints are kept" in \
        errors[0]
    left = os.listdir(os.path.join(out, "checkpoints"))
    assert not [f for f in left if f.startswith(".tmp")], left
    kept = list_checkpoints(os.path.join(out, "checkpoints"))
    assert kept and all(load(p)[1]["step"] for p in kept)
    assert not os.path.exists(os.path.join(out, ".lock"))


# --- bad bytes through the DALI loaders (a crash must not take pytest with it) ---------------
DALI_CASES = r"""
import io, os, sys
import numpy as np
from PIL import Image
from data.dali_loader import DaliTrainLoader, DaliValLoader
from data.imagefolder import DataError, Listing

folder = sys.argv[1]
rng = np.random.RandomState(0)
img = Image.fromarray((rng.rand(48, 64, 3) * 255).astype(np.uint8))
out = io.BytesIO(); img.save(out, "JPEG", quality=90); data = out.getvalue()
good = os.path.join(folder, "good.JPEG"); open(good, "wb").write(data)
cases = [("cut", k, data[:k]) for k in sorted(set(list(range(0, 700, 23)) +
                                                    list(range(700, len(data), 97))))]
for seed in range(40):                  # a few bytes of garbage anywhere
    b = bytearray(data); r = np.random.RandomState(seed)
    for p in r.randint(2, len(b), 1 + seed % 20):
        b[p] = r.randint(0, 256)
    cases.append(("garbage", seed, bytes(b)))
named = decoded = 0
for kind, k, content in cases:
    bad = os.path.join(folder, f"{kind}{k}.JPEG"); open(bad, "wb").write(content)
    listing = Listing(folder, [good, bad, good], np.zeros(3, np.int32), ["a"])
    for make in (lambda: DaliTrainLoader(listing, 32, num_threads=2),
                 lambda: DaliValLoader(listing, 32, 3, num_threads=2)):
        loader = make()
        try:
            loader.next_batch(3) if hasattr(loader, "next_batch") else list(loader)
            decoded += 1
            assert kind == "garbage", f"{bad}: a cut file decoded"
        except DataError as e:
            assert bad in str(e) and "\n" not in str(e), str(e)
            named += 1
        finally:
            getattr(loader, "close", lambda: None)()
print(f"cases {len(cases)} named {named} decoded {decoded}")
"""


def test_dali_loaders_name_a_cut_or_garbled_jpeg_and_never_crash(tmp_path):
    proc = subprocess.run([PYTHON, "-c", DALI_CASES, str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    cases, named, decoded = (int(w) for w in proc.stdout.split()[1::2])
    assert named + decoded == 2 * cases and named >= 2 * 45, proc.stdout


# --- command-line mistakes from the issue: one line each -------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--set", "model.depth=51"], "model.depth=51 must be one of"),
    (["--set", "train.seed=-1"], "train.seed=-1 must lie in"),
    (["--config", "configs"], "--config configs is a directory"),
    (["--output-dir", ""], "--output-dir is empty"),
    (["--output-dir", "/"], "root-like"),
    (["--set", "comm.bucket_mb=1e-12"], "comm.bucket_mb=1e-12 must be >= 0.0625"),
    (["--accept-changes"], "--accept-changes qualifies --resume"),
])
def test_command_line_mistakes_are_one_line(toy_dir, tmp_path, args, message):
    argv = ["--config", "configs/cpu_demo.yaml", "--data-dir", toy_dir,
            "--output-dir", str(tmp_path / "run"), *args]
    proc = run_trainer(*argv, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run" / "log.jsonl")


def test_a_data_set_of_one_class_is_one_line(tmp_path):
    from data.toy_imagenet import generate
    generate(str(tmp_path / "one"), classes=2, train_per_class=4, val_per_class=2, size=32)
    for split in ("train", "val"):
        shutil.rmtree(sorted(glob.glob(str(tmp_path / "one" / split / "*")))[1])
    proc = run_trainer("--config", "configs/cpu_demo.yaml", "--data-dir",
                       str(tmp_path / "one"), "--output-dir", str(tmp_path / "run"),
                       timeout=120)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "the data set has 1 class" in proc.stderr


def test_jobs_render_refuses_what_the_trainer_would_refuse_at_start(tmp_path):
    def render(*args):
        return subprocess.run([PYTHON, "-m", "jobs.render", *args], capture_output=True,
                              text=True, timeout=60, cwd=REPO)
    paper = ["--system", "abci2", "--walltime", "1:00:00", "--group", "g",
             "--config", "configs/paper_224s.yaml"]
    cases = [
        (render(*paper, "--nodes", "6", "--data-dir", str(tmp_path)),  # 24 ranks
         "on 24 ranks: batch.stages[0].global_batch=34,816 is not divisible by 24 ranks"),
        (render(*paper, "--nodes", "4"), "no data directory"),
        (render("--system", "local", "--config", "configs/cpu_demo.yaml", "-o",
                str(tmp_path)), f"cannot write {tmp_path}"),
    ]
    for r, message in cases:
        assert r.returncode != 0 and r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            r.stderr
    ok = render(*paper, "--nodes", "8", "--data-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stderr


def test_make_never_removes_a_directory_it_did_not_write(tmp_path):
    mine = tmp_path / "imagenet"
    (mine / "train" / "n01").mkdir(parents=True)
    (mine / "train" / "n01" / "a.JPEG").write_bytes(b"precious")
    r = subprocess.run(["make", "-s", "toy-data", f"TOY={mine}",
                        f"VENV={os.path.dirname(os.path.dirname(PYTHON))}"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0 and f"error: {mine} is not a toy set" in r.stderr, r.stderr
    assert (mine / "train" / "n01" / "a.JPEG").read_bytes() == b"precious"
    r = subprocess.run(["make", "-s", "toy-data", "TOY="], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode != 0 and "error: TOY is empty" in r.stderr
