"""MPI worker: what must stay exact whatever the gradients travel in, on 4 ranks.

    mpirun -np 4 python tests/mpi_workers/full_precision.py

For comm's NCCL backend over rehearsal/'s double in a HALF context (the real one would sum
in float16) and for the MPI backend with comm.wire_dtype=float16: evaluation counts above
2,048, the resume step check past 2,048 and 65,504, the initial weight broadcast, BN
statistics and the Exchange's loss, through the trainer's own functions. Rank 0 prints
``RESULT {backend: {check: null | "what went wrong"}}``.
"""
import json
import sys
from types import SimpleNamespace

import rehearsal                              # before mpi4py.MPI: comm starts MPI itself
import nnabla as nn  # noqa: E402
import nnabla.functions as F  # noqa: E402
import numpy as np  # noqa: E402

import comm  # noqa: E402
from training.device import Exchange  # noqa: E402
from training.evaluate import average_bn_statistics, evaluate  # noqa: E402
from training.run_state import same_on_every_rank  # noqa: E402


def check_all(c, on_device):
    r, n = c.rank, c.size
    out = {}

    def check(name, fn):
        try:
            fn()
            out[name] = None
        except Exception as e:     # noqa: BLE001 (reported per check)
            out[name] = f"rank {r}: {type(e).__name__}: {e}"

    def as_comm_array(values, dtype):
        a = np.array(values, dtype)
        return nn.NdArray.from_numpy_array(a) if on_device else a

    def value(a):
        return (a.data if on_device else a).tolist()

    def counts_above_2048():
        # rank 0 holds 1,201 images (one misclassified), the others 1,200: 4,801 in all
        valid = 1201 if r == 0 else 1200
        image = nn.Variable((valid, 3))
        graph = SimpleNamespace(image=image, logits=F.identity(image))
        labels = np.zeros((valid, 1), np.int64)
        images = np.zeros((valid, 3), np.float32)
        images[:, 0] = 1.0
        if r == 0:
            images[0] = (0.0, 1.0, 0.0)
        top1, top5, loss = evaluate(graph, [(images, labels, valid)], c)
        assert top1 == 4800 / 4801, (top1, "fp16 would give 4800/4800 = 1.0")
        assert top5 == 1.0 and np.isfinite(loss), (top5, loss)

    def step_check():
        for step in (2049, 3001, 65505, 1_000_001):
            assert same_on_every_rank(c, step), f"step {step} judged different"
        assert not same_on_every_rank(c, 65505 + (r == 3)), "rank 3's 65506 went unseen"

    def weight_broadcast():
        w = as_comm_array([1 + 2 ** -20, 0.1] if r == 0 else [0.0, 0.0], np.float32)
        c.bcast([w], root=0)
        got = value(w)
        assert got == [float(np.float32(1 + 2 ** -20)), float(np.float32(0.1))], got
        assert not on_device or w.dtype == np.float32, w.dtype

    def bn_statistics():
        half = as_comm_array([1000 + 0.5 * r, 0.25 + 2 ** -12 * r], np.float16)
        single = as_comm_array([1 + 2 ** -20 * r], np.float32)
        average_bn_statistics(c, [half, single])
        exact = [np.mean([1000 + 0.5 * q for q in range(n)]),
                 np.mean([0.25 + 2 ** -12 * q for q in range(n)])]
        assert value(half) == [float(np.float16(e)) for e in exact], (value(half), exact)
        want = float(np.float32(np.mean([1 + 2 ** -20 * q for q in range(n)])))
        assert value(single) == [want], (value(single), want)

    def exchange_loss():
        x = Exchange(c, {})
        mine = nn.NdArray.from_numpy_array(np.array([10000.1 + r * 1e-3]))  # as LossSum's
        loss, stop, finite = x(mine, r == 2)
        assert loss == np.mean([10000.1 + q * 1e-3 for q in range(n)]), loss
        assert stop is True and finite is True

    for name, fn in [("counts_above_2048", counts_above_2048), ("step_check", step_check),
                     ("weight_broadcast", weight_broadcast), ("bn_statistics", bn_statistics),
                     ("exchange_loss", exchange_loss)]:
        check(name, fn)
    return out


def main():
    half_ctx = rehearsal.contexts("half")[0]
    nn.set_default_context(half_ctx)
    nccl = comm.create("torus2d", "2x2", backend="nccl", ctx=half_ctx, timeout_s=60,
                       nnabla_communicator=rehearsal.MultiProcessDataParallelCommunicator)
    mpi = comm.create("torus2d", "2x2", backend="mpi", wire_dtype="float16", timeout_s=60)
    results = {"nccl_half": check_all(nccl, True), "mpi_float16_wire": check_all(mpi, False)}
    from mpi4py import MPI
    every = MPI.COMM_WORLD.allgather(results)
    if nccl.rank == 0:
        merged = {b: {k: next((e[b][k] for e in every if e[b][k]), None) for k in checks}
                  for b, checks in results.items()}
        print("RESULT " + json.dumps(merged), flush=True)
    nccl.close()
    mpi.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
