#!/bin/bash
#
# ResNet-50 training on this machine: {{gpus_per_node}} rank(s) started by mpirun, no scheduler.
# Written by: {{command}}
# Run: {{submit}}   (run it again to resume from the latest checkpoint)
# jobs.render: system=local nodes=1 gpus_per_node={{gpus_per_node}}
{{> settings.sh}}
JOB_ID=local-$$
# Open MPI refuses to start as root without --allow-run-as-root, and more ranks than cores
# without --oversubscribe; both only when they apply here.
MPI_PLACEMENT=()
if [ "$(id -u)" -eq 0 ]; then MPI_PLACEMENT+=(--allow-run-as-root); fi
if [ "$NP" -gt "$(nproc)" ]; then MPI_PLACEMENT+=(--oversubscribe); fi
{{module_block}}{{> environment.sh}}{{> launch.sh}}
