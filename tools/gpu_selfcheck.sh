#!/usr/bin/env bash
# GPU self-check (`make gpu-selfcheck`): for someone with 1 or more NVIDIA GPUs, a few minutes
# of real work that says, item by item, whether this toolkit's GPU path works on the machine.
# This project has no GPU: the GPU path has never run here, so this script is how it gets
# verified. Please send its output (and WORK_DIR's logs) with any report.
#
#   GPU=1 make setup && source .venv/bin/gpu_env.sh && make gpu-selfcheck
#   bash tools/gpu_selfcheck.sh [WORK_DIR]      (default: runs/gpu_selfcheck)
#
# On a machine without a GPU (no nnabla_ext.cuda, or no CUDA device; REHEARSE=1 forces it) it
# rehearses the GPU path on CPU ranks instead (train_resnet50.py / bench_comm.py --rehearse-gpu,
# docs/gpu.md) and reports those items as REHEARSED: checked against a double of nnabla's
# NCCL communicator, NOT verified on a GPU.
#
# Items (PASS / FAIL / SKIP, one line each; exit status 1 if any FAIL):
#   stack      nnabla-ext-cuda, cuDNN 8, NCCL, Open MPI's libmpi.so, visible GPUs
#   float      ResNet-50 (full size, 224 px, synthetic data) trains a few steps on GPU 0
#   half       the same in FP16 with dynamic loss scaling; few updates skipped
#   nccl       torus2d and native all-reduce of ResNet-50's gradients on all local GPUs
#              (tools/bench_comm.py --backend nccl --check): no wrong element; time ratio
#   dali-gpu   DALI with GPU (mixed) decoding into nnabla arrays: images/s
#   sync       a short training on all local GPUs: every rank ends with identical parameters
#   host-reads the same training read the device once per update (summary comm_calls.read)
#   host-overhead  host ms and nnabla calls per all-reduce of ResNet-50's arrays and per step
#              (tools/bench_comm.py --host-overhead, collectives that move no data; <= 5 ms)
#   init-failure   one rank more than GPUs: that rank's init() fails and the whole job ends
#              with one line instead of hanging in ncclCommInitRank
#   watchdog-env   NNABLA_MPI_WATCH_DOG_ENABLE=1 is refused with one line
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
WORK=${1:-runs/gpu_selfcheck}
PY=${PY:-.venv/bin/python}
MPIRUN=${MPIRUN:-$(dirname "$PY")/mpirun}
[ -x "$MPIRUN" ] || MPIRUN=$(command -v mpirun || echo mpirun)
ROOT_FLAG=(); [ "$(id -u)" = 0 ] && ROOT_FLAG=(--allow-run-as-root)
mkdir -p "$WORK"
FAILED=0
verdict() {   # verdict PASS|FAIL|SKIP|REHEARSED item details
    printf '%-9s %-9s %s\n' "$1" "$2" "$3"
    [ "$1" = FAIL ] && FAILED=1
    return 0
}
wrong_elements() {   # wrong_elements BENCH_JSONL: the sum of #wrong over bench_comm's rows
    "$PY" -c "import json,sys; print(sum(json.loads(l)['wrong'] or 0 for l in open(sys.argv[1])))" "$1"
}
reads_per_step() {   # reads_per_step RUN_DIR: host reads of device arrays per update
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1] + '/summary.json')); print(s['comm_calls'].get('read', 0) / max(s['steps'], 1))" "$1" 2>/dev/null
}
# Items that run the same with or without a GPU (rehearsal/'s double where no GPU takes part).
host_overhead() {
    local log=$WORK/host_overhead.log
    if "$MPIRUN" "${ROOT_FLAG[@]}" --oversubscribe -np 4 "$PY" tools/bench_comm.py --rehearse-gpu \
        --backend nccl --host-overhead --grid 2x2 --algorithms torus2d,native \
        --json "$WORK/host_overhead.jsonl" >"$log" 2>&1; then
        local line
        line=$("$PY" -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ar = {r['algorithm']: r for r in rows if r['measure'] == 'allreduce'}
worst = max(r['host_ms_per_allreduce'] for r in ar.values())
print(('PASS' if worst <= 5 else 'FAIL') + ' ' + ', '.join(f\"{a} {r['host_ms_per_allreduce']:.2f} ms / {r['nnabla_calls_per_allreduce']:g} calls / {r['buckets']} buckets\" for a, r in ar.items()) + f' per all-reduce (target <= 5 ms; load {rows[0][\"load_avg_1min\"]})')
" "$WORK/host_overhead.jsonl")
        verdict "${line%% *}" host-overhead "${line#* }"
    else
        verdict FAIL host-overhead "see $log: $(grep -m1 -i error "$log")"
    fi
}
watchdog_env() {
    local log=$WORK/watchdog_env.log
    NNABLA_MPI_WATCH_DOG_ENABLE=1 timeout 120 "$MPIRUN" "${ROOT_FLAG[@]}" --oversubscribe -np 2 \
        "$PY" tools/bench_comm.py --rehearse-gpu --backend nccl --no-resnet --max-bytes 4K \
        --rounds 1 --algorithms native >"$log" 2>&1
    if grep -q "error: NNABLA_MPI_WATCH_DOG_ENABLE=1" "$log"; then
        verdict PASS watchdog-env "NNABLA_MPI_WATCH_DOG_ENABLE=1 refused in one line"
    else
        verdict FAIL watchdog-env "not refused (see $log)"
    fi
}
init_failure() {   # init_failure RANKS VERDICT DETAIL [ENV...]: a rank's init() fails
    local log=$WORK/init_failure.log np=$1 ok=$2 detail=$3; shift 3
    env "$@" timeout 180 "$MPIRUN" "${ROOT_FLAG[@]}" --oversubscribe -np "$np" "$PY" tools/bench_comm.py \
        --backend nccl --no-resnet --max-bytes 4K --rounds 1 --algorithms native \
        $([ "$ok" = REHEARSED ] && echo --rehearse-gpu) >"$log" 2>&1
    local rc=$?
    if [ "$rc" = 124 ]; then
        verdict FAIL init-failure "the job hung (killed after 180 s; see $log)"
    elif [ "$rc" != 0 ] && grep -aq "nnabla's communicator init() failed" "$log"; then
        verdict "$ok" init-failure "$detail: the job ended (exit $rc) with: $(grep -a -m1 "init() failed" "$log" | cut -c1-140)..."
    else
        verdict FAIL init-failure "exit $rc without the one line (see $log)"
    fi
}
summary_field() {   # summary_field RUN_DIR KEY
    "$PY" -c "import json,sys; print(json.load(open(sys.argv[1] + '/summary.json')).get(sys.argv[2]))" "$1" "$2" 2>/dev/null
}

echo "gpu-selfcheck: logs in $WORK"

# --- no GPU here: rehearse the GPU path on CPU ranks ------------------------------------------
rehearse() {
    echo "gpu-selfcheck: no GPU here ($1): rehearsing the GPU path on CPU ranks instead;"
    echo "gpu-selfcheck: REHEARSED means checked against rehearsal/'s double of nnabla's NCCL communicator, NOT verified on a GPU"
    local tiny=(--config configs/cpu_demo_constant.yaml --rehearse-gpu --set data.backend=synthetic
                --set data.synthetic_train_size=320 --set data.synthetic_val_size=80
                --set data.synthetic_classes=10 --set model.num_classes=10 --set model.width=0.125
                --set data.image_size=32 --set train.global_batch=16 --set train.epochs=0.5
                --set optim.warmup_epochs=0.1 --set eval.batch_size=40 --set checkpoint.every_epochs=0
                --overwrite --param-digest)
    local half=(--set type_config=half --set model.depth=18 --set data.image_size=24
                --set train.global_batch=8 --set train.epochs=0.25 --set loss_scale.initial=1024)
    local out log
    for precision in float half; do
        out=$WORK/train_$precision
        extra=(); [ "$precision" = half ] && extra=("${half[@]}")
        if "$PY" train_resnet50.py "${tiny[@]}" "${extra[@]}" --output-dir "$out" >"$out.log" 2>&1 \
            && [ "$(summary_field "$out" status)" = completed ]; then
            verdict REHEARSED "$precision" "$(summary_field "$out" steps) steps on one CPU rank (tiny ResNet, synthetic data; CPU kernels, not CUDA's)"
        else
            verdict FAIL "$precision" "see $out.log: $(grep -m1 -i error "$out.log")"
        fi
    done
    log=$WORK/bench_nccl.log
    if "$MPIRUN" "${ROOT_FLAG[@]}" --oversubscribe -np 4 "$PY" tools/bench_comm.py --rehearse-gpu \
        --backend nccl --check --no-resnet --max-bytes 1M --rounds 1 --iter-bytes 1 \
        --algorithms torus2d,hierarchical,native --grid 2x2 --json "$WORK/bench_nccl.jsonl" >"$log" 2>&1; then
        wrong=$(wrong_elements "$WORK/bench_nccl.jsonl")
        if [ "$wrong" = 0 ]; then
            verdict REHEARSED nccl "comm's NCCL backend, 4 CPU ranks as 2x2: 0 wrong elements (no NCCL transport, no timing)"
        else
            verdict FAIL nccl "$wrong wrong elements (see $log)"
        fi
    else
        verdict FAIL nccl "see $log: $(grep -m1 -i error "$log")"
    fi
    verdict SKIP dali-gpu "cannot be rehearsed: DALI's GPU decoding needs a GPU"
    out=$WORK/train_sync
    if "$MPIRUN" "${ROOT_FLAG[@]}" --oversubscribe -np 4 "$PY" train_resnet50.py "${tiny[@]}" \
        --set comm.grid=2x2 --output-dir "$out" >"$out.log" 2>&1; then
        if [ "$(cat "$out"/param_digest.rank* | sort -u | wc -l)" = 2 ]; then
            verdict REHEARSED sync "4 CPU ranks (torus2d over the double) ended with identical parameters"
        else
            verdict FAIL sync "ranks ended with different parameters ($out/param_digest.rank*)"
        fi
    else
        verdict FAIL sync "see $out.log: $(grep -m1 -i error "$out.log")"
    fi
    if [ "$(reads_per_step "$out")" = 1.0 ]; then
        verdict REHEARSED host-reads "one host read of a device array per update (the double hides results until the sync)"
    else
        verdict FAIL host-reads "$(reads_per_step "$out") host reads per update ($out/summary.json)"
    fi
    host_overhead
    init_failure 4 REHEARSED "4 ranks on a host stated to have 2 GPUs (REHEARSE_VISIBLE_GPUS=2)" REHEARSE_VISIBLE_GPUS=2
    watchdog_env
    echo "gpu-selfcheck: rehearsal only; run make gpu-selfcheck on a machine with a GPU to verify the GPU path"
    exit "$FAILED"
}
if [ "${REHEARSE:-0}" = 1 ]; then rehearse "REHEARSE=1"; fi
if ! "$PY" -c "import nnabla_ext.cuda" >/dev/null 2>&1 && \
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('nnabla_ext.cuda') is not None)" 2>/dev/null; then
    rehearse "nnabla-ext-cuda is not installed"
fi
if "$PY" -c "import sys; from training.device import device_count; sys.exit(device_count() != 0)" >/dev/null 2>&1; then
    rehearse "nnabla-ext-cuda sees no CUDA device"
fi
# --- stack ------------------------------------------------------------------------------------
# One GPU needs nnabla-ext-cuda and cuDNN 8; several also need NCCL and Open MPI's libmpi.so.
if ! "$PY" - >"$WORK/stack.txt" 2>&1 <<'EOF'
import sys
from training.device import check_gpu_stack, device_count
problems = check_gpu_stack(multi_rank=False)
for p in problems:
    print(p)
if problems:
    sys.exit(1)
gpus = device_count()
for p in check_gpu_stack(multi_rank=True) if gpus > 1 else []:
    print(p)
print(gpus)
EOF
then
    verdict FAIL stack "$(head -1 "$WORK/stack.txt") (all: $WORK/stack.txt)"
    cat "$WORK/stack.txt"
    exit 1
fi
GPUS=$(tail -1 "$WORK/stack.txt")
if [ "${GPUS:-0}" -lt 1 ]; then verdict FAIL stack "no CUDA device visible"; exit 1; fi
if [ "$(wc -l <"$WORK/stack.txt")" -gt 1 ]; then     # multi-GPU pieces missing
    verdict FAIL stack "$GPUS GPUs, but: $(head -1 "$WORK/stack.txt") (all: $WORK/stack.txt)"
    GPUS=1     # the single-GPU items can still run
else
    verdict PASS stack "nnabla-ext-cuda, cuDNN 8$([ "$GPUS" -gt 1 ] && echo ", NCCL, libmpi.so"); $GPUS GPU(s)"
fi

# --- single-GPU training, float and half --------------------------------------------------------
SYNTH=(--config configs/resnet50_imagenet.yaml --set device=gpu --set data.backend=synthetic
       --set data.synthetic_train_size=1280 --set data.synthetic_val_size=256
       --set train.global_batch=64 --set train.epochs=1 --set optim.warmup_epochs=0.5
       --set eval.batch_size=64 --set train.log_every_steps=5 --set checkpoint.every_epochs=0
       --set optim.step_milestones=[] --overwrite)
for precision in float half; do
    out=$WORK/train_$precision
    if "$PY" train_resnet50.py "${SYNTH[@]}" --set "type_config=$precision" --output-dir "$out" \
        >"$out.log" 2>&1 && [ "$(summary_field "$out" status)" = completed ]; then
        detail="$(summary_field "$out" steps) steps, $(printf '%.0f' "$(summary_field "$out" images_per_s)") img/s (ResNet-50, 224 px, batch 64, synthetic)"
        [ "$precision" = half ] && detail="$detail, $(summary_field "$out" skipped_updates) updates skipped by loss scaling"
        verdict PASS "$precision" "$detail"
    else
        verdict FAIL "$precision" "see $out.log: $(grep -m1 -i error "$out.log")"
    fi
done

# --- NCCL all-reduce: torus2d against native on all local GPUs -----------------------------------
if [ "$GPUS" -ge 2 ]; then
    log=$WORK/bench_nccl.log
    if "$MPIRUN" "${ROOT_FLAG[@]}" -np "$GPUS" "$PY" tools/bench_comm.py --backend nccl --check \
        --resnet-only --algorithms torus2d,native --grid "${GPUS}x1" --json "$WORK/bench_nccl.jsonl" \
        >"$log" 2>&1; then
        wrong=$(wrong_elements "$WORK/bench_nccl.jsonl")
        ratio=$("$PY" -c "import json,sys; r={json.loads(l)['algorithm']: json.loads(l)['time_us'] for l in open(sys.argv[1])}; print(f\"{r['torus2d'] / r['native']:.2f}\")" "$WORK/bench_nccl.jsonl")
        if [ "$wrong" = 0 ]; then
            verdict PASS nccl "ResNet-50 gradients on $GPUS GPUs: 0 wrong; torus2d / native time = $ratio"
        else
            verdict FAIL nccl "$wrong wrong elements (see $log)"
        fi
    else
        verdict FAIL nccl "see $log: $(grep -m1 -i error "$log")"
    fi
else
    verdict SKIP nccl "needs 2 or more GPUs on this machine"
fi

# --- DALI GPU decoding ------------------------------------------------------------------------
log=$WORK/bench_dali_gpu.log
if "$PY" tools/bench_data.py --skip-train --gpu --repeats 2 >"$log" 2>&1; then
    verdict PASS dali-gpu "$(grep 'dali-gpu' "$log" | tail -1 | awk -F'|' '{print $2 "," $6 " images/s"}')"
else
    verdict FAIL dali-gpu "see $log: $(grep -m1 -i error "$log")"
fi

# --- ranks stay in sync -----------------------------------------------------------------------
if [ "$GPUS" -ge 2 ]; then
    out=$WORK/train_sync
    if "$MPIRUN" "${ROOT_FLAG[@]}" -np "$GPUS" "$PY" train_resnet50.py "${SYNTH[@]}" \
        --set type_config=half --set "train.global_batch=$((32 * GPUS))" \
        --set "comm.grid=${GPUS}x1" --param-digest --output-dir "$out" >"$out.log" 2>&1; then
        distinct=$(cat "$out"/param_digest.rank* | sort -u | wc -l)
        if [ "$distinct" = 2 ]; then   # two lines (trainable, statistics), the same on every rank
            verdict PASS sync "$GPUS ranks ended with identical parameters (torus2d over NCCL)"
        else
            verdict FAIL sync "ranks ended with different parameters ($out/param_digest.rank*)"
        fi
    else
        verdict FAIL sync "see $out.log: $(grep -m1 -i error "$out.log")"
    fi
    if [ "$(reads_per_step "$out")" = 1.0 ]; then
        verdict PASS host-reads "one host read of a device array per update"
    else
        verdict FAIL host-reads "$(reads_per_step "$out") host reads per update ($out/summary.json)"
    fi
else
    verdict SKIP sync "needs 2 or more GPUs on this machine"
    verdict SKIP host-reads "needs 2 or more GPUs on this machine"
fi
host_overhead     # the host's own work: the same measurement as without a GPU
init_failure $((GPUS + 1)) PASS "$((GPUS + 1)) ranks on $GPUS GPU(s)"
watchdog_env
exit "$FAILED"
