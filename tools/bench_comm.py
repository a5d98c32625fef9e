#!/usr/bin/env python
"""All-reduce benchmark of comm/'s algorithms, nccl-tests style. Run it under mpirun:

    mpirun -np 4 python tools/bench_comm.py --grid 2x2 --check --json runs/bench_comm.jsonl
    mpirun -np 4 python tools/bench_comm.py --rehearse-gpu --backend nccl --check --grid 2x2
    make bench-comm NP=4 GRID=2x2 BENCH_COMM_ARGS="--max-bytes 16M"

Messages: one float32 array of 4 KB, 16 KB, ... up to --max-bytes (x --factor each row), then
ResNet-50's gradient list (161 float32 arrays, 25,557,032 elements, shapes from models/).
Algorithms: comm's torus2d, ring, hierarchical, native, and ``plain``, the reference of the
performance target: pack every array into one buffer, one MPI_Allreduce, unpack.

time_us: for each round, the slowest rank's mean time per call over the iterations; the
table shows the median over rounds, and the algorithms take turns within a round so a
noisy neighbour hits them alike. algbw = bytes / time; busbw = algbw * 2(n-1)/n (the
nccl-tests convention: what each rank's links carry). vs_native / vs_plain: time ratios in
the same run. ``--check`` fills integer patterns whose sums are exact (also in float16) and
counts wrong elements (#wrong); without it the column says n/a. ``--json FILE`` writes one
JSON object per row (n_ranks, grid, algorithm, bytes, time_us, ... ) for model fitting.
"""
import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import comm  # noqa: E402

WORLD = MPI.COMM_WORLD


def parse_bytes(text):
    units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--grid", default="auto", help="'auto' or XxY (default auto)")
    p.add_argument("--algorithms", default="torus2d,ring,hierarchical,native,plain")
    p.add_argument("--min-bytes", default="4K")
    p.add_argument("--max-bytes", default="256M")
    p.add_argument("--factor", type=int, default=4, help="size step between rows (default 4)")
    p.add_argument("--no-resnet", action="store_true", help="skip the ResNet-50 gradient list")
    p.add_argument("--resnet-only", action="store_true", help="only the ResNet-50 list")
    p.add_argument("--resnet-width", type=float, default=1.0,
                   help="width multiplier of the ResNet-50 list (default 1: 25.6M elements; "
                        "0.25 has the same 161 arrays and 1.6M elements, for slow links)")
    p.add_argument("--bucket-mb", type=float, default=comm.DEFAULTS["bucket_mb"])
    p.add_argument("--wire-dtype", default=None, choices=["float16", "float32"])
    p.add_argument("--column-phase", default=comm.DEFAULTS["column_phase"],
                   choices=comm.COLUMN_PHASES,
                   help="torus2d's column phase on MPI (default auto: ring across nodes)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="add KEY to every JSON row (repeatable; e.g. rails=2 from "
                        "tools/cluster_bench.py); a number if it parses as one")
    p.add_argument("--timeout-s", type=float, default=comm.DEFAULTS["timeout_s"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iter-bytes", default="256M",
                   help="iterations per round = this / message size, in [1, 100]")
    p.add_argument("--check", action="store_true", help="validate results (#wrong)")
    p.add_argument("--backend", choices=["mpi", "nccl"], default="mpi",
                   help="nccl: nnabla-ext-cuda's communicator on each rank's GPU (local rank), "
                        "on NdArrays; NOT VERIFIED ON A GPU by this project (default mpi)")
    p.add_argument("--rehearse-gpu", action="store_true",
                   help="with --backend nccl: comm/'s NCCL backend on CPU ranks, over "
                        "rehearsal/'s double of nnabla's communicator (correctness only: the "
                        "times are the double's, on the CPU, not NCCL's)")
    p.add_argument("--host-overhead", action="store_true",
                   help="with --rehearse-gpu --backend nccl: the host's own work per all-reduce "
                        "of ResNet-50's arrays and per training step, with collectives that move "
                        "no data (one JSON line each: host_ms_per_allreduce, nnabla calls)")
    p.add_argument("--iters", type=int, default=20, help="--host-overhead: timed calls")
    p.add_argument("--json", help="also write one JSON object per row to this file (rank 0)")
    return p.parse_args(argv)


class Plain:
    """The performance target's reference: pack, one MPI_Allreduce, unpack."""
    algorithm = "plain"

    def __init__(self):
        self.buf = None

    def all_reduce(self, arrays, average=False):
        total = sum(a.size for a in arrays)
        if self.buf is None or self.buf.size != total:
            self.buf = np.empty(total, np.float32)
        offset = 0
        for a in arrays:
            self.buf[offset:offset + a.size] = a.reshape(-1)
            offset += a.size
        WORLD.Allreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
        offset = 0
        for a in arrays:
            a.reshape(-1)[...] = self.buf[offset:offset + a.size]
            offset += a.size


def resnet50_shapes(width=1.0):
    """Shapes of ResNet-50's trainable parameters, built once on rank 0 from models/resnet.py."""
    shapes = None
    if WORLD.rank == 0:
        import nnabla as nn
        from models.resnet import ResNet
        model = ResNet(50, 1000, width=width)
        model(nn.Variable((1, 3, 224, 224)), train=True)
        shapes = [tuple(p.shape) for p in model.parameters().values()]
        nn.clear_parameters()
    return WORLD.bcast(shapes, root=0)


def messages(args):
    out = []
    if not args.resnet_only:
        size = parse_bytes(args.min_bytes)
        while size <= parse_bytes(args.max_bytes):
            out.append(("array", [(size // 4,)]))
            size *= args.factor
    if not args.no_resnet:
        out.append(("resnet50", resnet50_shapes(args.resnet_width)))
    return out


class Device:
    """Where the benchmark's arrays live: numpy on the host (mpi) or nnabla NdArrays on this
    rank's GPU (nccl, whose collectives are asynchronous: ``sync`` waits for them)."""

    def __init__(self, backend, rehearse=False):
        self.backend = backend
        self.rehearse = rehearse
        self.ctx = None
        self.factory = {}
        if backend == "nccl" and rehearse:
            import nnabla as nn
            import rehearsal
            self.ctx = rehearsal.contexts("float")[0]
            self.factory = {"nnabla_communicator": rehearsal.MultiProcessDataParallelCommunicator}
            nn.set_default_context(self.ctx)
        elif backend == "nccl":
            import nnabla as nn
            from nnabla.ext_utils import get_extension_context
            from training.device import check_gpu_stack
            problems = check_gpu_stack(multi_rank=True)
            if problems:
                sys.exit("\n".join(f"error: {p}" for p in problems))
            self.device_id = "0"        # until pin(): nnabla's local rank decides
            self.ctx = get_extension_context("cudnn", device_id=self.device_id)
            nn.set_default_context(self.ctx)

    def pin(self, local_rank):
        """Use the GPU nnabla's communicator chose: its local_rank (the index among this
        host's ranks in rank order), which is not always OMPI_COMM_WORLD_LOCAL_RANK (Open
        MPI's numbering follows its mapping: on this machine world rank 1 gets 2)."""
        if self.backend == "nccl" and not self.rehearse:
            import nnabla as nn
            self.device_id = str(local_rank)
            self.ctx.device_id = self.device_id
            nn.set_default_context(self.ctx)

    def zeros(self, shapes):
        if self.backend == "mpi":
            return [np.zeros(s, np.float32) for s in shapes]
        import nnabla as nn
        # Not NdArray(shape).zero(): that holds no data yet, and reading its dtype fails
        # ("Array is not initialized.", nnabla's synced_array.hpp)
        return [nn.NdArray.from_numpy_array(np.zeros(s, np.float32)) for s in shapes]

    def sync(self):
        if self.backend == "nccl" and not self.rehearse:
            import nnabla_ext.cuda
            nnabla_ext.cuda.synchronize(device_id=self.device_id)


def fill_pattern(arrays, rank):
    """Rank r holds (r+1)*(i%13+1) at flat index i: every partial sum is a small integer,
    exact in float16 too, so any wrong element is a bug, not rounding."""
    start = 0
    for a in arrays:
        idx = np.arange(start, start + a.size)
        values = ((rank + 1) * (idx % 13 + 1)).astype(np.float32).reshape(a.shape)
        if isinstance(a, np.ndarray):
            a[...] = values
        else:
            a.data = values
        start += a.size


def count_wrong(arrays, n):
    start, wrong = 0, 0
    for a in arrays:
        idx = np.arange(start, start + a.size)
        host = a if isinstance(a, np.ndarray) else a.data
        wrong += int(np.count_nonzero(host.reshape(-1) != n * (n + 1) // 2 * (idx % 13 + 1)))
        start += a.size
    return WORLD.allreduce(wrong, op=MPI.SUM)


def phase_ms(before, after):
    """Rank 0's mean milliseconds per all_reduce in each phase (pack, rs_row, ar_col, ...)
    between two counters() snapshots: where an algorithm's time goes."""
    ops = after["ops"] - before["ops"]
    if not ops:
        return None
    return {k: (v["seconds"] - before["phases"].get(k, {}).get("seconds", 0.0)) / ops * 1e3
            for k, v in after["phases"].items() if k not in ("check",)}


def time_rounds(impls, arrays, iters, rounds, device):
    """({algorithm: [seconds per call in each round]}, {algorithm: its counters() after the
    warm-up, or None}); algorithms take turns each round."""
    times = {c.algorithm: [] for c in impls}
    for c in impls:                    # warm-up: buffers, layout check, page faults
        c.all_reduce(arrays)
    device.sync()
    before = {c.algorithm: c.counters() if hasattr(c, "counters") else None for c in impls}
    for _ in range(rounds):
        for c in impls:
            WORLD.Barrier()
            t = time.perf_counter()
            for _ in range(iters):
                c.all_reduce(arrays)
            device.sync()
            mean = (time.perf_counter() - t) / iters
            times[c.algorithm].append(WORLD.allreduce(mean, op=MPI.MAX))
    return times, before


def watchdog_cost_us(calls=100_000):
    """What arming the watchdog around one collective costs (rank 0, in-process)."""
    from comm.watchdog import Watchdog
    dog = Watchdog(0, 300, lambda code: None)
    t = time.perf_counter()
    for _ in range(calls):
        dog.arm("rs_row", "row0", [0, 1], 1)
        dog.disarm()
    dog.close()
    return (time.perf_counter() - t) / calls * 1e6


def parse_tags(items):
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"error: --tag {item!r} is not KEY=VALUE (e.g. --tag rails=2)")
        try:
            tags[key] = json.loads(value)
        except ValueError:
            tags[key] = value
    return tags


def topology():
    """(nodes, ranks per node) as the ranks see it: distinct processor names; the shared-
    memory split's size on this rank (the same everywhere with by-node-even placement)."""
    names = WORLD.allgather(MPI.Get_processor_name())
    node = WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    per_node = WORLD.allreduce(node.size, op=MPI.MAX)
    node.Free()
    return len(set(names)), per_node


def nnabla_calls(c):
    """Collective calls made on the double(s) behind comm's NCCL backend ``c`` (a half job
    has a float one too, for its float32 gradients)."""
    return sum(nc.calls for nc in (c.nc, c.full_nc) if nc is not None)


def host_overhead_allreduce(args, names, shapes):
    """Rows of host milliseconds (process CPU and wall, rank 0) and nnabla communicator calls
    per all_reduce of ``shapes`` on comm's NCCL backend over the no-op double."""
    import nnabla as nn
    import rehearsal
    nn.set_default_context(rehearsal.contexts("float")[0])
    arrays = [nn.NdArray.from_numpy_array(np.zeros(s, np.float32)) for s in shapes]
    rows = []
    for name in names:
        c = comm.create(name, args.grid, backend="nccl", bucket_mb=args.bucket_mb,
                        timeout_s=args.timeout_s, ctx=rehearsal.contexts("float")[0],
                        **rehearsal.comm_options(no_op=True))
        c.all_reduce(arrays)                     # warm-up: the plan is made once
        calls = nnabla_calls(c)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.iters):
            c.all_reduce(arrays, average=True)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rows.append({"measure": "allreduce", "algorithm": name, "grid": "x".join(map(str, c.grid)),
                     "arrays": len(arrays), "buckets": c.counters()["buckets"] // (args.iters + 1),
                     "bucket_mb": args.bucket_mb,
                     "host_ms_per_allreduce": cpu / args.iters * 1e3,
                     "wall_ms_per_allreduce": wall / args.iters * 1e3,
                     "nnabla_calls_per_allreduce": (nnabla_calls(c) - calls) / args.iters,
                     "host_reads_per_allreduce": 0})
        c.close()
    return rows


def host_overhead_step(args, algorithm, type_config):
    """One row: host milliseconds and nnabla calls of a training step's host work besides
    forward/backward (zero_grad, the loss sum, the exchange with its one host read, the
    half-precision gradient probe, the update), ResNet-50's 161 arrays at a tiny width."""
    import nnabla as nn
    import rehearsal
    from models.resnet import ResNet, is_decay_exempt
    from training.device import Exchange, LossSum
    from training.optim import Optimizer
    ctx, float_ctx = rehearsal.contexts(type_config)
    nn.set_default_context(ctx)
    nn.clear_parameters()
    model = ResNet(50, 10, width=1 / 64)
    loss = nn.Variable.from_numpy_array(np.ones((1,), np.float32))
    model(nn.Variable((1, 3, 32, 32)), train=True)
    params = model.parameters()

    def as_after_backward():      # cuDNN's gradients: half, but BN's in float (DRV_BN_T)
        for k, p in params.items():
            half = type_config == "half" and not is_decay_exempt(k)
            p.grad.cast(np.float16 if half else np.float32)[...] = 0
    c = comm.create(algorithm, args.grid, backend="nccl", bucket_mb=args.bucket_mb,
                    timeout_s=args.timeout_s, ctx=ctx, **rehearsal.comm_options(no_op=True))
    optimizer = Optimizer(params, float_ctx=float_ctx)
    exchange, loss_sum = Exchange(c, params, False, float_ctx), LossSum(float_ctx)
    probe = optimizer.grads_probe(float_ctx) if type_config == "half" else None

    def step():                   # its host CPU seconds
        as_after_backward()
        t = time.process_time()
        optimizer.zero_grad()
        loss_sum.reset()
        loss_sum.add(loss)
        exchange(loss_sum.total, False, probe=probe)
        optimizer.step(0.0)
        return time.process_time() - t
    step()
    before = c.counters()
    calls = nnabla_calls(c)
    cpu = float(np.median([step() for _ in range(args.iters)]))
    after = c.counters()
    c.close()
    return {"measure": "step", "algorithm": algorithm, "type_config": type_config,
            "arrays": len(params), "host_ms_per_step": cpu * 1e3,   # median over steps
            "nnabla_comm_calls_per_step": (nnabla_calls(c) - calls) / args.iters,
            "host_reads_per_step": (after["host_reads"] - before["host_reads"]) / args.iters}


def host_overhead(args, names):
    if not (args.rehearse_gpu and args.backend == "nccl"):
        sys.exit("error: --host-overhead measures the NCCL backend's host work over the "
                 "rehearsal double: add --rehearse-gpu --backend nccl")
    rows = host_overhead_allreduce(args, names, resnet50_shapes(args.resnet_width))
    rows += [host_overhead_step(args, a, t) for a in names for t in ("float", "half")]
    load = os.getloadavg()[0]
    out = open(args.json, "w") if (args.json and WORLD.rank == 0) else None
    for row in rows:
        row.update(ranks=WORLD.size, iters=args.iters, load_avg_1min=round(load, 2))
        if WORLD.rank == 0:
            print(json.dumps(row), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
    if out:
        out.close()
    return 0


def main(argv=None):
    args = parse_args(argv)
    tags = parse_tags(args.tag)
    n = WORLD.size
    nodes, per_node = topology()
    names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    if args.backend == "nccl":     # plain is MPI's reference; ring needs point-to-point calls
        names = [a for a in names if a not in ("plain", "ring")]
    if args.rehearse_gpu and args.backend != "nccl":
        sys.exit("error: --rehearse-gpu rehearses the GPU path: add --backend nccl")
    if args.host_overhead:
        return host_overhead(args, names)
    device = Device(args.backend, args.rehearse_gpu)
    impls = []
    try:
        for name in names:
            impls.append(Plain() if name == "plain" else comm.create(
                name, args.grid, backend=args.backend, bucket_mb=args.bucket_mb,
                wire_dtype=args.wire_dtype, timeout_s=args.timeout_s,
                column_phase=args.column_phase,
                **({"ctx": device.ctx} if device.ctx else {}), **device.factory))
    except comm.CommError as e:
        sys.exit(f"error: {e}")
    device.pin(next((c.local_rank for c in impls if hasattr(c, "local_rank")), 0))
    grid = next((c.grid for c in impls if hasattr(c, "grid")), (n, 1))
    column_ring = next((c.column_ring for c in impls if getattr(c, "column_ring", False)), False)
    rank0 = WORLD.rank == 0
    wire = args.wire_dtype or "float32"
    json_file = open(args.json, "w") if (args.json and rank0) else None
    if rank0 and args.rehearse_gpu:
        import rehearsal
        for line in rehearsal.NOT_REHEARSED:
            print("# " + line)
    if rank0:
        print(f"# comm benchmark: {n} ranks on {nodes} node(s) x {per_node}, grid "
              f"{grid[0]}x{grid[1]}, bucket_mb {args.bucket_mb:g}, wire {wire}, torus2d column "
              f"phase {'ring' if column_ring else 'MPI_Allreduce'}, "
              f"{MPI.Get_library_version().split(',')[0]}, host {platform.node()} "
              f"({os.cpu_count()} cpus)" + "".join(f", {k}={v}" for k, v in tags.items()))
        print("# time_us: median over rounds of the slowest rank's mean per call; "
              "busbw = algbw * 2(n-1)/n; vs_*: time ratio in this run")
        print(f"# {'message':<9} {'size(B)':>11} {'count':>10} {'type':<8} {'algorithm':<13}"
              f"{'time_us':>11} {'algbw':>7} {'busbw':>7} {'#wrong':>7} {'vs_native':>10}"
              f" {'vs_plain':>9}   (GB/s)")
    resnet_ratio = None
    for label, shapes in messages(args):
        arrays = device.zeros(shapes)
        nbytes = 4 * sum(int(np.prod(s)) for s in shapes)
        count = nbytes // 4
        iters = int(min(100, max(1, parse_bytes(args.iter_bytes) // max(nbytes, 1))))
        times, before = time_rounds(impls, arrays, iters, args.rounds, device)
        median = {k: float(np.median(v)) for k, v in times.items()}
        for c in impls:
            counted = before[c.algorithm]
            phases = phase_ms(counted, c.counters()) if counted is not None else None
            wrong = None
            if args.check:
                fill_pattern(arrays, WORLD.rank)
                c.all_reduce(arrays)
                wrong = count_wrong(arrays, n)
                for a in arrays:
                    if isinstance(a, np.ndarray):
                        a[...] = 0
                    else:
                        a.zero()
            t = median[c.algorithm]
            algbw = nbytes / t / 1e9
            row = {"ranks": n, "grid": f"{grid[0]}x{grid[1]}", "algorithm": c.algorithm,
                   "message": label, "arrays": len(arrays), "bytes": nbytes, "count": count,
                   "type": "float32", "wire_dtype": wire if c.algorithm != "plain" else
                   "float32", "bucket_mb": args.bucket_mb, "iters": iters,
                   "rounds": args.rounds, "time_us": t * 1e6,
                   "time_us_rounds": [x * 1e6 for x in times[c.algorithm]],
                   "algbw_gbs": algbw, "busbw_gbs": algbw * 2 * (n - 1) / n, "wrong": wrong,
                   "vs_native": t / median["native"] if "native" in median else None,
                   "vs_plain": t / median["plain"] if "plain" in median else None,
                   "host": platform.node(), "nodes": nodes, "ranks_per_node": per_node,
                   "column_phase": ("ring" if column_ring else "allreduce")
                   if c.algorithm == "torus2d" else None,
                   "resnet_width": args.resnet_width if label == "resnet50" else None,
                   "phase_ms_rank0": phases, **tags}
            if rank0:
                ratio = lambda key: f"{row[key]:.2f}" if row[key] is not None else "-"  # noqa
                print(f"  {label:<9} {nbytes:>11} {count:>10} {'float32':<8} "
                      f"{c.algorithm:<13}{row['time_us']:>11.1f} {algbw:>7.3f} "
                      f"{row['busbw_gbs']:>7.3f} {'n/a' if wrong is None else wrong:>7} "
                      f"{ratio('vs_native'):>10} {ratio('vs_plain'):>9}", flush=True)
                if json_file:
                    json_file.write(json.dumps(row) + "\n")
        if label == "resnet50" and "torus2d" in times and "plain" in times:
            resnet_ratio = [a / b for a, b in zip(times["torus2d"], times["plain"])]
    if rank0:
        print(f"# watchdog arm+disarm: {watchdog_cost_us():.2f} us per collective call")
    if rank0 and resnet_ratio:
        print(f"# resnet50 gradients: torus2d / plain = {float(np.median(resnet_ratio)):.2f} "
              f"(per round: {', '.join(f'{r:.2f}' for r in resnet_ratio)})")
    if json_file:
        json_file.close()
    for c in impls:
        if hasattr(c, "close"):
            c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
