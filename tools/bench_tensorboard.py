"""What the TensorBoard sink costs the trainer: time per logged line with and without it, and
the one-time import of tensorboardX (docs/after_training.md has the measured numbers).

    python -m tools.bench_tensorboard [--lines 2000] [--repeats 3]

Writes step lines (the kind logged every train.log_every_steps updates, four scalars each)
through training.runlog.RunLog into a temporary directory, as the trainer's rank 0 does.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from training.runlog import RunLog  # noqa: E402


def per_line(lines, tensorboard):
    with tempfile.TemporaryDirectory() as d:
        log = RunLog(d, tensorboard=tensorboard)
        log.write("start", epoch=0.0, step=0, elapsed_s=0.0)
        t0 = time.perf_counter()
        for i in range(1, lines + 1):
            log.write("step", epoch=i / 100, step=i, elapsed_s=i * 0.1, train_loss=1.0 / i,
                      lr=0.1, global_batch=64, images_per_s=300.0)
        seconds = time.perf_counter() - t0
        log.close()
    return seconds / lines


def import_seconds():
    """tensorboardX's import in a fresh interpreter that has numpy and nnabla already."""
    code = ("import time, numpy, nnabla; t = time.perf_counter(); import tensorboardX; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeats):
        off, on = per_line(args.lines, False), per_line(args.lines, True)
        print(f"per step line: {off * 1e6:.0f} us without TensorBoard, {on * 1e6:.0f} us "
              f"with it (+{(on - off) * 1e6:.0f} us)")
    print(f"import tensorboardX (once, before the run's clock starts): {import_seconds():.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
