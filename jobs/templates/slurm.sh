#!/bin/bash
#SBATCH --job-name={{job_name}}
#SBATCH --nodes={{nodes}}
#SBATCH --ntasks-per-node={{gpus_per_node}}
#SBATCH --gpus-per-node={{gpus_per_node}}
#SBATCH --time={{walltime}}
#SBATCH --exclusive
#SBATCH --signal=B:USR1@{{stop_margin}}
{{slurm_extra}}#
# ResNet-50 training with Slurm: {{nodes}} node(s) x {{gpus_per_node}} GPU(s) = {{ranks}} ranks.
# Written by: {{command}}
# Submit: {{submit}}{{chain_note}}
# jobs.render: system=slurm nodes={{nodes}} gpus_per_node={{gpus_per_node}}
#
# The ranks are started with mpirun on the allocation's hosts (`scontrol show hostnames`)
# rather than `srun --mpi=pmix`: that works with any Open MPI, including the PyPI wheel, whether
# or not it was built with Slurm/PMIx support. --signal=B:USR1@S asks Slurm to send this batch
# shell SIGUSR1 S seconds before the time limit (sbatch(1)).
{{> settings.sh}}
# --- Slurm: which hosts we got ------------------------------------------------------------------
: "${SLURM_JOB_NODELIST:?is not set: submit this script with sbatch (or try it here: bash jobs/try_locally.sh THIS_SCRIPT)}"
JOB_ID=${SLURM_JOB_ID:?is not set}
scheduler_hosts() { scontrol show hostnames "$SLURM_JOB_NODELIST"; }
{{module_block}}{{> environment.sh}}{{> hosts.sh}}{{> stage.sh}}{{> launch.sh}}
