
# --- hosts: each node once with slots=GPUS_PER_NODE, so `--map-by ppr:G:node` puts G ranks on
# every node however often the scheduler's list repeats a host.
HOST_LIST=$(scheduler_hosts) || die "could not read the job's host list"
mapfile -t HOSTS < <(printf '%s\n' "$HOST_LIST" | awk 'NF && !seen[$1]++ {print $1}')
if [ "${#HOSTS[@]}" -ne "$NODES" ]; then
    die "the scheduler gave ${#HOSTS[@]} host(s) but this job runs $NODES node(s); render it again with --nodes ${#HOSTS[@]}"
fi
HOSTFILE=$OUTPUT_DIR/hosts-$JOB_ID.txt   # kept: which nodes each job ran on
for host in "${HOSTS[@]}"; do echo "$host slots=$GPUS_PER_NODE"; done >"$HOSTFILE"
MPI_PLACEMENT=(--map-by "ppr:$GPUS_PER_NODE:node" --hostfile "$HOSTFILE")
