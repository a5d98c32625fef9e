"""jobs/: rendered job scripts, their limits, the chain script and the local try-out.

The rendered scripts are run, not just read: under jobs/try_locally.sh (scheduler variables and
host files made up, `module` stubbed) their mpirun line is checked by the real Open MPI against
the job's hosts (--do-not-launch), and the line it was given is recorded. The chain scripts run
against stand-in qsub/sbatch executables that record their arguments and print job ids the way
the schedulers do: that tests our script against the schedulers' command-line contract.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import PYTHON, REPO

pytestmark = pytest.mark.procs

TRY = os.path.join(REPO, "jobs", "try_locally.sh")
CPU_CONFIG = os.path.join(REPO, "configs", "cpu_demo.yaml")
# cpu_demo.yaml's stages with global batches every rank count used here divides (jobs.render
# refuses a batch the job's ranks cannot split, as the trainer would at start)
FITS = ["--set", "batch.stages=[{until_epoch: 2, global_batch: 104448}, "
                 "{until_epoch: 12, global_batch: 208896}]"]


def render(*args, cwd=REPO):
    return subprocess.run([PYTHON, "-m", "jobs.render", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def render_ok(tmp_path, *args, name="job.sh", config=CPU_CONFIG):
    out = tmp_path / name
    r = render(*args, "--config", str(config), "--output-dir", str(tmp_path / "run"),
               "-o", str(out))
    assert r.returncode == 0, r.stderr
    subprocess.run(["bash", "-n", str(out)], check=True)
    return out, out.read_text()


def render_error(*args, config=CPU_CONFIG):
    r = render(*args, "--config", str(config))
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def write_config(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def directive(text, prefix):
    return [line[len(prefix):].strip() for line in text.splitlines() if line.startswith(prefix)]


def try_out(script, *args, env=None):
    """Runs jobs/try_locally.sh; returns (CompletedProcess, [argv of each mpirun call])."""
    env = dict(env or os.environ, TMPDIR=str(script.parent))   # its work dir lands in tmp_path
    r = subprocess.run(["bash", TRY, str(script), *args], capture_output=True, text=True,
                       timeout=300, env=env)
    work = re.search(r"work dir (\S+)\)", r.stdout)
    calls = []
    if work:
        for name in sorted(os.listdir(work.group(1))):
            if name.endswith(".args"):
                with open(os.path.join(work.group(1), name), "rb") as f:
                    calls.append(f.read().decode().split("\0")[:-1])
    return r, calls


def has_modules():
    return subprocess.run(["bash", "-c", "command -v module || [ -f /etc/profile.d/modules.sh ]"],
                          capture_output=True).returncode == 0


def option(argv, flag):
    return argv[argv.index(flag) + 1]


# --- directives and launch lines -------------------------------------------------------------
@pytest.mark.parametrize("nodes,service", [(1, "spot"), (2, "spot"), (128, "spot"),
                                           (272, "whole-system")])
def test_abci3_directives_follow_the_node_count(tmp_path, nodes, service):
    extra = ["--reservation", "R77.pbs1"] if service != "spot" else []
    _, text = render_ok(tmp_path, "--system", "abci3", "--nodes", str(nodes), "--walltime",
                        "2:00:00", "--group", "gx123", "--service", service, *extra, *FITS)
    pbs = directive(text, "#PBS ")
    assert f"-l select={nodes}:mpiprocs=8" in pbs
    assert "-l walltime=02:00:00" in pbs and "-P gx123" in pbs
    if service == "spot":
        assert "-q rt_HF" in pbs and not any(d.startswith("-v RTYPE") for d in pbs)
    else:   # the reservation's queue is the id before the dot (ABCI 3.0 docs)
        assert "-q R77" in pbs and "-v RTYPE=rt_HF" in pbs
    assert f"NODES=${{JOB_NODES:-{nodes}}}" in text and "GPUS_PER_NODE=${JOB_GPUS_PER_NODE:-8}" in text


def test_abci3_272_nodes_launch_2176_ranks_eight_per_node(tmp_path):
    script, _ = render_ok(tmp_path, "--system", "abci3", "--service", "whole-system",
                          "--reservation", "R1", "--nodes", "272", "--walltime", "01:00:00",
                          "--group", "gx", *FITS)
    r, calls = try_out(script, "--check-only")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Open MPI accepts the launch line" in r.stdout
    (argv,) = calls
    assert option(argv, "-np") == "2176" and option(argv, "--map-by") == "ppr:8:node"
    hosts = open(option(argv, "--hostfile")).read().splitlines()
    assert len(hosts) == 272 and all(h.endswith(" slots=8") for h in hosts)
    assert option(argv, "--set") == "comm.grid=8x272"
    assert "--resume" in argv and "-x" in argv


def test_abci2_544_nodes_launch_2176_ranks_four_per_node(tmp_path):
    script, text = render_ok(tmp_path, "--system", "abci2", "--service", "whole-system",
                             "--reservation", "4242", "--nodes", "544", "--walltime",
                             "00:30:00", "--group", "gx", *FITS)
    sge = directive(text, "#$ ")
    assert "-l rt_F=544" in sge and "-l h_rt=00:30:00" in sge
    assert "-cwd" in sge and "-j y" in sge
    assert not any(d.startswith("-g") for d in sge)   # ABCI 2.0: -g only on qsub's line
    assert "# Submit: qsub -g gx -ar 4242 " in text
    r, calls = try_out(script, "--check-only")
    assert r.returncode == 0, r.stdout + r.stderr
    (argv,) = calls
    assert option(argv, "-np") == "2176" and option(argv, "--map-by") == "ppr:4:node"
    assert len(open(option(argv, "--hostfile")).read().splitlines()) == 544
    assert option(argv, "--set") == "comm.grid=4x544"


def test_slurm_directives_and_launch(tmp_path):
    script, text = render_ok(tmp_path, "--system", "slurm", "--nodes", "3", "--gpus-per-node",
                             "4", "--walltime", "10:00:00", "--group", "acct", "--partition",
                             "gpu", "--stop-margin", "120", *FITS)
    sb = directive(text, "#SBATCH ")
    for d in ("--nodes=3", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=10:00:00",
              "--signal=B:USR1@120", "--account=acct", "--partition=gpu"):
        assert d in sb
    r, calls = try_out(script, "--check-only")
    assert r.returncode == 0, r.stdout + r.stderr
    (argv,) = calls
    assert option(argv, "-np") == "12" and option(argv, "--map-by") == "ppr:4:node"


def test_local_script_adds_root_and_oversubscribe_flags_only_when_needed(tmp_path):
    script, text = render_ok(tmp_path, "--system", "local", "--gpus-per-node", "4")
    assert not directive(text, "#PBS") and not directive(text, "#SBATCH")
    r, calls = try_out(script, "--check-only")
    assert r.returncode == 0, r.stdout + r.stderr
    (argv,) = calls
    assert option(argv, "-np") == "4" and "--hostfile" not in argv
    assert ("--allow-run-as-root" in argv) == (os.getuid() == 0)
    assert ("--oversubscribe" in argv) == (4 > os.cpu_count())


def test_grid_from_the_node_shape_unless_the_config_fixes_it(tmp_path):
    fixed = write_config(tmp_path, "comm:\n  grid: 8x2\n", "fixed.yaml")
    _, text = render_ok(tmp_path, "--system", "abci3", "--nodes", "2", "--walltime", "1:00:00",
                        "--group", "g", "--data-dir", str(tmp_path), config=fixed)
    assert 'GRID=""' in text
    auto = write_config(tmp_path, "comm:\n  grid: auto\n", "auto.yaml")
    _, text = render_ok(tmp_path, "--system", "abci3", "--nodes", "2", "--walltime", "1:00:00",
                        "--group", "g", "--data-dir", str(tmp_path), config=auto)
    assert 'GRID="${GPUS_PER_NODE}x${NODES}"' in text


def test_gpu_systems_train_on_the_gpu(tmp_path):
    says_gpu = write_config(tmp_path, "device: gpu\n", "gpu.yaml")
    _, text = render_ok(tmp_path, "--system", "abci2", "--nodes", "1", "--walltime", "1:00:00",
                        "--group", "g", "--data-dir", str(tmp_path), config=says_gpu)
    assert "DEVICE=${JOB_DEVICE:-gpu}" in text and "CONFIG_DEVICE=gpu" in text
    _, text = render_ok(tmp_path, "--system", "abci2", "--nodes", "1", "--walltime", "1:00:00",
                        "--group", "g")   # cpu_demo.yaml says nothing: --set device=gpu
    assert "DEVICE=${JOB_DEVICE:-gpu}" in text and "CONFIG_DEVICE=cpu" in text


def test_a_completed_run_ends_the_job_before_launching(tmp_path):
    script, _ = render_ok(tmp_path, "--system", "abci3", "--nodes", "2", "--walltime",
                          "1:00:00", "--group", "g")
    out = tmp_path / "tryout"
    out.mkdir()
    (out / "summary.json").write_text('{\n  "status": "completed"\n}\n')
    r, calls = try_out(script, "--check-only", "--out", str(out))
    assert r.returncode == 0 and "holds a completed run: nothing to do" in r.stdout
    assert calls == []


def test_a_host_list_that_does_not_match_the_job_stops_it(tmp_path):
    script, _ = render_ok(tmp_path, "--system", "abci3", "--nodes", "2", "--walltime",
                          "1:00:00", "--group", "g")
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(f"h{i}\n" * 8 for i in range(3)))
    env = dict(os.environ, PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(tmp_path),
               PBS_JOBID="9.pbs1", JOB_DEVICE="cpu", JOB_MPIRUN="/bin/false",
               JOB_OUTPUT_DIR=str(tmp_path / "out"))
    if not has_modules():   # the try-out's `module` stands in for the cluster's
        r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
        assert r.returncode != 0
        assert "no environment modules here (no `module` command) to load cuda/" in r.stderr
        env["PATH"] = os.path.join(REPO, "jobs", "tryout") + os.pathsep + env["PATH"]
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode != 0
    assert "the scheduler gave 3 host(s) but this job runs 2 node(s)" in r.stderr


def test_outside_a_job_the_script_says_how_to_submit_it(tmp_path):
    script, _ = render_ok(tmp_path, "--system", "abci3", "--nodes", "1", "--walltime",
                          "1:00:00", "--group", "g")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBS_")}
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "submit this script with qsub" in r.stderr


# --- limits and bad input: one line each ------------------------------------------------------
@pytest.mark.parametrize("args,expect", [
    (["--system", "abci3", "--nodes", "0", "--walltime", "1:00:00", "--group", "g"],
     "--nodes 0: a job needs at least 1 node"),
    (["--system", "abci3", "--nodes", "272", "--walltime", "1:00:00", "--group", "g"],
     "exceeds abci3 spot's limit of 128 nodes (ABCI 3.0 docs, Job Execution"),
    (["--system", "abci3", "--service", "reserved", "--reservation", "R1", "--nodes", "272",
      "--walltime", "1:00:00", "--group", "g"], "192 reserved nodes per reservation"),
    (["--system", "abci3", "--service", "whole-system", "--reservation", "R1", "--nodes",
      "767", "--walltime", "1:00:00", "--group", "g"], "766 compute nodes"),
    (["--system", "abci2", "--nodes", "544", "--walltime", "1:00:00", "--group", "g"],
     "exceeds abci2 spot's limit of 512 nodes (ABCI 2.0 docs, Job Execution"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "169:00:00", "--group", "g"],
     "--walltime 169:00:00 exceeds abci3 spot's limit of 168:00:00"),
    (["--system", "abci2", "--nodes", "1", "--walltime", "72:00:01", "--group", "g"],
     "exceeds abci2 spot's limit of 72:00:00"),
    (["--system", "abci2", "--nodes", "64", "--walltime", "72:00:00", "--group", "g"],
     "4608 node-hours exceeds abci2 spot's limit of 2304"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "12h", "--group", "g"],
     "--walltime '12h' is not HH:MM:SS"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "1:60:00", "--group", "g"],
     "is not HH:MM:SS"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "0:00:00", "--group", "g"],
     "must be longer than zero"),
    (["--system", "abci9", "--nodes", "2", "--walltime", "1:00:00"],
     "argument --system: invalid choice: 'abci9'"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "1:00:00"], "--group is required"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "1:00:00", "--group", "g",
      "--gpus-per-node", "16"], "exceeds the 8 GPUs per node of abci3"),
    (["--system", "abci3", "--service", "reserved", "--nodes", "2", "--walltime", "1:00:00",
      "--group", "g"], "pass --reservation ID"),
    (["--system", "abci3", "--service", "on-demand", "--nodes", "2", "--walltime", "1:00:00",
      "--group", "g"], "on-demand is interactive"),
    (["--system", "slurm", "--nodes", "2", "--walltime", "1:00:00"],
     "--gpus-per-node is required for slurm"),
    (["--system", "abci3", "--nodes", "2", "--group", "g"], "--walltime HH:MM:SS is required"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "1:00:00", "--group", "g",
      "--chain", "3"], "--chain K needs -o FILE"),
    (["--system", "local", "--gpus-per-node", "2", "--chain", "2", "-o", "x.sh"],
     "--chain needs a scheduler"),
    (["--system", "local", "--nodes", "2"], "a local run uses one machine"),
    (["--system", "abci3", "--nodes", "2", "--walltime", "00:04:00", "--group", "g"],
     "--stop-margin 300 must be at least 0 and shorter than the walltime"),
])
def test_bad_requests_get_one_line_errors(args, expect):
    assert expect in render_error(*args)


def test_config_errors(tmp_path):
    mismatch = write_config(tmp_path, "comm:\n  grid: 8x4\n")
    line = render_error("--system", "abci3", "--nodes", "2", "--walltime", "1:00:00",
                        "--group", "g", config=mismatch)
    assert "comm.grid=8x4" in line and "has 32 ranks but the job has 2 nodes x 8 GPUs = 16" in line
    bad = write_config(tmp_path, "comm:\n  grid: 8by4\n", "bad.yaml")
    assert "comm.grid='8by4' is not 'auto' or 'XxY'" in render_error(
        "--system", "abci3", "--nodes", "2", "--walltime", "1:00:00", "--group", "g", config=bad)
    # the trainer's own config checks run at render time, --set overrides included
    typo = render_error("--system", "abci3", "--nodes", "2", "--walltime", "1:00:00",
                        "--group", "g", "--set", "optim.base_lrr=0.2")
    assert "unknown config key 'optim.base_lrr' (did you mean 'base_lr'?)" in typo
    assert "does not exist" in render_error(
        "--system", "abci3", "--nodes", "2", "--walltime", "1:00:00", "--group", "g",
        config=tmp_path / "missing.yaml")


# --- the chain script against the schedulers' command lines ----------------------------------
FAKE = {  # what each scheduler's submit command prints for a job id
    "qsub-pbs": 'echo "$((1000 + n)).pbs1"',
    "qsub-sge": 'echo "$((2000 + n))"',
    "sbatch": 'echo "$((3000 + n));cluster1"',
}


def fake_scheduler(tmp_path, command, prints):
    """An executable that appends its argv (one line, tab-separated) to calls.txt and prints
    a job id the way the real command does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.txt"
    (bin_dir / command).write_text(
        "#!/bin/bash\n"
        f'n=$(wc -l <"{log}" 2>/dev/null || echo 0)\n'
        f'(IFS=$\'\\t\'; echo "$*") >>"{log}"\n'
        f"{prints}\n")
    (bin_dir / command).chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"), log


def run_chain(tmp_path, render_args, command, prints, *chain_args):
    script, _ = render_ok(tmp_path, *render_args, "--chain", "3")
    chain = tmp_path / "job.chain.sh"
    subprocess.run(["bash", "-n", str(chain)], check=True)
    env, log = fake_scheduler(tmp_path, command, prints)
    r = subprocess.run(["bash", str(chain), *chain_args], capture_output=True, text=True,
                       env=env, timeout=60)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return r, calls, str(script)


def test_pbs_chain_waits_for_each_previous_job(tmp_path):
    r, calls, script = run_chain(tmp_path, ["--system", "abci3", "--nodes", "2", "--walltime",
                                            "12:00:00", "--group", "g"], "qsub", FAKE["qsub-pbs"])
    assert r.returncode == 0, r.stderr
    assert calls == [[script], ["-W", "depend=afterany:1000.pbs1", script],
                     ["-W", "depend=afterany:1001.pbs1", script]]
    assert "job 3 of 3: 1002.pbs1 (after 1001.pbs1)" in r.stdout


def test_grid_engine_chain_holds_each_job_and_names_the_group(tmp_path):
    r, calls, script = run_chain(tmp_path, ["--system", "abci2", "--nodes", "2", "--walltime",
                                            "12:00:00", "--group", "gx"], "qsub", FAKE["qsub-sge"],
                                 "1999")
    assert r.returncode == 0, r.stderr
    assert calls == [["-terse", "-hold_jid", "1999", "-g", "gx", script],
                     ["-terse", "-hold_jid", "2000", "-g", "gx", script],
                     ["-terse", "-hold_jid", "2001", "-g", "gx", script]]


def test_slurm_chain_uses_afterany_dependencies(tmp_path):
    r, calls, script = run_chain(tmp_path, ["--system", "slurm", "--nodes", "2",
                                            "--gpus-per-node", "8", "--walltime", "12:00:00"],
                                 "sbatch", FAKE["sbatch"])
    assert r.returncode == 0, r.stderr
    assert calls == [["--parsable", script],
                     ["--parsable", "--dependency=afterany:3000", script],
                     ["--parsable", "--dependency=afterany:3001", script]]


def test_chain_stops_at_output_that_is_not_a_job_id(tmp_path):
    r, calls, _ = run_chain(tmp_path, ["--system", "abci3", "--nodes", "2", "--walltime",
                                       "12:00:00", "--group", "g"], "qsub",
                            'echo "qsub: Unauthorized Request"')
    assert r.returncode == 1 and len(calls) == 1
    assert "qsub printed 'qsub: Unauthorized Request', not a job id; submitted: none" in r.stderr


# --- stopping before the walltime ---------------------------------------------------------------
STAND_IN_TRAINER = '''\
"""Stands in for train_resnet50.py to test the job script's signal handling: it records its
arguments and which signal reached it, and exits cleanly on SIGUSR1 or SIGTERM."""
import os, signal, sys, time
rank = os.environ["OMPI_COMM_WORLD_RANK"]
out = sys.argv[sys.argv.index("--output-dir") + 1]
got = []
for s in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(s, lambda n, f: got.append(signal.Signals(n).name))
open(os.path.join(out, "started." + rank), "w").write(" ".join(sys.argv[1:]))
t0 = time.time()
while not got and time.time() - t0 < 60:
    time.sleep(0.05)
open(os.path.join(out, "stopped." + rank), "w").write(",".join(got) or "timeout")
'''


@pytest.fixture
def stand_in_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train_resnet50.py").write_text(STAND_IN_TRAINER)
    (repo / ".venv").symlink_to(os.path.join(REPO, ".venv"))
    return repo


def stopped(run, ranks):
    return sorted((run / f"stopped.{r}").read_text() for r in range(ranks))


def test_the_script_stops_the_trainer_before_the_walltime(tmp_path, stand_in_repo):
    script, _ = render_ok(tmp_path, "--system", "local", "--gpus-per-node", "3", "--walltime",
                          "00:00:10", "--stop-margin", "7", "--repo", str(stand_in_repo), *FITS)
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7s before the walltime: asking the trainer to checkpoint and stop" in r.stdout
    assert stopped(tmp_path / "run", 3) == ["SIGUSR1"] * 3


def test_sigterm_to_the_script_reaches_every_rank_as_sigusr1(tmp_path, stand_in_repo):
    script, _ = render_ok(tmp_path, "--system", "local", "--gpus-per-node", "2",
                          "--repo", str(stand_in_repo))
    run = tmp_path / "run"
    p = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 60
        while not all((run / f"started.{r}").exists() for r in range(2)):
            assert time.time() < deadline and p.poll() is None, "the ranks did not start"
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out + err
    assert "SIGTERM: asking the trainer to checkpoint and stop" in out
    assert stopped(run, 2) == ["SIGUSR1"] * 2
    argv = (run / "started.0").read_text().split()
    assert argv[argv.index("--output-dir") + 1] == str(run) and "--resume" in argv


def test_renderer_help_mentions_every_system():
    r = render("--help")
    assert r.returncode == 0
    for name in ("abci3", "abci2", "slurm", "local"):
        assert name in r.stdout


# --- the same script, run here -----------------------------------------------------------------
@pytest.mark.train
def test_a_rendered_abci3_job_trains_a_few_steps_with_4_ranks_here(tmp_path, toy_dir):
    """The submitted text, unchanged, on made-up hosts: 2 nodes x 2 ranks as a 2x2 torus."""
    script, _ = render_ok(tmp_path, "--system", "abci3", "--nodes", "2", "--walltime",
                          "1:00:00", "--group", "g")
    out = tmp_path / "tryout"
    r, calls = try_out(script, "--gpus-per-node", "2", "--data-dir", toy_dir,
                       "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (argv,) = calls
    assert option(argv, "-np") == "4" and option(argv, "--map-by") == "ppr:2:node"
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert lines[0]["world_size"] == 4 and lines[0]["comm_grid"] == "2x2"
    assert [r["global_batch"] for r in lines if r["event"] == "stage"] == [16, 32]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert os.listdir(out / "checkpoints")
    # a GPU job: its GPU path rehearsed on CPU ranks, not switched to device=cpu
    assert "--rehearse-gpu" in argv and lines[0]["rehearsal"] is True
    assert lines[0]["config"]["device"] == "gpu"
    assert r.stdout.count("rehearse-gpu: NOT rehearsed:") == 1
