"""What NVIDIA's MLPerf ResNet-50 runs did, modelled: the step of MXNet + Horovod + NCCL on DGX.

    python -m tools.simulate predict --system dgxa100-80g --accelerators 64 --global-batch 3264

Those runs (mlcommons/training_results_v0.6 ... v4.0, NVIDIA/benchmarks/resnet/implementations/
mxnet) train with MXNet, all-reduce the fp16 gradients with Horovod over NCCL, and time each
block of epochs. The step of N GPUs, L per node, Y = N / L nodes, per-GPU batch b:

    step = compute(b) + allreduce - hidden

compute(b)  = overhead + b / peak. ``peak`` is the GPU's images/s when the batch is large;
            ``overhead`` is what a step costs whatever the batch (launches, the optimizer, layers
            too small to fill the GPU), so a small per-GPU batch runs below peak. Both are
            fitted on the calibration rows (scale_model/calibration.py), overhead once for all
            presets; the preset stores them as images/s at its reference batch and
            step_overhead_ms.
allreduce   NCCL's all-reduce of S bytes (25,557,032 fp16 gradients = 51.1 MB) as NCCL's own
            tuner costs it (src/graph/tuning.cc, Simple protocol) and chooses it: the faster of
              ring  baseLat + (2(N-1) - 2(Y-1)) intra_alpha + 2(Y-1) inter_alpha
                    + 2(N-1)/N * S / B,   B = min(NVLink per GPU, adapters x adapter rate)
                    (NCCL runs one ring per channel and spreads the channels over every adapter,
                    so a node's crossing traffic uses all of them);
              tree  2((L-1) tree_intra_alpha + floor(log2 Y) tree_inter_alpha)
                    + 2S / min(tree_bw_fraction x B, tree_bw_cap)   (the cap: more than 2 nodes)
            Rates are the preset's line rates times its (assumed) efficiencies.
hidden      Horovod in MXNet (MXNET_HOROVOD_NUM_GROUPS = G) reduces the gradients in G groups,
            each as soon as backward has produced it, so all but the last group can run under
            backward: hidden = min(allreduce x (G-1)/G, backward), backward = 2/3 of compute
            (model.BACKWARD_FRACTION, assumed). G = 1 (every run from MLPerf v1.0 on, and v0.7's
            multi-node ones): nothing is hidden.

Not modelled: SHARP (NCCL CollNet; v4.0's eos_n8 ran with it), the input pipeline (DALI is
assumed to keep up), batch-norm groups across GPUs, evaluation inside the step time (it is
counted apart by time_to_train). Pure: the standard library and this package only.
"""
import math
from dataclasses import dataclass

from .model import (BACKWARD_FRACTION, IMAGENET_TRAIN_IMAGES, IMAGENET_VAL_IMAGES,
                    RESNET50_PARAMETERS, SimError)
from .presets import get_preset

FP16_BYTES = 2


@dataclass(frozen=True)
class ComputeCurve:
    """Per-GPU seconds of one training step: overhead + batch / peak."""
    overhead_s: float
    peak_images_per_s: float

    @classmethod
    def from_preset(cls, preset):
        """Through the preset's images/s at its reference batch, with its step overhead."""
        p = get_preset(preset) if isinstance(preset, str) else preset
        ref, overhead = p.ref_batch.value, p.step_overhead_ms.value * 1e-3
        per_image = (ref / p.train_images_per_s.value - overhead) / ref
        if per_image <= 0:
            raise SimError(f"preset {p.name}: the step overhead exceeds the whole reference step")
        return cls(overhead, 1.0 / per_image)

    def seconds(self, local_batch):
        return self.overhead_s + local_batch / self.peak_images_per_s

    def images_per_s_at(self, local_batch):
        return local_batch / self.seconds(local_batch)


def check_shape(preset, accelerators, global_batch):
    """(nodes, per-GPU batch) of a run, or a one-line SimError naming the fix."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    per_node = int(p.gpus_per_node.value)
    for name, value in (("accelerators", accelerators), ("global batch", global_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SimError(f"{name}={value!r} must be a positive integer")
    if accelerators > per_node and accelerators % per_node:
        raise SimError(f"{accelerators} accelerators do not fill whole {p.name} nodes of "
                       f"{per_node} GPUs; use a multiple of {per_node} (e.g. "
                       f"{accelerators // per_node * per_node or per_node})")
    if global_batch % accelerators:
        raise SimError(f"global batch {global_batch} is not divisible by {accelerators} "
                       f"accelerators; use a multiple of {accelerators} (e.g. "
                       f"{max(1, round(global_batch / accelerators)) * accelerators})")
    return -(-accelerators // per_node), global_batch // accelerators


def _ring_bus_bandwidth(p, nodes):
    """Bytes/s each rank's ring position moves: NVLink, or the node's adapters together."""
    nvlink = p.intra_bw_GBps.value * p.intra_efficiency.value * 1e9
    if nodes == 1:
        return nvlink
    network = p.inter_adapters.value * p.inter_bw_GBps.value * p.inter_efficiency.value * 1e9
    return min(nvlink, network)


def nccl_allreduce(size_bytes, accelerators, preset):
    """NCCL's all-reduce of size_bytes over the run's GPUs: ring and tree as NCCL's tuner
    costs them (Simple protocol), and the one it picks (the faster)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    n = accelerators
    local = min(int(p.gpus_per_node.value), n)
    nodes = -(-n // int(p.gpus_per_node.value))
    if n == 1:
        return {"algorithm": "none", "seconds": 0.0, "ring_s": 0.0, "tree_s": 0.0}
    us = 1e-6
    bus = _ring_bus_bandwidth(p, nodes)
    inter_steps = 2 * (nodes - 1)
    ring = (p.call_latency_us.value * us
            + (2 * (n - 1) - inter_steps) * p.intra_alpha_us.value * us
            + inter_steps * p.inter_alpha_us.value * us
            + 2.0 * (n - 1) / n * size_bytes / bus)
    tree_bus = p.tree_bw_fraction.value * bus
    if nodes > 2:
        tree_bus = min(tree_bus, p.tree_bw_cap_GBps.value * 1e9)
    depth = int(math.log2(nodes)) if nodes > 1 else 0          # NCCL's log2i: floor
    tree = (2 * ((local - 1) * p.tree_intra_alpha_us.value + depth * p.tree_inter_alpha_us.value)
            * us + 2.0 * size_bytes / tree_bus)
    algorithm = "ring" if ring <= tree else "tree"
    return {"algorithm": algorithm, "seconds": min(ring, tree), "ring_s": ring, "tree_s": tree}


def predict(preset, accelerators, global_batch, parameters=RESNET50_PARAMETERS,
            bytes_per_param=FP16_BYTES, compute=None, groups=None):
    """The predicted step of an MLPerf-style run. ``compute`` (a ComputeCurve) and ``groups``
    override the preset's (the fit passes its trial values through here)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    nodes, local_batch = check_shape(p, accelerators, global_batch)
    curve = compute or ComputeCurve.from_preset(p)
    groups = int(groups if groups is not None else p.allreduce_groups.value)
    compute_s = curve.seconds(local_batch)
    ar = nccl_allreduce(parameters * bytes_per_param, accelerators, p)
    backward = BACKWARD_FRACTION * compute_s
    hidden = min(ar["seconds"] * (groups - 1) / groups, backward)
    step = compute_s + ar["seconds"] - hidden
    return {"system": p.name, "accelerators": accelerators, "nodes": nodes,
            "per_node": int(p.gpus_per_node.value), "global_batch": global_batch,
            "local_batch": local_batch, "step_s": step, "compute_s": compute_s,
            "allreduce_s": ar["seconds"], "allreduce_algorithm": ar["algorithm"],
            "ring_s": ar["ring_s"], "tree_s": ar["tree_s"], "hidden_s": hidden,
            "exposed_s": ar["seconds"] - hidden, "groups": groups,
            "images_per_s": global_batch / step,
            "per_gpu_images_per_s_compute": curve.images_per_s_at(local_batch)}


def time_to_train(step, epochs, eval_every=0.0, preset=None, images=IMAGENET_TRAIN_IMAGES,
                  val_images=IMAGENET_VAL_IMAGES):
    """Seconds of ``epochs`` epochs at a predict() step, plus an evaluation every
    ``eval_every`` epochs (0: none) at the preset's inference rate; start-up not counted."""
    if not epochs > 0:
        raise SimError(f"epochs={epochs!r} must be positive")
    if eval_every < 0:
        raise SimError(f"eval_every={eval_every!r} must be positive (0 = no evaluation)")
    steps = math.ceil(epochs * images / step["global_batch"])
    train_s = steps * step["step_s"]
    evals = math.floor(epochs / eval_every + 1e-9) if eval_every else 0
    eval_s = 0.0
    if evals:
        p = get_preset(preset or step["system"])
        eval_s = evals * val_images / (step["accelerators"] * p.eval_images_per_s.value)
    return {"epochs": epochs, "steps": steps, "train_s": train_s, "evals": evals,
            "eval_s": eval_s, "time_to_train_s": train_s + eval_s}
