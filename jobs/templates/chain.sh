#!/bin/bash
# Submits {{job_file}} {{count}} times as a chain, each job resuming from the latest checkpoint
# in {{output_dir_text}}.
# Each job waits until the one before it has ended in any state, so a job stopped at its
# walltime still hands over: {{dependency}}.
# Written by: {{command}}
#
# Usage: bash {{chain_file}} [AFTER_JOB_ID]
#   AFTER_JOB_ID  make the first job wait for an already submitted one (to extend a chain)
set -euo pipefail
JOB={{job}}
COUNT={{count}}

submit() {  # $1: the job id to wait for ('' for none); prints {{scheduler_cmd}}'s output
{{submit_body}}
}
job_id() {  # the job id in $1, the output of {{scheduler_cmd}} ({{id_format}})
{{parse_body}}
}

prev=${1:-}
ids=()
for i in $(seq 1 "$COUNT"); do
    if ! out=$(submit "$prev"); then
        echo "chain: error: submitting job $i of $COUNT failed (see above); submitted: ${ids[*]:-none}" >&2
        exit 1
    fi
    id=$(job_id "$out")
    if [ -z "$id" ]; then
        echo "chain: error: {{scheduler_cmd}} printed '$out', not a job id; submitted: ${ids[*]:-none}" >&2
        exit 1
    fi
    ids+=("$id")
    echo "chain: job $i of $COUNT: $id${prev:+ (after $prev)}"
    prev=$id
done
