"""Hardware presets for the scale model (scale_model/model.py): every number carries its source.

Each numeric field is a ``Sourced(value, status, source)``. ``status`` says how much to trust it:

    confirmed  stated in the cited document (a system's own docs, a datasheet)
    measured   someone else's published measurement (NVIDIA's numbers, MLPerf logs): not ours
    derived    arithmetic on cited numbers; the arithmetic is written in the source string
    fitted     fitted on the MLPerf calibration rows (scale_model/mlperf.py, ``python -m
               tools.simulate validate``); tests/test_scale_validation.py refits and compares
    assumed    our choice where no source was found; change it if you know better

docs/scale_model.md prints this table with ``python -m tools.simulate presets``.
Only numpy/stdlib: train_resnet50.py --dry-run imports this through scale_model.
"""
from dataclasses import dataclass, fields

STATUSES = ("confirmed", "measured", "derived", "fitted", "assumed")

ABCI2_DOC = ("https://docs.abci.ai/en/system-overview/ "
             "(aistabci/abci-docs en/docs/system-overview.md)")
ABCI3_DOC = ("https://docs.abci.ai/v3/en/system-overview/ "
             "(aistabci/abci-docs v3/en/docs/system-overview.md)")
NCCL_2020 = ("NVIDIA/nccl src/graph/tuning.cc @01afd20 (2020, NCCL 2.7/2.8 era; ABCI 2.0 had "
             "nccl/2.8): hwLat")
NCCL_2023 = ("NVIDIA/nccl src/graph/tuning.cc @b647562 (NCCL 2.19+ era; ABCI 3.0 has "
             "2.23/2.25): hwLat")
NCCL_TUNER = "NVIDIA/nccl src/graph/tuning.cc {tag}"
NCCL_275 = NCCL_TUNER.format(tag="v2.7.5-1")
NCCL_2215 = NCCL_TUNER.format(tag="v2.21.5-1")
FIT_SOURCE = ("fitted on the issue-26 calibration rows (MLPerf ResNet-50, 8-64 GPUs) by "
              "scale_model/calibration.py; python -m tools.simulate validate")
DLE_MXNET = ("NVIDIA/DeepLearningExamples MxNet/Classification/RN50v1.5/README.md, "
             "mxnet-20.12 container")


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
    tree_intra_alpha_us: Sourced  # NCCL's double binary tree: per level inside a node
    tree_inter_alpha_us: Sourced  # NCCL's tree: per level across nodes
    tree_bw_fraction: Sourced     # NCCL's tree bus bandwidth as a fraction of the ring's
    tree_bw_cap_GBps: Sourced     # NCCL's ceiling on the tree's bus bandwidth across > 2 nodes
    allreduce_groups: Sourced     # gradient groups reduced as backward finishes them (Horovod)

    def numeric_fields(self):
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), Sourced)}


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
        train_images_per_s=Sourced(1400.6, "fitted",
                                   "the V100-SXM2-16GB of preset dgx1-v100, its value "
                                   "(NVIDIA's MXNet, not nnabla); " + FIT_SOURCE),
        ref_batch=Sourced(208, "confirmed", "dgx1-v100's reference batch (MLPerf v0.6 "
                                            "config_DGX1.sh: BATCHSIZE=208)"),
        step_overhead_ms=Sourced(3.263, "fitted", FIT_SOURCE + ": one overhead for every preset"),
        eval_images_per_s=Sourced(3362, "measured",
                                  DLE_MXNET + ": V100 inference, mixed precision, batch 128, "
                                  "3362 img/s"),
        tree_intra_alpha_us=Sourced(28, "measured", NCCL_275 + ": hwLat[NVLINK][Tree][Simple] "
                                    "= 28 us (ABCI 2.0 had nccl/2.8; 2.7.5 read)"),
        tree_inter_alpha_us=Sourced(50, "measured",
                                    NCCL_275 + ": hwLat[NET][Tree][Simple] = 50 us"),
        tree_bw_fraction=Sourced(0.9, "measured", NCCL_275 + ": tree busBw = min(busBw * .9, "
                                 "maxTreeBw)"),
        tree_bw_cap_GBps=Sourced(80, "measured", NCCL_275 + ": maxTreeBw = 80 GB/s for Simple "
                                 "on more than 2 nodes"),
        allreduce_groups=Sourced(1, "assumed", "our trainer reduces after backward (one group); "
                                 "the ABCI commands (paper, table, ttt) take --overlap instead"),
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
        train_images_per_s=Sourced(7168.5, "fitted",
                                   "preset dgxh100's H100 value, H200 assumed equal (same "
                                   "GH100 compute; NVIDIA's MXNet, not nnabla); " + FIT_SOURCE),
        ref_batch=Sourced(400, "confirmed", "dgxh100's reference batch (MLPerf v3.0 "
                                            "config_DGXH100.sh: BATCHSIZE=400)"),
        step_overhead_ms=Sourced(3.263, "fitted", FIT_SOURCE + ": one overhead for every preset"),
        eval_images_per_s=Sourced(21500, "assumed",
                                  "assumed 3x the training throughput at batch 400 (forward "
                                  "only), rounded"),
        tree_intra_alpha_us=Sourced(28, "measured", NCCL_2215 + ": hwLat[NVLINK][Tree][Simple] "
                                    "= 28 us"),
        tree_inter_alpha_us=Sourced(28, "measured",
                                    NCCL_2215 + ": hwLat[NET][Tree][Simple] = 28 us"),
        tree_bw_fraction=Sourced(0.92, "measured", NCCL_2215 + ": tree busBw = min(busBw * .92, "
                                 "nChannels * perChMaxTreeBw)"),
        tree_bw_cap_GBps=Sourced(288, "assumed", NCCL_2215 + ": perChMaxTreeBws Hopper N4 = 36.0 "
                                 "GB/s per channel x 8 channels (the channel count is assumed: "
                                 "one per adapter)"),
        allreduce_groups=Sourced(1, "assumed", "our trainer reduces after backward (one group); "
                                 "the ABCI commands (paper, table, ttt) take --overlap instead"),
    ),
}


# --- NVIDIA DGX systems of MLPerf Training's ResNet-50 results (the calibration rows, issue 26) ---
MLPERF = "mlcommons/training_results_v{round}"
SYSTEM_JSON = MLPERF + " NVIDIA/systems/{system}.json"
CONFIG = MLPERF + " NVIDIA/benchmarks/resnet/implementations/mxnet/{config}"
NO_NODE_LIMIT = Sourced(1024, "assumed", "not a system limit: DGX clusters are built to order; "
                                         "the model checks no node count")


def _hardware(json_src, gpus, nvlink_total, adapters, rate_gbit, nic):
    """The sourced hardware fields of a DGX preset from its MLPerf system description."""
    return dict(
        gpus_per_node=Sourced(gpus, "confirmed", f"{json_src}: accelerators_per_node {gpus}"),
        intra_bw_GBps=Sourced(nvlink_total / 2, "derived",
                              f"{json_src}: accelerator_interconnect '{nvlink_total} GB/s' "
                              "(both directions) / 2 = per direction, all of it to one ring "
                              "neighbour (NVSwitch, or NCCL's rings over every link)"),
        intra_efficiency=Sourced(0.8, "assumed", "assumed achievable fraction of NVLink peak"),
        inter_adapters=Sourced(adapters, "confirmed", f"{json_src}: host_networking '{nic}'"),
        inter_bw_GBps=Sourced(rate_gbit / 8, "derived", f"{rate_gbit} Gb/s per adapter "
                                                        f"({json_src}) / 8 bits"),
        inter_efficiency=Sourced(0.9, "assumed",
                                 "assumed; cf. ~192 of 200 GB/s NCCL busbw on DGX A100 8x200 Gb "
                                 "IB (https://github.com/NVIDIA/nccl/issues/812) = 0.96"),
    )


def _nccl(tag, net_ring, net_tree, fraction, cap, cap_src):
    """NCCL's tuner constants (Simple protocol) of the release the runs used."""
    src = NCCL_TUNER.format(tag=tag)
    return dict(
        intra_alpha_us=Sourced(3.4, "measured", src + ": hwLat[NVLINK][Ring][Simple] = 3.4 us"),
        inter_alpha_us=Sourced(net_ring, "measured",
                               src + f": hwLat[NET][Ring][Simple] = {net_ring:g} us"),
        call_latency_us=Sourced(8.4, "measured", src + ": baseLat[Ring][Simple] = 8.4 us"),
        tree_intra_alpha_us=Sourced(28, "measured", src + ": hwLat[NVLINK][Tree][Simple] = 28 us"),
        tree_inter_alpha_us=Sourced(net_tree, "measured",
                                    src + f": hwLat[NET][Tree][Simple] = {net_tree:g} us"),
        tree_bw_fraction=Sourced(fraction, "measured",
                                 src + f": tree busBw = min(busBw * {fraction:g}, ceiling)"),
        tree_bw_cap_GBps=Sourced(cap, "assumed" if "assumed" in cap_src else "measured",
                                 src + ": " + cap_src),
    )


def _compute(ref_batch, ref_src, images_per_s, overhead_ms, eval_ips, eval_src):
    """Per-GPU compute: fitted throughput at the calibration batch and the fitted per-step
    overhead (shared by every preset), and the evaluation throughput."""
    return dict(
        train_images_per_s=Sourced(images_per_s, "fitted",
                                   FIT_SOURCE + f": per-GPU images/s at batch {ref_batch}"),
        ref_batch=Sourced(ref_batch, "confirmed", ref_src),
        step_overhead_ms=Sourced(overhead_ms, "fitted",
                                 FIT_SOURCE + ": one overhead for every preset"),
        eval_images_per_s=Sourced(eval_ips, "measured" if "assumed" not in eval_src
                                  else "assumed", eval_src),
    )


def _groups(groups, config_src):
    return dict(allreduce_groups=Sourced(groups, "confirmed",
                                         f"{config_src}: MXNET_HOROVOD_NUM_GROUPS={groups}"))


NCCL_27_CAP = "maxTreeBw = 80 GB/s for Simple on more than 2 nodes"
V100_EVAL = DLE_MXNET + ": V100 16GB inference, mixed precision, batch 128, 3362 img/s"
A100_EVAL = DLE_MXNET + ": A100 80GB inference, mixed precision, batch 192, 6198 img/s"
# the V100 DGX rows ran v0.6 (NCCL 2.4.6) and v0.7 (2.7.5)
NCCL_V100_RUNS = _nccl("v2.7.5-1", 9.6, 50, 0.9, 80, NCCL_27_CAP + " (v0.7 ran 2.7.5; v0.6's "
                       "2.4.6 has no tuner table, 2.7.5's stands in)")
DGX_PRESETS = {
    "dgx1-v100": Preset(
        name="dgx1-v100",
        description="NVIDIA DGX-1: 8x V100 SXM2 16GB, NVLink 2.0, 4x InfiniBand EDR "
                    "(MLPerf v0.6/v0.7 dgx1_ngc19.05/20.06_mxnet)",
        max_nodes=NO_NODE_LIMIT,
        **_hardware(SYSTEM_JSON.format(round="0.7", system="dgx1_ngc20.06_mxnet"), 8, 300, 4, 100,
                    "4 network cards, ConnectX-4, InfiniBand 100 Gb/sec (4X EDR) (v0.6 "
                    "dgx1_ngc19.05_mxnet.json)"),
        **NCCL_V100_RUNS,
        **_compute(208, CONFIG.format(round="0.6", config="config_DGX1.sh") + ": BATCHSIZE=208",
                   1400.6, 3.263, 3362, V100_EVAL),
        **_groups(20, CONFIG.format(round="0.7", config="config_DGX1.sh")),
    ),
    "dgx2h-v100": Preset(
        name="dgx2h-v100",
        description="NVIDIA DGX-2H: 16x V100 SXM3 32GB 450 W, NVSwitch, 8x InfiniBand EDR "
                    "(MLPerf v0.6/v0.7 dgx2h_ngc19.05/20.06_mxnet)",
        max_nodes=NO_NODE_LIMIT,
        **_hardware(SYSTEM_JSON.format(round="0.7", system="dgx2h_ngc20.06_mxnet"), 16, 300, 8,
                    100, "Compute: 8x ConnectX-5 IB EDR 100Gb/Sec"),
        **NCCL_V100_RUNS,
        **_compute(208, CONFIG.format(round="0.6", config="config_DGX2.sh") + ": BATCHSIZE=208",
                   1559.1, 3.263, 3362, "assumed equal to " + V100_EVAL),
        **_groups(20, CONFIG.format(round="0.7", config="config_DGX2.sh")),
    ),
    "dgxa100-40g": Preset(
        name="dgxa100-40g",
        description="NVIDIA DGX A100 40GB: 8x A100 SXM4 40GB, NVSwitch, 8x InfiniBand HDR "
                    "200 Gb/s (MLPerf v0.7 dgxa100[_n2]_ngc20.06_mxnet)",
        max_nodes=NO_NODE_LIMIT,
        **_hardware(SYSTEM_JSON.format(round="0.7", system="dgxa100_n2_ngc20.06_mxnet"), 8, 600,
                    8, 200, "Compute: 8x ConnectX-6 IB HDR 200Gb/Sec"),
        **_nccl("v2.7.5-1", 9.6, 50, 0.9, 80, NCCL_27_CAP),
        **_compute(408, CONFIG.format(round="0.7", config="config_DGXA100.sh") + ": BATCHSIZE=408",
                   2634.6, 3.263, 6198, "assumed equal to " + A100_EVAL),
        **_groups(1, CONFIG.format(round="0.7", config="config_DGXA100_multi_2x8x204.sh")
                  + " (the one-node config_DGXA100.sh has 20)"),
    ),
    "dgxa100-80g": Preset(
        name="dgxa100-80g",
        description="NVIDIA DGX A100 80GB: 8x A100 SXM4 80GB, NVSwitch, 8x InfiniBand HDR "
                    "200 Gb/s (MLPerf v1.1/v2.0 dgxa100[_n8]_ngc21.09/22.04_mxnet)",
        max_nodes=NO_NODE_LIMIT,
        **_hardware(SYSTEM_JSON.format(round="1.1", system="dgxa100_n8_ngc21.09_mxnet"), 8, 600,
                    8, 200, "Compute: 8x ConnectX-6 IB HDR 200Gb/Sec"),
        **_nccl("v2.11.4-1", 9.6, 28, 0.92, 142.4,
                "ceiling nChannels * perChMaxTreeBws[Ampere][N4] = 17.8 GB/s x 8 channels "
                "(assumed: one channel per adapter); v2.0 ran 2.12.10"),
        **_compute(408, CONFIG.format(round="1.1", config="config_DGXA100.sh") + ": BATCHSIZE=408",
                   3322.7, 3.263, 6198, A100_EVAL),
        **_groups(1, CONFIG.format(round="1.1", config="config_DGXA100_multi_8x8x51.sh")),
    ),
    "dgxh100": Preset(
        name="dgxh100",
        description="NVIDIA DGX H100: 8x H100 SXM5 80GB, NVSwitch, 8x InfiniBand NDR 400 Gb/s "
                    "(MLPerf v3.0 dgxh100[_n8]_ngc23.04_mxnet, v4.0 eos[_n8]_ngc24.04_mxnet)",
        max_nodes=NO_NODE_LIMIT,
        **_hardware(SYSTEM_JSON.format(round="3.0", system="dgxh100_n8_ngc23.04_mxnet"), 8, 900,
                    8, 400, "Compute: 8x ConnectX-7 IB NDR 400Gb/s"),
        **_nccl("v2.17.1-1", 9.6, 28, 0.92, 264,
                "ceiling nChannels * perChMaxTreeBws[Hopper][N4] = 33.0 GB/s x 8 channels "
                "(assumed: one channel per adapter); v4.0 ran 2.21.5 (NET ring 14.0 us)"),
        **_compute(400, CONFIG.format(round="3.0", config="config_DGXH100.sh") + ": BATCHSIZE=400",
                   7168.5, 3.263, 21500,
                   "assumed 3x the fitted training throughput at batch 400 (forward only), "
                   "rounded"),
        **_groups(1, CONFIG.format(round="3.0", config="config_DGXH100_multi_8x8x50.sh")),
    ),
}
PRESETS.update(DGX_PRESETS)


class PresetError(ValueError):
    """An unknown preset name; the message lists the known ones."""


def get_preset(name):
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")


def markdown_table(names=None):
    """The presets as a Markdown table (value, status, source) for docs/scale_model.md."""
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
