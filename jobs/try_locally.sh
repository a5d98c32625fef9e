#!/usr/bin/env bash
# bash jobs/try_locally.sh JOB.sh [options] [-- TRAINER_ARGS...]
#
# Runs a job script written by `python -m jobs.render` on this machine, before it waits in a
# cluster's queue. The script's text is not changed: what runs here is what gets submitted.
# Only its surroundings are made up:
#   - the scheduler's variables (PBS_NODEFILE, SGE_JOB_HOSTLIST or SLURM_JOB_NODELIST, job id,
#     work dir) with host files naming NODES made-up hosts;
#   - stand-ins on PATH for `module` (prints what it would load) and `scontrol`, and
#     JOB_MPIRUN=jobs/tryout/mpirun, which first lets the real Open MPI check the job's launch
#     line against those hosts (--do-not-launch) and then starts the ranks here;
#   - the job's shape scaled down (JOB_NODES, JOB_GPUS_PER_NODE), its own output dir, and
#     trainer arguments for a few quick steps on the toy data set (TRAIN_EXTRA_ARGS, appended
#     after the job's own; float, so FP16's ~100x CPU slowdown stays out: add
#     -- --set type_config=half to rehearse FP16 too);
#   - a GPU job rehearses its GPU path on CPU ranks (JOB_REHEARSE_GPU=1: the trainer's
#     --rehearse-gpu, docs/gpu.md); a CPU job runs as it is (JOB_DEVICE=cpu).
#
# Options:
#   --nodes N            made-up nodes (default: 2, or fewer if the job has fewer)
#   --gpus-per-node G    ranks per node (default: 2, or fewer if the job has fewer)
#   --check-only         keep the job's full size and only check its launch line with Open
#                        MPI (e.g. 2,176 ranks on 272 hosts); nothing is started
#   --cluster            run across the emulated cluster ($MINICLUSTER_NAME, default mc; make
#                        cluster-up) instead: the host files name its nodes, and the job's
#                        mpirun line runs unchanged (host file, --map-by) from its head node,
#                        so Open MPI places the ranks on the nodes and comm.grid=auto finds them
#   --data-dir DIR       data set for the try-out (default: data/toy; `make toy-data`)
#   --out DIR            output dir of the try-out (default: a new directory under /tmp)
#   -- ARGS...           more trainer arguments, after the defaults (e.g. --set for a config's
#                        own keys that need scaling down)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
die() { echo "try_locally: error: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: bash jobs/try_locally.sh JOB.sh [--nodes N] [--gpus-per-node G] [--check-only | --cluster] [--data-dir DIR] [--out DIR] [-- TRAINER_ARGS...]"
JOB=$1
shift
[ -f "$JOB" ] || die "$JOB does not exist"
marker=$(grep -m1 '^# jobs.render: ' "$JOB") || die "$JOB has no '# jobs.render:' line: render it with python -m jobs.render"
system=$(sed -n 's/.*system=\([a-z0-9]*\).*/\1/p' <<<"$marker")
job_nodes=$(sed -n 's/.*nodes=\([0-9]*\).*/\1/p' <<<"$marker")
job_gpus=$(sed -n 's/.*gpus_per_node=\([0-9]*\).*/\1/p' <<<"$marker")
job_device=$(sed -n 's/^DEVICE=\${JOB_DEVICE:-\([a-z]*\)}.*/\1/p' "$JOB" | head -n 1)

nodes=$((job_nodes < 2 ? job_nodes : 2))
gpus=$((job_gpus < 2 ? job_gpus : 2))
if [ "$system" = local ]; then gpus=$job_gpus; fi
check_only=0
cluster=
data_dir=$REPO/data/toy
out=
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
        --gpus-per-node) gpus=${2:?--gpus-per-node needs a number}; shift 2 ;;
        --check-only) check_only=1; shift ;;
        --cluster) cluster=${MINICLUSTER_NAME:-mc}; shift ;;
        --data-dir) data_dir=${2:?--data-dir needs a directory}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
done
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes $nodes: expected a positive number"
[[ $gpus =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node $gpus: expected a positive number"
if [ "$system" = local ] && [ "$nodes" -ne 1 ]; then die "a local job runs on one node"; fi
if [ "$check_only" = 1 ]; then nodes=$job_nodes; gpus=$job_gpus; fi
if [ -n "$cluster" ] && [ "$check_only" = 1 ]; then die "--cluster runs the job; --check-only only checks its launch line: pick one"; fi
if [ -n "$cluster" ] && [ "$system" = local ]; then die "a local job runs on one node: --cluster is for PBS, Grid Engine and Slurm scripts"; fi
np=$((nodes * gpus))

work=$(mktemp -d "${TMPDIR:-/tmp}/tryout.XXXXXX")
out=${out:-$work/run}
real_mpirun=${TRYOUT_REAL_MPIRUN:-$REPO/.venv/bin/mpirun}
[ -x "$real_mpirun" ] || die "no Open MPI at $real_mpirun: run make setup"

# The job's hosts, in the form each scheduler hands them to a job: made up, or the emulated
# cluster's nodes.
if [ -n "$cluster" ]; then
    [ -x "$REPO/.venv/bin/python" ] || die "no $REPO/.venv: run make setup"
    minicluster=(env "PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}" "$REPO/.venv/bin/python" -m tools.minicluster)
    cluster_hosts=$("${minicluster[@]}" status --hosts --name "$cluster") || die "no emulated cluster '$cluster' to run on: make cluster-up (or set MINICLUSTER_NAME)"
    have=$(wc -l <<<"$cluster_hosts")
    [ "$nodes" -le "$have" ] || die "--nodes $nodes: cluster '$cluster' has $have nodes"
    head -n "$nodes" <<<"$cluster_hosts" >"$work/hosts"
else
    for i in $(seq 1 "$nodes"); do echo "tryout-node$i"; done >"$work/hosts"
fi
# Each node's local disk: on the emulated cluster its own directory per node, seen at the same
# path on every node ($LOCAL_DIR of tools.minicluster); here one directory for all.
localdir=$work/local
if [ -n "$cluster" ]; then
    localdir=$("${minicluster[@]}" status --local-dir --name "$cluster") || die "cluster '$cluster' has no local directory"
fi
mkdir -p "$localdir"
case $system in
    abci3)   # PBS Professional: PBS_NODEFILE lists a host once per MPI process [inferred]
        awk -v g="$gpus" '{for (i = 0; i < g; i++) print}' "$work/hosts" >"$work/nodefile"
        export PBS_NODEFILE=$work/nodefile PBS_O_WORKDIR=$PWD PBS_JOBID=tryout.local \
            PBS_JOBNAME=tryout PBS_LOCALDIR=$localdir PBS_ENVIRONMENT=PBS_BATCH ;;
    abci2)   # Grid Engine on ABCI: SGE_JOB_HOSTLIST lists the hosts only
        export SGE_JOB_HOSTLIST=$work/hosts JOB_ID=tryout NHOSTS=$nodes \
            SGE_LOCALDIR=$localdir SGE_O_WORKDIR=$PWD ;;
    slurm)
        nodelist="tryout-node[1-$nodes]"   # scontrol (jobs/tryout) prints the hosts file
        if [ -n "$cluster" ]; then nodelist=$(paste -sd, "$work/hosts"); fi
        export SLURM_JOB_ID=tryout SLURM_JOB_NODELIST="$nodelist" \
            SLURM_JOB_NUM_NODES=$nodes SLURM_SUBMIT_DIR=$PWD SLURM_TMPDIR=$localdir ;;
    local) ;;
    *) die "$JOB names an unknown system '$system'" ;;
esac

if [ "$check_only" = 0 ]; then
    [ -d "$data_dir/train" ] || [ -f "$data_dir/index.json" ] || die "no data set at $data_dir (expected $data_dir/train/<class>/... or a packed set's index.json): run make toy-data, or pass --data-dir DIR"
    # A few quick steps of a narrow ResNet-50 on small crops, whatever the recipe's scale, with
    # a two-stage batch schedule (4, then 8 per rank) so batch-size control is exercised too.
    # (JSON for the stages: the arguments are split on spaces.)
    # Stage lengths in epochs of this data set: 4 updates at the small batch, 3 at the large.
    if [ -f "$data_dir/index.json" ]; then   # packed (data.prepare_imagenet): count from its index
        images=$("$REPO/.venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["splits"]["train"]["count"])' "$data_dir/index.json")
    else
        images=$(find "$data_dir/train" -type f | wc -l)
    fi
    # On the emulated cluster the trainer finds the grid from the nodes (one row per node).
    grid=${gpus}x${nodes}
    if [ -n "$cluster" ]; then grid=auto; fi
    read -r e1 e2 < <(awk -v n="$images" -v b="$((4 * np))" \
        'BEGIN { printf "%.6f %.6f\n", 4 * b / n, (4 * b + 3 * 2 * b) / n }')
    stages="[{\"until_epoch\":$e1,\"global_batch\":$((4 * np))},{\"until_epoch\":$e2,\"global_batch\":$((8 * np))}]"
    # The data set reaches the job as its DATA_DIR (JOB_DATA_DIR), so a packed set is staged.
    export JOB_DATA_DIR=$data_dir
    TRAIN_EXTRA_ARGS="--set type_config=float --set model.width=0.125 \
--set model.channel_last=false --set data.image_size=32 --set data.num_threads=1 \
--set train.global_batch=null --set batch.stages=$stages --set batch.max_local_batch=null \
--set train.epochs=$e2 --set optim.warmup_epochs=0 --set checkpoint.every_epochs=$e1 \
--set train.log_every_steps=1 --set eval.batch_size=25 --set comm.grid=${grid}"
    if [ "${#extra[@]}" -gt 0 ]; then TRAIN_EXTRA_ARGS="$TRAIN_EXTRA_ARGS ${extra[*]}"; fi
    export TRAIN_EXTRA_ARGS JOB_NODES=$nodes JOB_GPUS_PER_NODE=$gpus
fi
# CPU ranks here: a GPU job's GPU path is rehearsed (no GPU packages needed), a CPU job runs.
if [ "$job_device" = gpu ]; then export JOB_REHEARSE_GPU=1; else export JOB_DEVICE=cpu; fi
export JOB_OUTPUT_DIR=$out JOB_MPIRUN=$HERE/tryout/mpirun PATH=$HERE/tryout:$PATH \
    TRYOUT_DIR=$work TRYOUT_REAL_MPIRUN=$real_mpirun TRYOUT_CHECK_ONLY=$check_only \
    TRYOUT_CLUSTER=$cluster TRYOUT_REPO=$REPO

if [ "$check_only" = 1 ]; then
    echo "try_locally: $JOB at full size ($nodes node(s) x $gpus = $np ranks), launch line check only"
elif [ -n "$cluster" ]; then
    echo "try_locally: $JOB scaled down to $nodes emulated node(s) of cluster $cluster ($(paste -sd' ' "$work/hosts")) x $gpus = $np CPU ranks; output $out"
else
    echo "try_locally: $JOB scaled down to $nodes node(s) x $gpus = $np CPU ranks$([ "$job_device" = gpu ] && echo ", its GPU path rehearsed"); output $out"
fi
status=0
bash "$JOB" || status=$?
echo "try_locally: the job script exited with status $status (work dir $work)"
exit "$status"
