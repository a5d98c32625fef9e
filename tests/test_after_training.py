"""After training, on one real run (2 ranks under mpirun, real JPEGs, the small stem and 1/8
width): tools.evaluate reproduces the logged top-1 (one process and 3 ranks), tools.export's
ONNX file scored by onnxruntime agrees with nnabla, the .nnp loads back with nnabla's own
loader, the TensorBoard files hold the run's scalars (read back with tensorboard's reader),
and each bad input is one line."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from conftest import PYTHON, REPO
from mpi import run_mpi

pytestmark = [pytest.mark.procs, pytest.mark.train]

TINY = ["--set", "model.width=0.125", "--set", "model.small_stem=true",
        "--set", "data.image_size=32", "--set", "train.epochs=2",
        "--set", "train.global_batch=16", "--set", "optim.base_lr=0.8",
        "--set", "optim.warmup_epochs=0.5", "--set", "eval.batch_size=20",
        "--set", "train.log_every_steps=5", "--set", "checkpoint.keep=0"]


def tool(*args, timeout=300):
    return subprocess.run([PYTHON, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def records(out, event):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["event"] == event]


def last_json(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_line_error(proc, words):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def run(toy_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("after") / "run")
    proc = run_mpi(2, [os.path.join(REPO, "train_resnet50.py"), "--config",
                       "configs/cpu_demo_constant.yaml", "--data-dir", toy_dir,
                       "--output-dir", out, *TINY], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_evaluate_final_params_reproduces_the_logged_top1(run, toy_dir):
    result = last_json(tool("tools.evaluate", run, "--data-dir", toy_dir, "--json"))
    final = records(run, "eval")[-1]
    assert final["step"] == 30                            # 2 epochs x 240 images / 16
    assert result["images"] == 80
    assert result["top1"] == pytest.approx(final["val_top1"], abs=1e-6)
    assert result["top5"] == pytest.approx(final["val_top5"], abs=1e-6)


def test_evaluate_a_checkpoint_on_three_ranks(run, toy_dir):
    """The epoch-1 checkpoint, on another number of ranks than trained it: its own eval line."""
    ckpt = os.path.join(run, "checkpoints", "step-000000015.npz")
    proc = run_mpi(3, ["-m", "tools.evaluate", ckpt, "--data-dir", toy_dir, "--json"],
                   timeout=300)
    result = last_json(proc)
    first = records(run, "eval")[0]
    assert first["step"] == 15
    assert result["top1"] == pytest.approx(first["val_top1"], abs=1e-6)
    assert result["top5"] == pytest.approx(first["val_top5"], abs=1e-6)


def test_a_checkpoint_copied_out_of_its_run_uses_the_config_inside_it(run, toy_dir, tmp_path):
    ckpt = shutil.copy(os.path.join(run, "checkpoints", "step-000000030.npz"), str(tmp_path))
    proc = tool("tools.evaluate", ckpt, "--data-dir", toy_dir, "--json")
    result = last_json(proc)
    assert f"config {ckpt}" in proc.stdout            # no config.yaml beside it
    assert result["top1"] == pytest.approx(records(run, "eval")[-1]["val_top1"], abs=1e-6)


def val_images(toy_dir, size):
    """Every validation image through the reference preprocessing (data/pil_loader.py)."""
    from data.imagefolder import list_imagenet
    from data.pil_loader import val_transform
    _, val = list_imagenet(toy_dir)
    return np.stack([val_transform(p, size, 1.0) for p in val.files]), val.labels


def test_onnx_in_onnxruntime_agrees_with_nnabla_and_the_nnp_loads_back(run, toy_dir,
                                                                        tmp_path):
    import onnxruntime
    from nnabla.utils.nnp_graph import NnpLoader
    from data.pil_loader import MEAN, STD
    onnx_path, nnp_path = str(tmp_path / "m.onnx"), str(tmp_path / "m.nnp")
    for fmt, path in (("onnx", onnx_path), ("nnp", nnp_path)):
        proc = tool("tools.export", run, "--format", fmt, "--out", path, "--batch-size", "8")
        assert proc.returncode == 0, proc.stderr[-3000:]
    with open(str(tmp_path / "m.preprocess.json")) as f:
        pre = json.load(f)
    assert pre["input"]["shape"] == [8, 3, 32, 32] and pre["input"]["layout"] == "NCHW"
    assert pre["center_crop"] == 32 and pre["resize_shorter_side"] == 32   # ratio 1.0
    assert pre["mean"] == pytest.approx(MEAN.tolist()) and pre["std"] == pytest.approx(
        STD.tolist())
    x, labels = val_images(toy_dir, 32)                       # 80 images, 10 batches of 8
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    onnx_logits = np.concatenate([session.run(["logits"], {"image": x[i:i + 8]})[0]
                                  for i in range(0, len(x), 8)])
    net = NnpLoader(nnp_path).get_network("resnet_inference", batch_size=len(x))
    net.inputs["image"].d = x
    net.outputs["logits"].forward(clear_buffer=True)
    nnabla_logits = net.outputs["logits"].d.copy()
    assert onnx_logits.shape == nnabla_logits.shape == (80, 10)
    assert np.abs(onnx_logits - nnabla_logits).max() < 1e-4 * max(
        1.0, np.abs(nnabla_logits).max())
    assert (onnx_logits.argmax(1) == nnabla_logits.argmax(1)).all()
    top1 = (nnabla_logits.argmax(1) == labels).mean()
    assert top1 > 0.2          # a trained model (chance: 0.1), so agreement is not trivial


def test_nnp_equals_the_rebuilt_model(run, toy_dir, tmp_path):
    """The .nnp's network and parameters give the logits of the trainer's own model."""
    import nnabla as nn
    from nnabla.utils.nnp_graph import NnpLoader
    from tools.trained_model import load
    path = str(tmp_path / "m.nnp")
    proc = tool("tools.export", run, "--format", "nnp", "--out", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x, _ = val_images(toy_dir, 32)
    net = NnpLoader(path).get_network("resnet_inference", batch_size=len(x))
    net.inputs["image"].d = x
    net.outputs["logits"].forward()
    from_nnp = net.outputs["logits"].d.copy()
    nn.clear_parameters()
    trained = load(run)
    image = nn.Variable(x.shape)
    logits = trained.model(image, train=False)
    image.d = x
    logits.forward()
    nn.clear_parameters()
    np.testing.assert_allclose(from_nnp, logits.d, rtol=1e-5, atol=1e-5)


def test_a_channel_last_run_is_evaluated_channel_first(run, toy_dir, tmp_path):
    """The run's parameters stored as a channel-last (NHWC) model stores them, under a config
    that says channel_last: the same top-1 after the conversion, so it is the right one."""
    import nnabla as nn
    from tools.trained_model import read_arrays
    arrays, _ = read_arrays(os.path.join(run, "final_params.h5"), "h5")
    nhwc = {}
    for name, v in arrays.items():
        if v.ndim == 4 and name.endswith("/W"):
            nhwc[name] = v.transpose(0, 2, 3, 1)          # (out, in, kh, kw) -> (out, kh, kw, in)
        elif v.ndim == 4:
            nhwc[name] = v.reshape(1, 1, 1, -1)          # BN (1, C, 1, 1) -> (1, 1, 1, C)
        else:
            nhwc[name] = v
    assert any(nhwc[n].shape != arrays[n].shape for n in arrays)
    other = tmp_path / "nhwc"
    other.mkdir()
    with open(os.path.join(run, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["device"], cfg["model"]["channel_last"] = "gpu", True
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with nn.parameter_scope("nhwc"):
        for name, value in nhwc.items():
            nn.parameter.get_parameter_or_create(name, value.shape).d = value
        nn.save_parameters(str(other / "final_params.h5"))
        nn.clear_parameters()
    result = last_json(tool("tools.evaluate", str(other), "--data-dir", toy_dir, "--json"))
    assert result["top1"] == pytest.approx(records(run, "eval")[-1]["val_top1"], abs=1e-6)


def test_tensorboard_files_hold_the_runs_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(run, "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/global_batch", "train/images_per_s",
            "time/data_wait_share", "time/allreduce_share", "val/top1", "val/top5",
            "val/loss"} <= tags
    series = lambda tag: [(e.step, e.value) for e in acc.Scalars(tag)]  # noqa: E731
    evals, steps, epochs = records(run, "eval"), records(run, "step"), records(run, "epoch")
    for tag, key, lines in (("val/top1", "val_top1", evals), ("val/top5", "val_top5", evals),
                            ("train/loss", "train_loss", steps), ("train/learning_rate", "lr",
                                                                  steps),
                            ("time/allreduce_share", "allreduce_frac", epochs),
                            ("time/data_wait_share", "data_wait_frac", epochs)):
        got = series(tag)
        assert [s for s, _ in got] == [r["step"] for r in lines], tag
        assert [v for _, v in got] == pytest.approx([r[key] for r in lines], rel=1e-5), tag
    assert [v for _, v in series("train/global_batch")] == [16] * len(steps)
    assert all(0 < v < 1 for _, v in series("time/allreduce_share"))   # 2 ranks exchange


def test_the_tensorboard_command_reads_them(run):
    """`tensorboard --logdir` works on the run (--inspect: the same reading, no server)."""
    command = os.path.join(os.path.dirname(PYTHON), "tensorboard")
    proc = subprocess.run([command, "--inspect", "--logdir", os.path.join(run, "tb")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for tag in ("train/loss", "val/top1", "time/allreduce_share"):
        assert f"   {tag}\n" in proc.stdout, proc.stdout


def test_bad_inputs_are_one_line(run, toy_dir, tmp_path):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    shutil.copy(os.path.join(run, "config.yaml"), str(empty))
    one_line_error(tool("tools.evaluate", str(empty), "--data-dir", toy_dir),
                   "has no final_params.h5")
    one_line_error(tool("tools.export", str(empty), "--format", "onnx", "--out",
                        str(tmp_path / "m.onnx")), "has no final_params.h5")
    # a checkpoint put into a run directory of another model (width 0.25, not 0.125)
    wider = tmp_path / "wider"
    (wider / "checkpoints").mkdir(parents=True)
    with open(os.path.join(run, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["width"] = 0.25
    (wider / "config.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = shutil.copy(os.path.join(run, "checkpoints", "step-000000030.npz"),
                       str(wider / "checkpoints"))
    one_line_error(tool("tools.evaluate", ckpt, "--data-dir", toy_dir), "holds another model")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(tool("tools.export", run, "--format", "onnx", "--out",
                        str(blocker / "m.onnx")), "cannot write there")
    assert not os.path.exists(str(tmp_path / "m.onnx"))
