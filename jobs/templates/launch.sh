
# --- the trainer's command line ----------------------------------------------------------------
# --resume: continue from the latest checkpoint in OUTPUT_DIR, or start fresh if there is none,
# so every job of a chain runs the same command.
CMD=("$PYTHON" "$REPO/train_resnet50.py" --config "$CONFIG" --output-dir "$OUTPUT_DIR" --resume)
if [ -n "$DATA_DIR" ]; then CMD+=(--data-dir "$DATA_DIR"); fi
if [ -n "$GRID" ]; then CMD+=(--set "comm.grid=$GRID"); fi
if [ "$DEVICE" != "$CONFIG_DEVICE" ]; then CMD+=(--set "device=$DEVICE"); fi
if [ "${JOB_REHEARSE_GPU:-0}" = 1 ]; then CMD+=(--rehearse-gpu); fi
CMD+=("${SETS[@]}" "${EXTRA[@]}")

# Environment the ranks on other nodes need (Open MPI's -x exports a variable to every rank).
EXPORTS=()
for var in PATH LD_LIBRARY_PATH PYTHONPATH OMPI_HOME $(compgen -e | grep -E '^(NCCL|UCX|NNABLA|CUDA)_' || true); do
    if [ -n "${!var+set}" ]; then EXPORTS+=(-x "$var"); fi
done
# --bind-to none: each rank's data-loading threads need more than the one core that Open MPI's
# default binding may give it.
LAUNCH=("$MPIRUN" -np "$NP" "${MPI_PLACEMENT[@]}" --bind-to none "${EXPORTS[@]}" "${CMD[@]}")

say "$JOB_ID: $NODES node(s) x $GPUS_PER_NODE rank(s) = $NP ranks${GRID:+, comm.grid $GRID}, device $DEVICE"
say "output: $OUTPUT_DIR"
say "launch: ${LAUNCH[*]}"

# --- run, and stop cleanly before the walltime ----------------------------------------------
# The trainer checkpoints and exits on SIGUSR1, and Open MPI's mpirun passes SIGUSR1 on to
# every rank (mpirun(1), "Signal Propagation"); SIGTERM would make mpirun kill the ranks after a
# few seconds instead. So a SIGTERM/SIGUSR1/SIGINT to this script becomes one SIGUSR1 to
# mpirun, and the script sends itself that signal STOP_MARGIN_S before the walltime ends,
# because not every scheduler warns in time.
# {{prelimit_note}}
STOPPING=
LAUNCHER=
stop_run() {
    if [ -n "$STOPPING" ]; then return 0; fi
    STOPPING=1
    say "$1: asking the trainer to checkpoint and stop (SIGUSR1 to mpirun)"
    if [ -n "$LAUNCHER" ]; then kill -USR1 "$LAUNCHER" 2>/dev/null || true; fi
}
trap 'stop_run SIGTERM' TERM
trap 'stop_run SIGUSR1' USR1
trap 'stop_run SIGINT' INT
STOP_AT=0
if [ "$WALLTIME_S" -gt 0 ]; then STOP_AT=$((WALLTIME_S - STOP_MARGIN_S)); fi   # in bash's SECONDS

"${LAUNCH[@]}" &
LAUNCHER=$!
if [ -n "$STOPPING" ]; then kill -USR1 "$LAUNCHER" 2>/dev/null || true; fi
while kill -0 "$LAUNCHER" 2>/dev/null; do
    if [ "$STOP_AT" -gt 0 ] && [ "$SECONDS" -ge "$STOP_AT" ]; then
        stop_run "${STOP_MARGIN_S}s before the walltime"
    fi
    sleep 1 &
    wait $! || true   # a trapped signal ends this wait at once
done
status=0
wait "$LAUNCHER" || status=$?
if [ -n "$STOPPING" ]; then
    say "the trainer stopped early (exit status $status); a chained job resumes from its checkpoint"
else
    say "mpirun exited with status $status"
fi
exit "$status"
