"""Issue 21, in process: the checks that keep a run from being lost or silently wrong.

Nothing destroys a run (output dir, lock, checkpoints), the launcher's job size, the GPU
stack's checks, every config range, resume compatibility, and broken image bytes. The same
cases through the real trainer and mpirun are in test_run_faults.py.
"""
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import comm
from comm import job
from data.checks import check_image, encoded_problem
from data.imagefolder import DataError, Listing
from data.pil_loader import PilTrainLoader
from training import checkpoint as ckpt
from training import output_dir as outdir
from training import run_state
from training.config import DEPTHS, ConfigError, load_config, to_dict
from training.device import check_devices, check_gpu_stack


# --- the output dir ------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["", "  ", "/", "/tmp", "~", "/usr/"])
def test_empty_or_root_like_output_dirs_are_refused(path):
    with pytest.raises(outdir.OutputDirError, match="--output-dir"):
        outdir.check_path(os.path.expanduser(path) if path == "~" else path)


def test_a_run_dir_of_its_own_is_accepted(tmp_path):
    outdir.check_path(str(tmp_path / "runs" / "demo"))


def test_overwrite_moves_only_the_trainers_files_aside(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-000000003.npz").write_bytes(b"weights")
    for name in ("log.jsonl", "summary.json", "mlperf.log", "config.yaml", "param_digest.rank0"):
        (run / name).write_text(name)
    (run / "notes.txt").write_text("mine")
    moved = outdir.move_aside(str(run))
    assert os.path.dirname(moved) == str(run) and os.path.basename(moved).startswith("replaced-")
    assert sorted(os.listdir(run)) == sorted(["notes.txt", os.path.basename(moved)])
    assert (run / "notes.txt").read_text() == "mine"
    assert open(os.path.join(moved, "checkpoints", "step-000000003.npz"), "rb").read() == \
        b"weights"
    assert outdir.move_aside(str(run)) is None        # nothing of a run left to move
    assert outdir.move_aside(str(tmp_path / "absent")) is None


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    first = outdir.RunLock(str(tmp_path), say=lambda m: None).acquire()
    try:
        with pytest.raises(outdir.OutputDirError, match=r"in use by another run \(pid "
                                                        rf"{os.getpid()} on "):
            outdir.RunLock(str(tmp_path), say=lambda m: None).acquire()
    finally:
        first.release()
    assert not os.path.exists(tmp_path / ".lock")
    outdir.RunLock(str(tmp_path), say=lambda m: None).acquire().release()


@pytest.mark.procs
def test_the_lock_of_a_dead_process_on_this_host_is_stale(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = outdir.RunLock(str(tmp_path))
    (tmp_path / ".lock").write_text(f"host={mine.me['host']} pid={dead.pid} "
                                    f"pidns={mine.me['pidns']} beat=7\n")
    said = []
    mine.say = said.append
    mine.acquire()
    try:
        assert said and f"stale lock of pid {dead.pid}" in said[0]
        assert f"pid={os.getpid()}" in (tmp_path / ".lock").read_text()
    finally:
        mine.release()


def test_another_hosts_lock_is_stale_when_its_heartbeat_stops_and_live_while_it_beats(
        tmp_path, monkeypatch):
    monkeypatch.setattr(outdir, "HEARTBEAT_S", 0.05)
    lock = tmp_path / ".lock"
    lock.write_text("host=elsewhere pid=1 pidns=x beat=3\n")
    outdir.RunLock(str(tmp_path), say=lambda m: None).acquire().release()   # still: stale
    holder = outdir.RunLock(str(tmp_path))
    holder.me = {"host": "elsewhere", "pid": "1", "pidns": "x"}   # a live holder elsewhere
    holder.say = lambda m: None
    holder.acquire()
    try:
        with pytest.raises(outdir.OutputDirError, match="in use by another run"):
            outdir.RunLock(str(tmp_path), say=lambda m: None).acquire()
    finally:
        holder.release()


# --- checkpoints -----------------------------------------------------------------------------
def _run_dir_with_checkpoints(tmp_path, steps=(2, 4, 6)):
    d = str(tmp_path / "checkpoints")
    meta = {k: None for k in run_state.META_KEYS}
    for step in steps:
        ckpt.save(d, step, {"a": np.ones(64, np.float32)}, dict(meta, step=step), keep=0)
    return d


def test_resume_refuses_when_no_checkpoint_can_be_read_one_line_per_file(tmp_path):
    d = _run_dir_with_checkpoints(tmp_path)
    for path in ckpt.list_checkpoints(d):
        with open(path, "r+b") as f:
            f.truncate(100)
    with pytest.raises(run_state.ResumeError) as e:
        run_state.find("latest", str(tmp_path), warn=lambda m: None)
    lines = str(e.value).splitlines()
    assert len(lines) == 4
    assert all("unreadable" in ln and f"step-00000000{s}.npz" in ln
               for ln, s in zip(lines, (2, 4, 6)))
    assert "nothing was changed" in lines[-1] and "--overwrite" in lines[-1]


def test_an_older_readable_checkpoint_is_used_with_a_warning(tmp_path):
    d = _run_dir_with_checkpoints(tmp_path)
    with open(ckpt.list_checkpoints(d)[-1], "r+b") as f:
        f.truncate(100)
    warnings = []
    path, _, meta = run_state.find("latest", str(tmp_path), warn=warnings.append)
    assert meta["step"] == 4 and len(warnings) == 1 and "step-000000006.npz" in warnings[0]


def test_a_write_cut_short_by_a_killed_run_is_removed_at_the_next_checkpoint(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    orphan = d / ".tmp-12345-step-000000004.npz"
    orphan.write_bytes(b"PK half a checkpoint")
    ckpt.save(str(d), 5, {"a": np.ones(4, np.float32)}, {"step": 5})
    assert sorted(os.listdir(d)) == ["step-000000005.npz"]


@pytest.mark.parametrize("meta_bytes,reason", [
    (b"\xff\xfe not json", "unreadable metadata"),
    (b"[1, 2]", "malformed metadata"),
    (json.dumps({"step": 3}).encode(), "malformed metadata"),
])
def test_malformed_checkpoint_metadata_is_one_line(tmp_path, meta_bytes, reason):
    path = tmp_path / "step-000000003.npz"
    np.savez(str(path), meta=np.frombuffer(meta_bytes, np.uint8), a=np.zeros(3))
    with pytest.raises(run_state.ResumeError, match=reason):
        run_state.find(str(path), str(tmp_path), warn=print)


def test_a_failed_checkpoint_write_removes_its_partial_file_and_keeps_the_others(tmp_path):
    """A real write error mid-file: the process may not grow a file past 64 KiB (EFBIG, as
    ENOSPC on a full disk; the tmpfs case is in test_run_faults.py)."""
    d = str(tmp_path / "checkpoints")
    first = ckpt.save(d, 1, {"a": np.ones(8, np.float32)}, {"step": 1})
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, limit[1]))
    try:
        with pytest.raises(ckpt.CheckpointError, match="of step 2 .*File too large.*previous "
                                                       "checkpoints are kept"):
            ckpt.save(d, 2, {"a": np.ones(100_000, np.float32)}, {"step": 2})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert os.listdir(d) == [os.path.basename(first)]
    assert ckpt.load(first)[1] == {"step": 1}


# --- resume compatibility ------------------------------------------------------------------
def _meta(cfg, world_size=4, data=None):
    return {"config": to_dict(cfg), "world_size": world_size, "data": data,
            "stream": {"offset": 0}}


DATA = {"classes": 10, "classes_sha256": "a" * 64, "train_images": 240}


@pytest.mark.parametrize("change,data,world,expect", [
    ([], dict(DATA, classes_sha256="b" * 64), 4, "another class list"),
    ([], dict(DATA, train_images=239), 4, "another training set size (240 images, now 239)"),
    (["type_config=half"], DATA, 4, "type_config=float (now half)"),
    ([], DATA, 2, "4 ranks (now 2)"),
    (["train.epochs=13", "batch.stages=[{until_epoch: 2, global_batch: 32}, "
      "{until_epoch: 13, global_batch: 64}]"], DATA, 4, "global batch schedule"),
    (["optim.base_lr=0.4"], DATA, 4, "learning-rate schedule (optim.base_lr differ)"),
])
def test_resume_refuses_another_experiment_unless_told(change, data, world, expect):
    saved = load_config("configs/cpu_demo.yaml")
    now = load_config("configs/cpu_demo.yaml", change)
    with pytest.raises(run_state.ResumeError, match="--accept-changes") as e:
        run_state.check_compatible(_meta(saved, 4, DATA), now, world, data)
    assert expect in str(e.value)
    accepted = run_state.check_compatible(_meta(saved, 4, DATA), now, world, data,
                                          accept_changes=True)
    assert len(accepted) == 1 and expect in accepted[0]


def test_resume_with_nothing_changed_passes():
    cfg = load_config("configs/cpu_demo.yaml", ["eval.every_epochs=2"])   # free to change
    assert run_state.check_compatible(_meta(load_config("configs/cpu_demo.yaml"), 4, DATA),
                                      cfg, 4, DATA) == []


def test_data_identity_is_the_class_list_and_the_sample_count():
    listing = Listing("r", ["x", "y", "z"], np.zeros(3, np.int32), ["cat", "dog"])
    ident = run_state.data_identity(listing)
    assert ident["classes"] == 2 and ident["train_images"] == 3
    fewer = Listing("r", ["x", "y"], np.zeros(2, np.int32), ["cat", "dog"])
    assert run_state.data_identity(fewer)["classes_sha256"] == ident["classes_sha256"]
    other = Listing("r", ["x", "y", "z"], np.zeros(3, np.int32), ["cat", "cow"])
    assert run_state.data_identity(other)["classes_sha256"] != ident["classes_sha256"]


# --- config ranges -----------------------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 must be 0 .off. or positive"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs=-1.0 must be 0 .off. or positive"),
    ("optim.step_gamma=-0.1", r"optim.step_gamma=-0.1 must lie in \(0, 1\]"),
    ("optim.step_gamma=10", r"optim.step_gamma=10.0 must lie in \(0, 1\]"),
    ("optim.step_milestones=[8, 4]", "optim.step_milestones=.* increasing order"),
    ("train.seed=-1", r"train.seed=-1 must lie in \[0, 4294967295\]"),
    ("train.seed=4294967296", r"train.seed=4294967296 must lie in \[0, 4294967295\]"),
    ("model.depth=51", "model.depth=51 must be one of 18, 34, 50, 101, 152"),
    ("data.image_size=4", r"data.image_size=4 must lie in \[8, 4096\]"),
    ("data.min_crop_area=0", r"data.min_crop_area=0.0 must lie in \(0, 1\]"),
    ("data.val_resize_ratio=0.5", r"data.val_resize_ratio=0.5 must lie in \[1, 8\]"),
    ("data.synthetic_classes=1", "data.synthetic_classes=1 must be >= 2"),
    ("model.num_classes=1", "model.num_classes=1 must be at least 2"),
    ("optim.momentum=1", r"optim.momentum=1.0 must lie in \[0, 1\)"),
    ("optim.base_lr=.nan", "optim.base_lr=nan must be a finite number"),
    ("optim.peak_lr=.inf", "optim.peak_lr=inf must be a finite number"),
    ("loss_scale.initial=.inf", "loss_scale.initial=inf must be a finite number"),
    ("batch.stages=[{until_epoch: .nan, global_batch: 32}]",
     r"batch.stages\[0\].until_epoch=nan must be a finite number"),
    ("eval.top1_thresholds=[0.5, 1.5]", r"eval.top1_thresholds\[1\]=1.5 must be in \(0, 1\]"),
    ("comm.bucket_mb=1e-12", "comm.bucket_mb=1e-12 must be >= 0.0625"),
    ("comm.timeout_s=0.001", "comm.timeout_s=0.001 must be 0 .* or >= 1 second"),
    ("optim.poly_power=-2", "optim.poly_power=-2.0 must be positive"),
])
def test_every_range_is_one_line_naming_key_and_range(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config("configs/cpu_demo.yaml", [override])
    assert "\n" not in str(e.value)


def test_step_milestones_must_lie_inside_the_run_for_a_step_decay():
    with pytest.raises(ConfigError, match="must lie below train.epochs=12"):
        load_config("configs/cpu_demo.yaml", ["optim.decay=step",
                                               "optim.step_milestones=[4, 12]"])
    load_config("configs/cpu_demo.yaml", ["optim.decay=step", "optim.step_milestones=[4, 8]"])


def test_config_depths_are_the_models():
    from models.resnet import BLOCKS_PER_STAGE
    assert tuple(sorted(BLOCKS_PER_STAGE)) == DEPTHS


def test_a_directory_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


# --- the job: launcher size, devices, GPU stack, the failure line ------------------------------
def test_a_job_smaller_than_the_launcher_said_is_refused():
    one = SimpleNamespace(size=1)
    with pytest.raises(comm.CommError, match=r"started 4 ranks \(OMPI_COMM_WORLD_SIZE=4\) but "
                                             "MPI sees 1"):
        comm.check_size(one, {"OMPI_COMM_WORLD_SIZE": "4"})
    with pytest.raises(comm.CommError, match=r"\(SLURM_NTASKS=8\)"):
        comm.check_size(one, {"SLURM_NTASKS": "8", "SLURM_PROCID": "0"})
    with pytest.raises(comm.CommError, match=r"\(PMI_SIZE=2\)"):
        comm.check_size(one, {"PMI_SIZE": "2", "SLURM_NTASKS": "1"})
    assert comm.check_size(one, {}) is one
    assert comm.check_size(SimpleNamespace(size=4), {"OMPI_COMM_WORLD_SIZE": "4"}).size == 4


def test_fewer_gpus_than_ranks_on_a_node_is_one_line():
    env = {"OMPI_COMM_WORLD_LOCAL_SIZE": "8", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    problem = check_devices(env, count=4)
    assert "runs 8 ranks but shows 4 GPU(s) (CUDA_VISIBLE_DEVICES=0,1,2,3)" in problem
    assert "ppr:4:node" in problem
    assert check_devices(env, count=8) is None
    assert check_devices({}, count=0) is None        # not under a launcher: nothing to compare


def test_a_libmpi_that_is_not_open_mpi_is_named(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    os.symlink("/lib/x86_64-linux-gnu/libc.so.6" if os.path.exists(
        "/lib/x86_64-linux-gnu/libc.so.6") else "libc.so.6", tmp_path / "lib" / "libmpi.so")
    monkeypatch.setenv("OMPI_HOME", str(tmp_path))
    problems = check_gpu_stack(multi_rank=True)
    assert any("is not Open MPI (no ompi_mpi_comm_world)" in p for p in problems), problems
    venv_ompi = os.path.dirname(os.path.dirname(sys.executable))
    if os.path.exists(os.path.join(venv_ompi, "lib", "libmpi.so.40")):   # a real Open MPI
        (tmp_path / "ompi" / "lib").mkdir(parents=True)    # (dlopen caches by path)
        os.symlink(os.path.join(venv_ompi, "lib", "libmpi.so.40"),
                   tmp_path / "ompi" / "lib" / "libmpi.so")
        monkeypatch.setenv("OMPI_HOME", str(tmp_path / "ompi"))
        assert not any("not Open MPI" in p for p in check_gpu_stack(multi_rank=True))


def test_a_failed_cuda_initialisation_is_named():
    from training.device import _cuda_initialised
    failed = SimpleNamespace(array_classes=lambda: [], get_device_count=lambda: 0)
    assert "CUDA did not initialise" in _cuda_initialised(failed)[0]
    ready = SimpleNamespace(array_classes=lambda: ["CudaArray"], get_device_count=lambda: 4)
    assert _cuda_initialised(ready) == []


def test_the_failure_line_names_rank_host_thread_and_exception(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    line = job.failure_line(RuntimeError, RuntimeError("cudaSetDevice failed\n  at init"),
                            "feeder")
    assert line.startswith("error: rank 3 on ") and ", thread feeder: RuntimeError: " \
        "cudaSetDevice failed at init" in line and "\n" not in line


# --- broken image bytes --------------------------------------------------------------------
def _jpeg(progressive=False, size=(80, 64), mode="RGB"):
    rng = np.random.RandomState(0)
    img = Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype(np.uint8)).convert(mode)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["baseline", "progressive", "cmyk", "grey"])
def test_a_jpeg_cut_at_any_length_is_named_and_a_whole_one_passes(kind):
    data = _jpeg(progressive=kind == "progressive",
                 mode={"cmyk": "CMYK", "grey": "L"}.get(kind, "RGB"))
    assert encoded_problem(data) is None
    missed = [k for k in range(len(data)) if encoded_problem(data[:k]) is None]
    assert missed == []


def test_a_png_cut_short_is_named():
    out = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(out, "PNG")
    data = out.getvalue()
    assert encoded_problem(data) is None
    assert all(encoded_problem(data[:k]) for k in range(len(data)))


def test_broken_headers_are_named():
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")
    bad_size = bytes(data[:sof + 5]) + b"\x00\x00\x00\x00" + bytes(data[sof + 9:])
    assert "bad frame header (0x0" in encoded_problem(bad_size)
    dqt = data.index(b"\xff\xdb")
    bad_table = bytes(data[:dqt + 4]) + b"\x37" + bytes(data[dqt + 5:])
    assert "corrupt JPEG" in encoded_problem(bad_table)


def test_the_checker_uses_the_same_structural_check(tmp_path):
    path = tmp_path / "a.JPEG"
    data = _jpeg()
    path.write_bytes(data[:-2])      # only the end-of-image marker missing
    assert "truncated JPEG" in check_image(str(path))
    path.write_bytes(data)
    assert check_image(str(path)) is None


def test_the_pillow_loader_names_a_file_cut_at_many_lengths(tmp_path):
    data = _jpeg()
    good = tmp_path / "good.JPEG"
    good.write_bytes(data)
    for k in list(range(0, 40, 7)) + list(range(40, len(data), len(data) // 15)):
        bad = tmp_path / f"cut{k}.JPEG"
        bad.write_bytes(data[:k])
        listing = Listing(str(tmp_path), [str(bad), str(good)], np.zeros(2, np.int32), ["a"])
        loader = PilTrainLoader(listing, 32, num_threads=1)
        try:
            with pytest.raises(DataError, match=f"cut{k}.JPEG"):
                loader.next_batch(2)
        finally:
            loader.close()


def test_zip_reading_errors_count_as_unreadable(tmp_path):
    path = tmp_path / "step-000000001.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.npy", b"not an npy file")
    with pytest.raises(ckpt.CheckpointError, match="unreadable"):
        ckpt.load(str(path))


def test_the_toy_set_marks_itself_for_make(tmp_path):
    from data.toy_imagenet import MARKER, generate
    generate(str(tmp_path / "toy"), classes=2, train_per_class=1, val_per_class=1, size=32)
    assert os.path.isfile(tmp_path / "toy" / MARKER)
    assert time.time() - os.path.getmtime(tmp_path / "toy" / MARKER) < 3600
