"""Cluster job scripts for the trainer: render, chain, and try one out on this machine.

    python -m jobs.render --system abci3 --service whole-system --nodes 272 --walltime 02:00:00 \
        --group gXXXXX --config configs/paper_224s.yaml -o job.sh
    bash jobs/try_locally.sh job.sh          # the same script, scaled down to 4 CPU ranks here

``systems.py`` holds what each system offers (GPUs per node, documented limits, with sources),
``render.py`` fills ``templates/`` and writes the chain script, ``try_locally.sh`` runs a
rendered script here with a generated host file and stand-ins for the scheduler's commands.
"""
