#!/bin/bash
#$ -l rt_F={{nodes}}
#$ -l h_rt={{walltime}}
#$ -N {{job_name}}
#$ -j y
#$ -cwd
#$ -S /bin/bash
#
# ResNet-50 training on an ABCI 2.0-like V100 cluster (Grid Engine, {{service}} service):
# {{nodes}} node(s) x {{gpus_per_node}} V100 = {{ranks}} ranks. ABCI 2.0's job service ended on 2024-10-31; this
# target is for clusters built like it (the paper's 2,176 V100s were ABCI nodes of 4 GPUs each).
# Written by: {{command}}
# Submit: {{submit}}{{chain_note}}
# jobs.render: system=abci2 nodes={{nodes}} gpus_per_node={{gpus_per_node}}
#
# From the ABCI 2.0 docs (https://docs.abci.ai/en/job-execution/ and /en/mpi/): -l rt_F=N,
# N whole nodes with 4 V100 each; -l h_rt; -N; -j y; -cwd; `qsub -g group` ("the -g option
# cannot be specified in the job script"), -ar ID for a reservation; $SGE_JOB_HOSTLIST (hosts
# only); source /etc/profile.d/modules.sh; module load; mpirun -map-by ppr:N:node -hostfile.
# Inferred, not in ABCI's docs: -S /bin/bash (Grid Engine's option; this script needs bash);
# that --map-by/--hostfile are the same options as the docs' -map-by/-hostfile (Open MPI 4.1
# takes both spellings, 5.x only the double dash).
{{> settings.sh}}
# --- Grid Engine: where we are and which hosts we got ----------------------------------------
: "${SGE_JOB_HOSTLIST:?is not set: submit this script with qsub -g GROUP (or try it here: bash jobs/try_locally.sh THIS_SCRIPT)}"
JOB_ID=${JOB_ID:?is not set}
scheduler_hosts() { cat "$SGE_JOB_HOSTLIST"; }
{{module_block}}{{> environment.sh}}{{> hosts.sh}}{{> stage.sh}}{{> launch.sh}}
