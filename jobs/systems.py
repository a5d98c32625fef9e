"""What each target system offers a job: GPUs per node, service classes and their limits.

Every number here is documented somewhere, and the ``source`` beside it says where, so an
error can name the limit and its origin in one line. The ABCI figures come from the ABCI
user docs (repository aistabci/abci-docs, which is docs.abci.ai): ABCI 3.0 from
``v3/en/docs/job-execution.md`` @849bba4 and ``v3/en/docs/system-overview.md``, ABCI 2.0 from
``en/docs/job-execution.md`` @0228b89 and ``en/docs/system-overview.md``.

On-demand (``qsub -I`` on ABCI 3.0, ``qrsh`` on ABCI 2.0) is interactive, so a batch script
cannot use it; only the batch services are offered here.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, Optional


class JobError(ValueError):
    """A request the renderer refuses; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Service:
    """Per-job limits of one service class (None: no documented limit)."""
    max_nodes: Optional[int]
    nodes_source: str
    max_walltime_s: Optional[int] = None
    walltime_source: str = ""
    max_node_hours: Optional[float] = None
    node_hours_source: str = ""
    needs_reservation: bool = False     # submitted into a reservation (--reservation ID)
    hint: str = ""                      # what to do when a limit is exceeded


@dataclass(frozen=True)
class System:
    name: str
    title: str
    scheduler: str                      # pbs | sge | slurm | none
    template: str                       # file under jobs/templates/
    gpus_per_node: Optional[int]        # None: the user must say (--gpus-per-node)
    gpus_source: str
    default_service: str
    services: Dict[str, Service] = field(default_factory=dict)
    modules: str = ""                   # `module load` line of the job script
    modules_source: str = ""
    needs_group: bool = False
    needs_walltime: bool = True


H = 3600
ABCI3_JOBS = "ABCI 3.0 docs, Job Execution (https://docs.abci.ai/v3/en/job-execution/)"
ABCI3_OVERVIEW = "ABCI 3.0 docs, System Overview (https://docs.abci.ai/v3/en/system-overview/)"
ABCI2_JOBS = "ABCI 2.0 docs, Job Execution (https://docs.abci.ai/en/job-execution/)"
ABCI2_OVERVIEW = "ABCI 2.0 docs, System Overview (https://docs.abci.ai/en/system-overview/)"
WHOLE_SYSTEM_HINT = ("a job larger than any documented class needs an arrangement with the "
                     "operator; render it with --service whole-system --reservation ID")

SYSTEMS = {
    "abci3": System(
        name="abci3", title="ABCI 3.0 (PBS Professional, 8x H200 per node)", scheduler="pbs",
        template="abci3.sh", gpus_per_node=8,
        gpus_source=f"{ABCI3_JOBS}: rt_HF has 8 GPUs",
        default_service="spot",
        services={
            "spot": Service(
                max_nodes=128, nodes_source=f"{ABCI3_JOBS}: Spot rt_HF 1-128 nodes",
                max_walltime_s=168 * H, walltime_source=f"{ABCI3_JOBS}: Spot 168:00:00",
                max_node_hours=21504, node_hours_source=f"{ABCI3_JOBS}: Spot 21504 node-hours",
                hint="use --service reserved (up to 192 nodes) or " + WHOLE_SYSTEM_HINT),
            "reserved": Service(
                max_nodes=192,
                nodes_source=f"{ABCI3_JOBS}: at most 192 reserved nodes per reservation",
                max_walltime_s=60 * 24 * H,
                walltime_source=f"{ABCI3_JOBS}: no elapsed-time limit, but a reservation "
                                "lasts at most 60 days",
                max_node_hours=64512,
                node_hours_source=f"{ABCI3_JOBS}: at most 64,512 node-hours per reservation",
                needs_reservation=True, hint=WHOLE_SYSTEM_HINT),
            "whole-system": Service(
                max_nodes=766, nodes_source=f"{ABCI3_OVERVIEW}: 766 compute nodes (H)",
                needs_reservation=True),
        },
        modules="cuda/12.6/12.6.1 hpcx/2.20",
        modules_source="cuda/12.6/12.6.1 is the example of the Job Execution docs; hpcx/2.20 "
                       "(Open MPI 4.1.7) from https://docs.abci.ai/v3/en/mpi/ . "
                       "nnabla-ext-cuda120 is built with CUDA 12.0; running it on the 12.6 "
                       "runtime relies on CUDA minor-version compatibility [inferred]",
        needs_group=True),
    "abci2": System(
        name="abci2",
        title="ABCI 2.0-like V100 cluster (Grid Engine, 4x V100 per node; ABCI 2.0's job "
              "service ended 2024-10-31)",
        scheduler="sge", template="abci2.sh", gpus_per_node=4,
        gpus_source=f"{ABCI2_JOBS}: rt_F has 4 GPUs",
        default_service="spot",
        services={
            "spot": Service(
                max_nodes=512, nodes_source=f"{ABCI2_JOBS}: Spot rt_F 1-512 nodes",
                max_walltime_s=72 * H, walltime_source=f"{ABCI2_JOBS}: Spot rt_F 72:00:00",
                max_node_hours=2304,
                node_hours_source=f"{ABCI2_JOBS}: Spot, compute node (V) 2304 node-hours",
                hint="use --service reserved (up to 32 nodes) or " + WHOLE_SYSTEM_HINT),
            "reserved": Service(
                max_nodes=32,
                nodes_source=f"{ABCI2_JOBS}: at most 32 compute nodes (V) per reservation",
                max_walltime_s=30 * 24 * H,
                walltime_source=f"{ABCI2_JOBS}: Reserved rt_F unlimited, but a reservation "
                                "lasts at most 30 days",
                max_node_hours=12288,
                node_hours_source=f"{ABCI2_JOBS}: at most 12,288 node-hours per reservation",
                needs_reservation=True, hint=WHOLE_SYSTEM_HINT),
            "whole-system": Service(
                max_nodes=1088, nodes_source=f"{ABCI2_OVERVIEW}: 1,088 compute nodes (V)",
                needs_reservation=True),
        },
        modules="cuda/12.0/12.0.0 hpcx/2.12",
        modules_source="CUDA 12.0.0 is listed in the ABCI 2.0 System Overview; the module "
                       "name follows the cuda/X.Y/X.Y.Z pattern of its docs [inferred]; "
                       "hpcx/2.12 from https://docs.abci.ai/en/mpi/",
        needs_group=True),
    "slurm": System(
        name="slurm", title="Slurm cluster", scheduler="slurm", template="slurm.sh",
        gpus_per_node=None, gpus_source="", default_service="default",
        services={"default": Service(
            max_nodes=None,
            nodes_source="Slurm limits are per site: see `scontrol show partition` "
                         "(MaxNodes, MaxTime)")}),
    "local": System(
        name="local", title="this machine (mpirun, no scheduler)", scheduler="none",
        template="local.sh", gpus_per_node=1, gpus_source="", default_service="default",
        services={"default": Service(
            max_nodes=1, nodes_source="a local run uses one machine",
            hint="set the number of ranks with --gpus-per-node")},
        needs_walltime=False),
}


# --- checks ----------------------------------------------------------------------------------
_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")


def parse_walltime(text):
    """'HH:MM:SS' (hours may have any number of digits) -> seconds; JobError if malformed."""
    m = _WALLTIME.match(text.strip())
    if not m:
        raise JobError(f"--walltime {text!r} is not HH:MM:SS (e.g. 12:00:00 or 1:30:00)")
    seconds = int(m.group(1)) * H + int(m.group(2)) * 60 + int(m.group(3))
    if seconds <= 0:
        raise JobError(f"--walltime {text!r} must be longer than zero")
    return seconds


def format_walltime(seconds):
    return f"{seconds // H:02d}:{seconds % H // 60:02d}:{seconds % 60:02d}"


def check_request(system, service_name, nodes, gpus_per_node, walltime_s):
    """Raise JobError unless the job fits the system's documented limits."""
    s = system.services[service_name]
    where = f"{system.name} {service_name}" if len(system.services) > 1 else system.name
    hint = f"; {s.hint}" if s.hint else ""
    if nodes < 1:
        raise JobError(f"--nodes {nodes}: a job needs at least 1 node")
    if gpus_per_node < 1:
        raise JobError(f"--gpus-per-node {gpus_per_node}: a node runs at least 1 rank")
    if system.gpus_per_node and system.scheduler != "none" and gpus_per_node > system.gpus_per_node:
        raise JobError(f"--gpus-per-node {gpus_per_node} exceeds the {system.gpus_per_node} GPUs "
                       f"per node of {system.name} ({system.gpus_source})")
    if s.max_nodes is not None and nodes > s.max_nodes:
        raise JobError(f"--nodes {nodes} exceeds {where}'s limit of {s.max_nodes} nodes "
                       f"({s.nodes_source}){hint}")
    if walltime_s is None:
        return
    if s.max_walltime_s is not None and walltime_s > s.max_walltime_s:
        raise JobError(f"--walltime {format_walltime(walltime_s)} exceeds {where}'s limit of "
                       f"{format_walltime(s.max_walltime_s)} ({s.walltime_source}); shorten it "
                       "and chain jobs with --chain K")
    node_hours = nodes * walltime_s / H
    if s.max_node_hours is not None and node_hours > s.max_node_hours:
        raise JobError(f"{nodes} nodes x {format_walltime(walltime_s)} = {node_hours:g} "
                       f"node-hours exceeds {where}'s limit of {s.max_node_hours:g} "
                       f"({s.node_hours_source}); shorten --walltime and chain jobs with "
                       "--chain K")
