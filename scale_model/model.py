"""Scale model: predicted all-reduce, step and time-to-train of data-parallel ResNet-50 at scale.

    python -m tools.simulate table                # all-reduce time, scaling efficiency, 4..4096
    python -m tools.simulate paper                # the paper's runs: predicted beside reported
    python -m tools.simulate ttt --stages 5:34816,90:69632 --gpus 2176
    python -m tools.simulate grid --nodes 544     # best torus grid for a node count
    python -m tools.simulate fit bench.jsonl      # calibrate alpha/beta on measured MPI times
    python -m tools.simulate plot --out docs/scale_model.png
    python -m tools.simulate presets              # every hardware number with its source

The model (alpha-beta, per tier). Ranks are laid out node-major: rank r lives on node r // L
(L = GPUs per node). A grid X x Y puts X consecutive ranks in a row and strides columns by X,
so with X = L a row is a node's GPUs and a column holds one GPU of every node. A ring over g
ranks moving m bytes per step costs, per step, alpha + m / bw of the slowest link it uses:
NVLink inside a node; across nodes, an InfiniBand adapter whose bandwidth is shared by the
rings that leave the node at once (k adapters per node, so each of r crossing rings gets
min(1, k / r) of one adapter). S is the gradient size in bytes, N = X * Y.

The phases are comm/plan.py's (plan.phases, the list both executors run), each priced as a
ring: steps from plan.collective_steps, bytes per rank from plan.phase_bytes and
plan.collective_bytes, on the slowest link its group uses (a row inside a node: NVLink; a
column, or the world, spanning nodes: the adapters):
    ring          reduce-scatter then all-gather over the world, N-1 steps of S/N each. A flat
                  ring leaves each node once per direction, so it uses ONE adapter
                  (ring_channels=1, like comm/'s point-to-point ring); NCCL builds several rings
                  (channels) and can use all k: pass ring_channels=k.
    torus2d       row reduce-scatter (X-1 steps of S/X), column all-reduce on S/X
                  (2(Y-1) steps of S/(XY); the X column rings run at once over the k adapters),
                  row all-gather (X-1 steps of S/X). 2(X-1)+2(Y-1) steps in all.
    hierarchical  on rows of L = GPUs per node: reduce to the row's leader (L-1 steps of S/L, a
                  pipelined chain's latency), all-reduce among leaders on S (2(Y-1) steps of
                  S/Y, one adapter), broadcast from the leader (L-1 steps of S/L).
    nccl_tree     reference only: NCCL's double binary tree, pipelined; latency
                  2((L-1) alpha_intra + ceil(log2 Y) alpha_inter), each node moves ~2S in each
                  direction over all k adapters (NCCL's own tuner charges tree bandwidth 0.5x).
Ring and torus2d both send 2(N-1)/N * S bytes per rank; torus2d saves steps (latency), and its
column phase spreads the inter-node bytes over all adapters. Each phase also pays a fixed
call_latency (one library call). Reductions are assumed free (GPU adds are cheap next to links).

Step time = compute(local batch) + the part of the all-reduce that backward cannot hide:
exposed = max(0, allreduce - overlap * backward), backward = 2/3 of compute (assumed), overlap =
the fraction of backward during which finished gradients can already be sent (0.5 assumed;
0 = no overlap, 1 = everything after the first bucket). The trainer's dry run takes it from
trainer_overlap(): 0 unless the trainer uses all_reduce_callback (native with
comm.backward_callback on NCCL), whose exchanges alone start before backward ends.
compute(b) = overhead + b * per_image, through the preset's throughput at its reference batch:
for every preset now the MLPerf-calibrated curve (scale_model/calibration.py; ABCI's GPUs take
the DGX preset of the same GPU), so a small per-GPU batch runs below peak.

nnabla's all_reduce_callback (comm.backward_callback) also blocks the host once per gradient
array in an MPI_Allreduce over the world before packing it (``callback_checks``, charged in
full: nothing hides a host that waits; ``host_check_seconds``).

Pure: numpy, the standard library and comm/plan.py (itself numpy only; tests/test_layout.py
allows that one import) - train_resnet50.py --dry-run imports predict_step.
The command line is tools/simulate.py (``python -m tools.simulate``).
"""
import math
from dataclasses import dataclass, replace

import numpy as np

import comm.plan as plan

from .presets import PresetError, get_preset

RESNET50_PARAMETERS = 25_557_032      # our models/resnet.py (tests/test_model.py), = torchvision's count
IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_VAL_IMAGES = 50_000
ALGORITHMS = ("ring", "torus2d", "hierarchical", "nccl_tree")
ALIASES = {"native": "nccl_tree"}      # on GPUs comm/'s "native" is NCCL's own all-reduce
DEFAULT_OVERLAP = 0.5                  # assumed, see the module docstring
BACKWARD_FRACTION = 2.0 / 3.0          # assumed: backward ~ 2x forward
RESNET50_GRADIENT_ARRAYS = 161         # parameter arrays of models/resnet.py's ResNet-50


class SimError(ValueError):
    """Bad input to the model; the message names the problem and the fix in one line."""


# --- closed forms (comm/plan.py's, for the counts quoted in tables and tests) ----------------
def ring_steps(n):
    """Sequential steps of a ring all-reduce over n ranks."""
    return plan.steps("ring", plan.Grid.from_shape(n, 1, n))


def torus_steps(x, y):
    """Sequential steps of the 2D-torus all-reduce on an x-by-y grid."""
    return plan.steps("torus2d", plan.Grid.from_shape(x, y, x * y))


def allreduce_bytes_per_rank(n, size_bytes):
    """Bytes each rank sends in a bandwidth-optimal all-reduce (ring and torus2d alike)."""
    return plan.bytes_per_rank(size_bytes, n)


# --- topology ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Links:
    """One cluster's links in SI units: seconds per step and bytes per second."""
    local_size: int          # ranks (GPUs) per node
    intra_alpha: float
    intra_bw: float          # per rank, per direction, to a ring neighbour (achievable)
    inter_alpha: float
    inter_bw: float          # per adapter, per direction (achievable)
    adapters: int            # adapters per node
    call_latency: float = 0.0
    ring_channels: int = 1   # concurrent rings of a flat ring all-reduce

    @classmethod
    def from_preset(cls, preset, ring_channels=1):
        p = get_preset(preset) if isinstance(preset, str) else preset
        return cls(local_size=int(p.gpus_per_node.value),
                   intra_alpha=p.intra_alpha_us.value * 1e-6,
                   intra_bw=p.intra_bw_GBps.value * 1e9 * p.intra_efficiency.value,
                   inter_alpha=p.inter_alpha_us.value * 1e-6,
                   inter_bw=p.inter_bw_GBps.value * 1e9 * p.inter_efficiency.value,
                   adapters=int(p.inter_adapters.value),
                   call_latency=p.call_latency_us.value * 1e-6,
                   ring_channels=_positive_int(ring_channels, "ring_channels"))


@dataclass(frozen=True)
class Phase:
    name: str
    tier: str                # intra | inter
    steps: int
    bytes_per_rank: float
    seconds: float


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise SimError(f"{name}={value!r} must be a positive integer")
    return int(value)


def parse_grid(grid, world_size):
    """'XxY' or (X, Y) -> (X, Y), checked against the world size."""
    world_size = _positive_int(world_size, "world size")
    if isinstance(grid, str):
        parts = grid.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise SimError(f"grid {grid!r} is not of the form XxY (e.g. 4x544)")
        grid = tuple(int(p) for p in parts)
    x, y = (_positive_int(v, "grid side") for v in grid)
    if x * y != world_size:
        near = max(d for d in range(1, math.isqrt(world_size) + 1) if world_size % d == 0)
        raise SimError(f"grid {x}x{y} has {x * y} ranks but the world size is {world_size}; "
                       f"use XxY with X*Y = {world_size}, e.g. {world_size // near}x{near}")
    return x, y


def auto_grid(world_size, local_size):
    """comm.grid: auto: a row is a node's ranks (X = ranks per node), Y = nodes."""
    x = math.gcd(world_size, local_size)
    return x, world_size // x


def _layout(groups, nodes):
    """(any group spans nodes, max crossing groups with members on one node)."""
    width = int(groups.max()) + 1
    pairs = np.unique(nodes.astype(np.int64) * width + groups)     # distinct (node, group)
    pair_group, pair_node = pairs % width, pairs // width
    group_ids, nodes_per_group = np.unique(pair_group, return_counts=True)
    crossing = set(group_ids[nodes_per_group > 1].tolist())
    if not crossing:
        return False, 0
    mask = np.isin(pair_group, list(crossing))
    return True, int(np.bincount(pair_node[mask]).max())


def _ring_phase(name, steps, message, links, crossing, rings_per_node, intra_message=None):
    """steps x (alpha + message / bw) on the slowest link the ring uses."""
    intra_bytes = message if intra_message is None else intra_message
    intra = links.intra_alpha + intra_bytes / links.intra_bw
    if not crossing:
        return Phase(name, "intra", steps, steps * message, steps * intra)
    share = min(1.0, links.adapters / max(rings_per_node, 1))
    inter = links.inter_alpha + message / (links.inter_bw * share)
    return Phase(name, "inter", steps, steps * message, steps * max(inter, intra))


def _price(phase, size_bytes, grid, links):
    """One of comm/plan.py's phases as rings: its steps and bytes are plan's closed forms; its
    tier is the slowest link its group uses. A world group that leaves a node runs as
    ring_channels rings on 1/ring_channels of the buffer each; a leaders-only phase has one
    ring per node."""
    ranks = np.arange(grid.size)
    nodes = ranks // links.local_size
    member_of = {"row": ranks // grid.x, "col": ranks % grid.x,
                 "world": np.zeros(grid.size, np.int64)}[phase.group]
    crossing, rings_per_node = _layout(member_of, nodes)
    whole = grid.size       # plan counts whole bytes; the model's buffer is continuous
    part, group_size = plan.phase_bytes(phase, whole, grid)
    nbytes = size_bytes * part / whole
    steps = plan.collective_steps(phase.collective, group_size)
    sent = plan.collective_bytes(phase.collective, nbytes, group_size)
    channels = links.ring_channels if crossing and phase.group == "world" else 1
    if phase.leaders_only:
        rings_per_node = 1
    p = _ring_phase(phase.name, steps, sent / steps / channels, links, crossing,
                    max(rings_per_node, channels), intra_message=sent / steps)
    return Phase(p.name, p.tier, steps, sent, p.seconds)


def _nccl_tree(size_bytes, n, links):
    """NCCL's double binary tree, pipelined (scale_model's own: comm/ runs it as native)."""
    local = min(links.local_size, n)
    y = -(-n // links.local_size)
    depth = math.ceil(math.log2(y)) if y > 1 else 0
    latency = 2 * ((local - 1) * links.intra_alpha + depth * links.inter_alpha)
    transfer = 2 * size_bytes / links.intra_bw if local > 1 else 0.0
    if y > 1:
        transfer = max(transfer, 2 * size_bytes / (links.adapters * links.inter_bw))
    return Phase("double binary tree (pipelined)", "inter" if y > 1 else "intra",
                 2 * ((local - 1) + depth), 2 * size_bytes, latency + transfer)


def _model_grid(algorithm, n, links, grid):
    """The grid comm/ would build: torus2d's given or auto grid; hierarchical's rows are nodes;
    ring's one row of the world."""
    if algorithm == "torus2d":
        x, y = parse_grid(grid, n) if grid is not None else auto_grid(n, links.local_size)
    elif algorithm == "hierarchical":
        x = min(links.local_size, n)
        if n % x:
            raise SimError(f"hierarchical needs whole nodes: world size {n} is not a multiple "
                           f"of {x} GPUs per node")
        y = n // x
    else:
        x, y = n, 1
    return plan.Grid.from_shape(x, y, n)


def allreduce_phases(algorithm, size_bytes, world_size, links, grid=None):
    """The phases of one all-reduce of ``size_bytes`` over ``world_size`` ranks: comm/plan.py's
    phases priced on the links (nccl_tree: the model's own), each plus one call_latency."""
    algorithm = ALIASES.get(algorithm, algorithm)
    if algorithm not in ALGORITHMS:
        raise SimError(f"unknown algorithm {algorithm!r}; choose one of "
                       f"{', '.join(ALGORITHMS + tuple(ALIASES))}")
    if not size_bytes > 0:
        raise SimError(f"message size {size_bytes!r} bytes must be positive")
    n = _positive_int(world_size, "world size")
    s = float(size_bytes)
    if n == 1:
        return []
    if algorithm == "nccl_tree":
        phases = [_nccl_tree(s, n, links)]
    else:
        g = _model_grid(algorithm, n, links, grid)
        phases = [_price(ph, s, g, links) for ph in plan.phases(algorithm, g)]
    return [Phase(p.name, p.tier, p.steps, p.bytes_per_rank, p.seconds + links.call_latency)
            for p in phases]


def allreduce_time(algorithm, size_bytes, world_size, links, grid=None):
    return sum(p.seconds for p in allreduce_phases(algorithm, size_bytes, world_size, links, grid))


def host_check_seconds(world_size, links):
    """One blocking host MPI_Allreduce of a flag over the world: what nnabla-ext-cuda 1.39's
    all_reduce_callback runs for every gradient array before packing it (mpi_check_all(...,
    "world") in on_finish_function_backward, multi_process_data_parallel_communicator.cu).
    Recursive doubling: ceil(log2 L) steps inside a node, ceil(log2 Y) across nodes, each at
    the preset's per-step latency (NCCL's hwLat standing in for MPI's: assumed)."""
    n = _positive_int(world_size, "world size")
    local = min(links.local_size, n)
    nodes = -(-n // links.local_size)
    return (math.ceil(math.log2(local)) * links.intra_alpha
            + math.ceil(math.log2(nodes)) * links.inter_alpha if n > 1 else 0.0)


def best_grid(world_size, links, size_bytes):
    """Every torus grid X x Y = world_size with its predicted time, fastest first."""
    n = _positive_int(world_size, "world size")
    rows = [{"grid": (x, n // x), "seconds": allreduce_time("torus2d", size_bytes, n, links,
                                                            (x, n // x))}
            for x in range(1, n + 1) if n % x == 0]
    return sorted(rows, key=lambda r: (r["seconds"], r["grid"]))


# --- compute and step time --------------------------------------------------------------------
@dataclass(frozen=True)
class Compute:
    """compute(b) = overhead + b * per_image, through (ref_batch, images_per_s)."""
    images_per_s: float
    ref_batch: float
    overhead_s: float
    eval_images_per_s: float

    @classmethod
    def from_preset(cls, preset, speed=1.0):
        p = get_preset(preset) if isinstance(preset, str) else preset
        if not speed > 0:
            raise SimError(f"speed={speed!r} must be positive")
        return cls(p.train_images_per_s.value * speed, p.ref_batch.value,
                   p.step_overhead_ms.value * 1e-3 / speed, p.eval_images_per_s.value * speed)

    def seconds(self, local_batch):
        per_image = (self.ref_batch / self.images_per_s - self.overhead_s) / self.ref_batch
        if per_image <= 0:
            raise SimError("the step overhead exceeds the whole reference step; lower it")
        return self.overhead_s + local_batch * per_image


def step_time(compute_s, allreduce_s, overlap=DEFAULT_OVERLAP, backward_fraction=BACKWARD_FRACTION):
    if not 0 <= overlap <= 1:
        raise SimError(f"overlap={overlap} must lie in [0, 1] (fraction of backward time)")
    backward = backward_fraction * compute_s
    hidden = min(allreduce_s, overlap * backward)
    step = compute_s + allreduce_s - hidden
    return {"compute_s": compute_s, "backward_s": backward, "allreduce_s": allreduce_s,
            "hidden_s": hidden, "exposed_s": allreduce_s - hidden, "step_s": step,
            "efficiency": compute_s / step}


# --- what the trainer overlaps ----------------------------------------------------------------
OVERLAP_RULE = ("the trainer overlaps only native with comm.backward_callback on NCCL, one "
                "micro-batch per update")


def trainer_uses_callback(algorithm, backend, backward_callback, accumulation=1, world_size=2):
    """Whether train_resnet50.py reduces gradients during backward (nnabla's all_reduce_callback):
    the same condition as training/device.py's reduces_during_backward, which the trainer's
    Exchange obeys; tests/test_dry_run_overlap.py checks the two agree on every combination
    (this package stays pure, so it cannot import the trainer's)."""
    return bool(backward_callback and backend == "nccl" and algorithm == "native"
                and accumulation == 1 and world_size > 1)


def trainer_overlap(algorithm, backend, backward_callback, accumulation=1, world_size=2):
    """(overlap, reason): the fraction of backward that hides the all-reduce in
    train_resnet50.py, and why. backend: comm/'s "mpi" (CPU) or "nccl" (GPU). Only
    all_reduce_callback sends gradients while backward still runs; how much of backward that
    hides is DEFAULT_OVERLAP, assumed, not measured. Every other exchange starts after
    backward has finished: overlap 0."""
    if backend not in ("mpi", "nccl"):
        raise SimError(f"backend {backend!r} is not comm/'s mpi or nccl")
    if world_size == 1:
        return 0.0, "one rank: no all-reduce to hide"
    if trainer_uses_callback(algorithm, backend, backward_callback, accumulation, world_size):
        return DEFAULT_OVERLAP, (f"nnabla's all_reduce_callback sends finished gradients during "
                                 f"backward; the fraction {DEFAULT_OVERLAP:g} is assumed, not "
                                 "measured")
    if backend == "mpi":
        why = f"{algorithm} on the MPI backend (CPU) runs after backward"
    elif algorithm != "native":
        why = f"{algorithm}'s exchange runs after backward"
    elif not backward_callback:
        why = "native without comm.backward_callback runs after backward"
    else:
        why = (f"accumulation {accumulation}: all_reduce_callback is used only with one "
               "micro-batch per update, so native runs after the last backward")
    return 0.0, f"{why} ({OVERLAP_RULE})"


def predict_step(local_batch, world_size, local_size=None, preset="abci2-v100",
                 algorithm="torus2d", grid=None, parameters=RESNET50_PARAMETERS,
                 bytes_per_param=2, overlap=DEFAULT_OVERLAP, ring_channels=1, speed=1.0,
                 callback_checks=0):
    """Predicted step of data-parallel training: what train_resnet50.py --dry-run prints.

    local_size overrides the preset's GPUs per node; bytes_per_param is the gradient wire
    format (2 = fp16, 4 = fp32); callback_checks: blocking host all-reduces per step of
    nnabla's all_reduce_callback (one per gradient array; 0 without it). Returns plain
    numbers (seconds) plus the phases.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    links = Links.from_preset(p, ring_channels)
    if local_size is not None:
        links = replace(links, local_size=_positive_int(local_size, "local size"))
    local_batch = _positive_int(local_batch, "local batch")
    size = parameters * bytes_per_param
    x_y = None
    if ALIASES.get(algorithm, algorithm) == "torus2d":
        x_y = parse_grid(grid, world_size) if grid is not None else \
            auto_grid(_positive_int(world_size, "world size"), links.local_size)
    phases = allreduce_phases(algorithm, size, world_size, links, x_y)
    compute = Compute.from_preset(p, speed).seconds(local_batch)
    result = step_time(compute, sum(ph.seconds for ph in phases), overlap)
    callback_s = callback_checks * host_check_seconds(world_size, links)
    result.update(callback_s=callback_s, step_s=result["step_s"] + callback_s,
                  efficiency=compute / (result["step_s"] + callback_s))
    result.update(preset=p.name, algorithm=algorithm, grid=x_y, world_size=world_size,
                  local_size=min(links.local_size, world_size), local_batch=local_batch,
                  size_bytes=size,
                  images_per_s=world_size * local_batch / result["step_s"],
                  phases=[ph.__dict__ for ph in phases], overlap=overlap,
                  callback_checks=callback_checks)
    return result


def describe_step(result):
    """Lines for train_resnet50.py --dry-run from a predict_step() result."""
    r = result
    phases = ", ".join(f"{p['name']} {p['seconds'] * 1e3:.2f} ms ({p['tier']}, {p['steps']} steps)"
                       for p in r["phases"]) or "none (one rank)"
    grid = f" {r['grid'][0]}x{r['grid'][1]}" if r["grid"] else ""
    return [f"predicted  {r['preset']}, {r['world_size']} GPUs ({r['local_size']} per node), "
            f"{r['local_batch']} per GPU: step {r['step_s'] * 1e3:.1f} ms = compute "
            f"{r['compute_s'] * 1e3:.1f} ms + exposed communication "
            f"{r['exposed_s'] * 1e3:.1f} ms"
            + (f" + all_reduce_callback's host checks {r['callback_s'] * 1e3:.1f} ms"
               if r.get("callback_s") else "") + "; "
            f"{r['images_per_s']:,.0f} images/s, scaling efficiency {r['efficiency']:.1%}",
            f"all-reduce {r['algorithm']}{grid} of {r['size_bytes'] / 1e6:.1f} MB: "
            f"{r['allreduce_s'] * 1e3:.2f} ms = {phases}; overlap {r['overlap']:g} of backward "
            f"hides {r['hidden_s'] * 1e3:.2f} ms (scale_model/ model, not a measurement)"]


def describe_assumptions(result, overlap_reason=None):
    """One line per assumption behind a predict_step() result (the dry run prints each after
    "assumed: "); ``overlap_reason`` from trainer_overlap() says where the overlap came from."""
    r = result
    lines = [f"overlap {r['overlap']:g} of backward: "
             + (overlap_reason or f"the model's default (DEFAULT_OVERLAP = {DEFAULT_OVERLAP:g}), "
                                  "not what a trainer does")]
    if r["overlap"] > 0:
        lines.append(f"backward = {BACKWARD_FRACTION * 3:g}/3 of compute (backward ~ 2x "
                     "forward; not measured)")
    p = get_preset(r["preset"])
    t, b, o = p.train_images_per_s, p.ref_batch, p.step_overhead_ms
    lines.append(f"compute per step = {o.value:g} ms + local batch x per-image time, through "
                 f"{t.value:g} img/s per GPU at batch {b.value:g} ({t.status}: {t.source}; "
                 f"overhead {o.status})")
    guessed = ", ".join(f"{k} {v.value:g}" for k, v in p.numeric_fields().items()
                        if v.status == "assumed")
    lines.append(f"hardware of preset {p.name}: {p.description}"
                 + (f"; assumed, not sourced: {guessed}" if guessed else "")
                 + f" (every number's source: python -m tools.simulate presets {p.name})")
    if ALIASES.get(r["algorithm"]) == "nccl_tree":
        lines.append(f"{r['algorithm']} = NCCL's double binary tree (nccl_tree), pipelined")
    if r.get("callback_checks"):
        lines.append(f"all_reduce_callback's {r['callback_checks']} host checks per step, each "
                     f"one MPI_Allreduce of a flag by recursive doubling at the preset's per-step "
                     f"latency ({r['callback_s'] / r['callback_checks'] * 1e6:.1f} us; NCCL's "
                     "hwLat standing in for MPI's), charged in full")
    lines.append("reductions are free (GPU adds are cheap next to the links)")
    return lines


# --- time to train ----------------------------------------------------------------------------
def normalize_stages(stages):
    """[{until_epoch, global_batch[, world_size, overlap, callback_checks]}] or
    [(until_epoch, global_batch)] -> dicts."""
    out, previous = [], 0.0
    if not stages:
        raise SimError("no stages: give at least one {until_epoch, global_batch}")
    for i, st in enumerate(stages):
        st = dict(zip(("until_epoch", "global_batch", "world_size"), st)) \
            if isinstance(st, (tuple, list)) else dict(st)
        if "until_epoch" not in st or "global_batch" not in st:
            raise SimError(f"stage {i} needs until_epoch and global_batch, got {st}")
        until, batch = st["until_epoch"], st["global_batch"]
        if not isinstance(until, (int, float)) or until <= previous:
            raise SimError(f"stage {i}: until_epoch={until!r} must be a number above the "
                           f"previous stage's {previous:g}")
        _positive_int(batch, f"stage {i} global_batch")
        out.append({"until_epoch": float(until), "global_batch": int(batch),
                    "world_size": st.get("world_size"),
                    # a stage's own overlap/callback_checks (the trainer's differ by stage)
                    **{k: st[k] for k in ("overlap", "callback_checks") if k in st}})
        previous = float(until)
    return out


def time_to_train(stages, world_size, preset="abci2-v100", algorithm="torus2d", grid=None,
                  local_size=None, parameters=RESNET50_PARAMETERS, bytes_per_param=2,
                  overlap=DEFAULT_OVERLAP, images=IMAGENET_TRAIN_IMAGES, eval_every_epochs=0.0,
                  val_images=IMAGENET_VAL_IMAGES, ring_channels=1, speed=1.0,
                  callback_checks=0):
    """Predicted seconds of a whole batch schedule, counted in samples like data/sampler.py."""
    stages = normalize_stages(stages)
    p = get_preset(preset) if isinstance(preset, str) else preset
    rows, done, train_s = [], 0, 0.0
    for i, st in enumerate(stages):
        n = _positive_int(st["world_size"] or world_size, "world size")
        if st["global_batch"] % n:
            raise SimError(f"stage {i}: global_batch={st['global_batch']} is not divisible by "
                           f"{n} GPUs; use a multiple of {n}")
        step = predict_step(st["global_batch"] // n, n, local_size, p, algorithm,
                            grid if st["world_size"] is None else None, parameters,
                            bytes_per_param, st.get("overlap", overlap), ring_channels, speed,
                            st.get("callback_checks", callback_checks))
        steps = max(0, math.ceil((st["until_epoch"] * images - done) / st["global_batch"]))
        done += steps * st["global_batch"]
        rows.append({**st, "world_size": n, "local_batch": step["local_batch"], "steps": steps,
                     "grid": step["grid"], "overlap": step["overlap"], "step_s": step["step_s"],
                     "allreduce_s": step["allreduce_s"], "exposed_s": step["exposed_s"],
                     "efficiency": step["efficiency"], "seconds": steps * step["step_s"]})
        train_s += steps * step["step_s"]
    eval_s, evals = 0.0, 0
    if eval_every_epochs:
        if eval_every_epochs < 0:
            raise SimError(f"eval_every_epochs={eval_every_epochs} must be positive (0 = none)")
        end = stages[-1]["until_epoch"]
        evals = math.floor(end / eval_every_epochs + 1e-9)
        evals += 0 if math.isclose(evals * eval_every_epochs, end) else 1
        eval_s = evals * val_images / (rows[-1]["world_size"] * p.eval_images_per_s.value * speed)
    return {"stages": rows, "train_s": train_s, "eval_s": eval_s, "evals": evals,
            "total_s": train_s + eval_s, "epochs": stages[-1]["until_epoch"], "images": images,
            "preset": p.name, "algorithm": algorithm, "overlap": overlap,
            "bytes_per_param": bytes_per_param}


def scaling_rows(preset, gpu_counts, size_bytes, local_batch, overlap=DEFAULT_OVERLAP,
                 algorithms=ALGORITHMS, ring_channels=1):
    """Per GPU count: all-reduce seconds and weak-scaling efficiency of each algorithm."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    links = Links.from_preset(p, ring_channels)
    compute = Compute.from_preset(p).seconds(_positive_int(local_batch, "local batch"))
    rows = []
    for n in gpu_counts:
        n = _positive_int(n, "GPU count")
        row = {"gpus": n, "nodes": -(-n // links.local_size),
               "grid": auto_grid(n, links.local_size)}
        for a in algorithms:
            t = allreduce_time(a, size_bytes, n, links)
            row[a] = {"allreduce_s": t, "efficiency": step_time(compute, t, overlap)["efficiency"]}
        rows.append(row)
    return rows


__all__ = ["ALGORITHMS", "Compute", "Links", "Phase", "PresetError", "SimError",
           "allreduce_bytes_per_rank", "allreduce_phases", "allreduce_time", "auto_grid",
           "best_grid", "describe_assumptions", "describe_step", "host_check_seconds",
           "normalize_stages", "parse_grid", "predict_step", "ring_steps", "scaling_rows",
           "step_time", "time_to_train", "torus_steps", "trainer_overlap",
           "trainer_uses_callback"]
