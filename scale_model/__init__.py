"""The scale model: an alpha-beta prediction of data-parallel ResNet-50 at cluster scale.

    from scale_model import model, presets, fit
    model.predict_step(local_batch=32, world_size=2176, local_size=4, preset="abci2-v100")

``model``    the all-reduce (ring, torus2d, hierarchical, NCCL's tree), the step and
             time-to-train for a batch schedule; pure numpy and the standard library
``presets``  cluster hardware numbers, each with its source and how sure it is
``fit``      alpha and beta fitted on measured all-reduce times (tools/bench_comm.py --json)
``fit_cluster``  alpha and beta per tier (shared memory, rails) fitted on the emulated
             cluster's rows of some shapes, checked on held-out shapes
``mlperf``   what NVIDIA's MLPerf ResNet-50 runs did: NCCL's ring/tree as its tuner costs
             them, Horovod's gradient groups under backward, per-GPU compute by batch
``calibration``  the per-GPU compute fitted on MLPerf's small runs (issue 26), the error
             band, and the paper's runs split into compute, communication and the rest

Used by the trainer's dry run and by the command line ``python -m tools.simulate``
(tools/simulate.py); it imports nothing from the rest of the project.
"""
