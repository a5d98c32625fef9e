
# --- data: a packed data set is copied to each node's local disk first -----------------------
# When DATA_DIR is a packed set (python -m data.prepare_imagenet: it holds index.json), one
# rank per node copies it to LOCAL_DIR (data.stage: the shared file system is read once in all,
# the nodes share the shards over MPI, a rerun copies only what is missing or wrong) and the
# trainer reads the local copy. Rendered with --no-stage, or JOB_STAGE=0, trains from DATA_DIR.
STAGE=${JOB_STAGE:-{{stage}}}
LOCAL_DIR={{local_dir}}
SHUFFLE={{shuffle}}   # data.shuffle: global (every node holds every shard) | node (its own share)
if [ "$STAGE" = 1 ] && [ -n "$DATA_DIR" ] && [ -f "$DATA_DIR/index.json" ]; then
    [ -n "$LOCAL_DIR" ] && [ -d "$LOCAL_DIR" ] || die "no node-local directory ({{local_dir_text}} is '$LOCAL_DIR') to stage $DATA_DIR into; render with --no-stage to train from it directly"
    STAGED=$LOCAL_DIR/$(basename "$DATA_DIR")
    say "staging $DATA_DIR to $STAGED on each of $NODES node(s) (data.shuffle=$SHUFFLE)"
    STAGE_LAUNCH=("$MPIRUN" -np "$NODES" --map-by ppr:1:node --hostfile "$HOSTFILE" --bind-to none
                  -x PATH -x "PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}"
                  "$PYTHON" -m data.stage "$DATA_DIR" "$STAGED" --shuffle "$SHUFFLE")
    say "stage: ${STAGE_LAUNCH[*]}"
    "${STAGE_LAUNCH[@]}" || die "staging $DATA_DIR failed (above); rerun the job (it copies only what is missing) or render with --no-stage"
    DATA_DIR=$STAGED
fi
