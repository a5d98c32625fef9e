#!/bin/sh
# Per-rank wrapper: keeps local rank L on rail L mod K, as ABCI's nodes give each GPU pair its
# own InfiniBand adapter. Open MPI's TCP transport then uses only that rail's interface, so a
# node's ranks drive its rails in parallel (without this, ob1 stripes every pair over all
# rails). Traffic to a rank on another rail leaves on the destination's rail: the kernel
# routes by destination address.
#   python -m tools.minicluster run --rail-per-rank -- CMD...   (puts this in front of CMD)
# Reads MINICLUSTER_RAILS (the rails' subnets, comma-separated, in rail order; set by run) and
# OMPI_COMM_WORLD_LOCAL_RANK (set by mpirun); sets OMPI_MCA_btl_tcp_if_include and
# MINICLUSTER_RAIL (the rail's index, for programs that report it).
set -eu
rails=${MINICLUSTER_RAILS:?is not set: run this under python -m tools.minicluster run --rail-per-rank}
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:?is not set: run this under mpirun}
count=$(printf '%s\n' "$rails" | awk -F, '{print NF}')
MINICLUSTER_RAIL=$((local_rank % count))
OMPI_MCA_btl_tcp_if_include=$(printf '%s\n' "$rails" | cut -d, -f$((MINICLUSTER_RAIL + 1)))
export MINICLUSTER_RAIL OMPI_MCA_btl_tcp_if_include
exec "$@"
