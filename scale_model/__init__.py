"""The scale model: an alpha-beta prediction of data-parallel ResNet-50 at cluster scale.

    from scale_model import model, presets, fit
    model.predict_step(local_batch=32, world_size=2176, local_size=4, preset="abci2-v100")

``model``    the all-reduce (ring, torus2d, hierarchical, NCCL's tree), the step and
             time-to-train for a batch schedule; pure numpy and the standard library
``presets``  cluster hardware numbers, each with its source and how sure it is
``fit``      alpha and beta fitted on measured all-reduce times (tools/bench_comm.py --json)
``fit_cluster``  alpha and beta per tier (shared memory, rails) fitted on the emulated
             cluster's rows of some shapes, checked on held-out shapes

Used by the trainer's dry run and by the command line ``python -m tools.simulate``
(tools/simulate.py); it imports nothing from the rest of the project.
"""
