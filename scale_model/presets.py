"""Hardware presets for the scale model (scale_model/model.py): every number carries its source.

Each numeric field is a ``Sourced(value, status, source)``. ``status`` says how much to trust it:

    confirmed  stated in the cited document (a system's own docs, a datasheet)
    measured   someone else's published measurement (NVIDIA's numbers, MLPerf logs): not ours
    derived    arithmetic on cited numbers; the arithmetic is written in the source string
    assumed    our choice where no source was found; change it if you know better

The README's "Scale model" section prints this table with ``python -m tools.simulate presets``.
Only numpy/stdlib: train_resnet50.py --dry-run imports this through scale_model.
"""
from dataclasses import dataclass, fields

STATUSES = ("confirmed", "measured", "derived", "assumed")

ABCI2_DOC = ("https://docs.abci.ai/en/system-overview/ "
             "(aistabci/abci-docs en/docs/system-overview.md)")
ABCI3_DOC = ("https://docs.abci.ai/v3/en/system-overview/ "
             "(aistabci/abci-docs v3/en/docs/system-overview.md)")
NCCL_2020 = ("NVIDIA/nccl src/graph/tuning.cc @01afd20 (2020, NCCL 2.7/2.8 era; ABCI 2.0 had "
             "nccl/2.8): hwLat")
NCCL_2023 = ("NVIDIA/nccl src/graph/tuning.cc @b647562 (NCCL 2.19+ era; ABCI 3.0 has "
             "2.23/2.25): hwLat")
DLE_MXNET = ("NVIDIA/DeepLearningExamples MxNet/Classification/RN50v1.5/README.md, "
             "mxnet-20.12 container")
MLPERF_H100 = ("mlcommons/training_results_v3.0 NVIDIA/results/dgxh100_ngc23.04_mxnet/resnet/"
               "result_0.txt (8x H100 SXM, global batch 3200)")


@dataclass(frozen=True)
class Sourced:
    value: float
    status: str
    source: str


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    gpus_per_node: Sourced
    max_nodes: Sourced
    intra_bw_GBps: Sourced        # GB/s per GPU per direction to its ring neighbour (peak)
    intra_efficiency: Sourced     # achievable fraction of intra_bw_GBps
    intra_alpha_us: Sourced       # per ring step inside a node
    inter_adapters: Sourced       # network adapters (HCAs) per node
    inter_bw_GBps: Sourced        # GB/s per adapter per direction (line rate)
    inter_efficiency: Sourced     # achievable fraction of inter_bw_GBps
    inter_alpha_us: Sourced       # per ring step across nodes
    call_latency_us: Sourced      # fixed cost per collective call
    train_images_per_s: Sourced   # ResNet-50 training throughput per GPU at ref_batch
    ref_batch: Sourced            # per-GPU batch of that throughput
    step_overhead_ms: Sourced     # batch-independent cost per training step
    eval_images_per_s: Sourced    # inference throughput per GPU (validation)

    def numeric_fields(self):
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), Sourced)}


# V100 step overhead, derived once here so both presets state the same arithmetic.
_V100_OVERHEAD_SRC = (
    "derived from " + DLE_MXNET + " V100 mixed-precision inference table: avg latency 6.78 ms at "
    "batch 16 and 38.06 ms at batch 128; t = t0 + b/R gives t0 = 2.31 ms per forward pass; x3 "
    "for forward+backward (assumed) = 6.9 ms")

PRESETS = {
    "abci2-v100": Preset(
        name="abci2-v100",
        description="ABCI 2.0 compute node (V): 4x V100 SXM2 16GB, NVLink 2.0, 2x InfiniBand EDR "
                    "(the paper's system; service ended 2024-10-31)",
        gpus_per_node=Sourced(4, "confirmed", ABCI2_DOC + ": 'four NVIDIA V100 GPU accelerators'"),
        max_nodes=Sourced(1088, "confirmed", ABCI2_DOC + ": compute nodes (V) g0001-g1088"),
        intra_bw_GBps=Sourced(50, "derived",
                              "V100 SXM2: 6 NVLink 2.0 links x 25 GB/s per direction = 300 GB/s "
                              "total (https://www.nvidia.com/en-us/data-center/v100/); 4 GPUs "
                              "fully connected -> 2 links per neighbour pair = 50 GB/s "
                              "(link count per pair inferred; ABCI block diagram not read)"),
        intra_efficiency=Sourced(0.8, "assumed", "assumed achievable fraction of NVLink peak"),
        intra_alpha_us=Sourced(3.4, "measured", NCCL_2020 + "[NVLINK][Ring][Simple] = 3.4 us"),
        inter_adapters=Sourced(2, "confirmed",
                               ABCI2_DOC + ": 'InfiniBand EDR (100 Gbps) x2'; paper table: "
                               "'Infiniband EDR x2' (NVIDIA blog on Sony's record)"),
        inter_bw_GBps=Sourced(12.5, "derived", "EDR 100 Gb/s per port (ABCI docs) / 8 bits"),
        inter_efficiency=Sourced(0.9, "assumed",
                                 "assumed; cf. ~192 of 200 GB/s NCCL busbw on DGX A100 8x200 Gb "
                                 "IB (https://github.com/NVIDIA/nccl/issues/812) = 0.96"),
        inter_alpha_us=Sourced(9.6, "measured", NCCL_2020 + "[NET][Ring][Simple] = 9.6 us"),
        call_latency_us=Sourced(8.4, "measured", NCCL_2020.replace("hwLat", "baseLat")
                                + "[Ring][Simple] = 8.4 us"),
        train_images_per_s=Sourced(1376, "measured",
                                   DLE_MXNET + ": 1 x V100 16GB, mixed precision, batch 192, "
                                   "1376 img/s (NVIDIA's number, MXNet, not nnabla)"),
        ref_batch=Sourced(192, "confirmed", DLE_MXNET + ": benchmark.py -b 192 --dtype float16"),
        step_overhead_ms=Sourced(6.9, "derived", _V100_OVERHEAD_SRC),
        eval_images_per_s=Sourced(3362, "measured",
                                  DLE_MXNET + ": V100 inference, mixed precision, batch 128, "
                                  "3362 img/s"),
    ),
    "abci3-h200": Preset(
        name="abci3-h200",
        description="ABCI 3.0 compute node (H): 8x H200 SXM 141GB, NVLink 4 / NVSwitch, 8x "
                    "InfiniBand NDR200",
        gpus_per_node=Sourced(8, "confirmed", ABCI3_DOC + ": 'NVIDIA H200 SXM 141GB' x8"),
        max_nodes=Sourced(766, "confirmed", ABCI3_DOC + ": compute nodes (H) hnode001-hnode766"),
        intra_bw_GBps=Sourced(450, "derived",
                              "H200 SXM: '18x 4th Gen NVLink, 900GB/s' (bidirectional; "
                              "mlcommons/inference_results_v4.1 closed/NVIDIA/systems/"
                              "H200-SXM-141GBx8_TRT_MaxQ.json) / 2 directions; NVSwitch lets "
                              "one neighbour use all of it"),
        intra_efficiency=Sourced(0.8, "assumed", "assumed achievable fraction of NVLink peak"),
        intra_alpha_us=Sourced(3.4, "measured", NCCL_2023 + "[NVLINK][Ring][Simple] = 3.4 us"),
        inter_adapters=Sourced(8, "confirmed", ABCI3_DOC + ": 'InfiniBand NDR (200 Gbps)' x8"),
        inter_bw_GBps=Sourced(25, "derived", "NDR200 200 Gb/s per port (ABCI docs) / 8 bits"),
        inter_efficiency=Sourced(0.9, "assumed",
                                 "assumed; cf. ~192 of 200 GB/s NCCL busbw on DGX A100 8x200 Gb "
                                 "IB (https://github.com/NVIDIA/nccl/issues/812) = 0.96"),
        inter_alpha_us=Sourced(14.0, "measured", NCCL_2023 + "[NET][Ring][Simple] = 14.0 us"),
        call_latency_us=Sourced(8.4, "measured", NCCL_2023.replace("hwLat", "baseLat")
                                + "[Ring][Simple] = 8.4 us"),
        train_images_per_s=Sourced(7000, "derived",
                                   MLPERF_H100 + ": tracked_stats throughput ~56,000 img/s over "
                                   "8 GPUs in epochs 2-9 = 7,000 img/s per H100 (NVIDIA's "
                                   "MLPerf code, MXNet+DALI); H200 assumed equal to H100 (same "
                                   "GH100 compute)"),
        ref_batch=Sourced(400, "confirmed", MLPERF_H100 + ": d_batch_size 400"),
        step_overhead_ms=Sourced(6.9, "assumed",
                                 "assumed equal to the V100 value (launch-bound, not "
                                 "compute-bound); " + _V100_OVERHEAD_SRC),
        eval_images_per_s=Sourced(21000, "assumed",
                                  "assumed 3x the training throughput (forward only)"),
    ),
}


class PresetError(ValueError):
    """An unknown preset name; the message lists the known ones."""


def get_preset(name):
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")


def markdown_table(names=None):
    """The presets as a Markdown table (value, status, source) for the README."""
    names = list(names or PRESETS)
    presets = [get_preset(n) for n in names]
    lines = ["| field | " + " | ".join(names) + " | status | source |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
    for field, first in presets[0].numeric_fields().items():
        values = [p.numeric_fields()[field] for p in presets]
        statuses = sorted({v.status for v in values})
        sources = "; ".join(dict.fromkeys(f"{p.name}: {v.source}" if len(presets) > 1 else
                                          v.source for p, v in zip(presets, values)))
        lines.append(f"| {field} | " + " | ".join(f"{v.value:g}" for v in values)
                     + f" | {'/'.join(statuses)} | {sources} |")
    return "\n".join(lines)
