#!/bin/bash
#PBS -P {{group}}
#PBS -q {{queue}}
{{reservation_directive}}#PBS -l select={{nodes}}:mpiprocs={{gpus_per_node}}
#PBS -l walltime={{walltime}}
#PBS -N {{job_name}}
#PBS -j oe
#PBS -S /bin/bash
#
# ResNet-50 training on ABCI 3.0 ({{service}} service): {{nodes}} node(s) x {{gpus_per_node}} H200 = {{ranks}} ranks.
# Written by: {{command}}
# Submit: {{submit}}{{chain_note}}
# jobs.render: system=abci3 nodes={{nodes}} gpus_per_node={{gpus_per_node}}
#
# From the ABCI 3.0 docs (https://docs.abci.ai/v3/en/job-execution/ and /v3/en/mpi/):
#   -P group (mandatory); -q rt_HF, a whole node with 8 GPUs (or, in a reservation, the
#   reservation's queue plus -v RTYPE=rt_HF); -l select=N:mpiprocs=G, N nodes with G MPI
#   processes each; -l walltime; -N; -j oe; cd $PBS_O_WORKDIR; source /etc/profile.d/modules.sh;
#   module load; mpirun -np N*G -map-by ppr:G:node -hostfile $PBS_NODEFILE.
# Inferred, not in ABCI's docs: -S /bin/bash (PBS Professional's qsub option; this script needs
# bash); that $PBS_NODEFILE may list a host once per MPI process (so the hosts are passed to
# mpirun once each with slots=G); that --map-by/--hostfile are the same options as the docs'
# -map-by/-hostfile (Open MPI 4.1 takes both spellings, 5.x only the double dash).
{{> settings.sh}}
# --- PBS: where we are and which hosts we got -----------------------------------------------
: "${PBS_NODEFILE:?is not set: submit this script with qsub (or try it here: bash jobs/try_locally.sh THIS_SCRIPT)}"
cd "$PBS_O_WORKDIR"
JOB_ID=$PBS_JOBID
scheduler_hosts() { cat "$PBS_NODEFILE"; }
{{module_block}}{{> environment.sh}}{{> hosts.sh}}{{> stage.sh}}{{> launch.sh}}
