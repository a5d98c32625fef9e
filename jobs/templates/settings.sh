set -euo pipefail

# --- what this job runs (values rendered by jobs.render) ------------------------------------
# Optional environment overrides; jobs/try_locally.sh uses them to run this same script scaled
# down on one machine, and on the cluster they are normally left unset:
#   TRAIN_EXTRA_ARGS   more trainer arguments, appended last (split on spaces), e.g.
#                      "--set train.log_every_steps=10"
#   JOB_NODES, JOB_GPUS_PER_NODE   the job's shape; must match the hosts the job was given
#   JOB_DEVICE         gpu | cpu      JOB_OUTPUT_DIR   where the run is written
#   JOB_DATA_DIR       the data set     JOB_STAGE        0: do not copy a packed set to local disk
#   JOB_REHEARSE_GPU   1: run the GPU path on CPU ranks (the trainer's --rehearse-gpu)
#   JOB_VENV           the Python environment (default REPO/.venv)
#   JOB_MPIRUN         the MPI launcher (default: see "MPI launcher" below)
NODES=${JOB_NODES:-{{nodes}}}
GPUS_PER_NODE=${JOB_GPUS_PER_NODE:-{{gpus_per_node}}}   # one rank per GPU
NP=$((NODES * GPUS_PER_NODE))
REPO={{repo}}
CONFIG={{config}}
OUTPUT_DIR=${JOB_OUTPUT_DIR:-{{output_dir}}}
DATA_DIR=${JOB_DATA_DIR:-{{data_dir}}}   # empty: the config's data.dir
# comm.grid, the 2D-torus shape "ranks per row x rows": one row per node, from the job's shape.
# Empty when the config fixes it (jobs.render checked it against the shape).
GRID={{grid}}
DEVICE=${JOB_DEVICE:-{{device}}}   # what this job trains on
CONFIG_DEVICE={{config_device}}   # what the config says; the trainer gets --set device=DEVICE if they differ
WALLTIME_S={{walltime_s}}   # the job's walltime in seconds (0: none)
STOP_MARGIN_S={{stop_margin}}   # stop the trainer this long before the walltime ends
SETS=({{sets}})
read -r -a EXTRA <<<"${TRAIN_EXTRA_ARGS:-}"

say() { echo "job: $*"; }
die() { echo "job: error: $*" >&2; exit 1; }
