"""The output directory: which path may hold a run, replacing a run without losing it, and
one run at a time.

- ``check_path`` refuses an empty or root-like ``--output-dir`` (``/``, a top-level folder,
  the home directory) before anything is written.
- ``move_aside`` is what ``--overwrite`` does: the files this trainer writes (``RUN_FILES``)
  move into ``OUTPUT_DIR/replaced-<UTC time>/``; nothing is deleted, and files the trainer
  did not write stay where they are.
- ``RunLock`` is ``OUTPUT_DIR/.lock``, created atomically and naming the holder's host and
  pid. A second run on the same directory is refused while the holder lives. A lock is stale
  when its holder is gone: on the same host (and PID namespace), when the pid no longer
  runs; from another host (a chained cluster job after a crash), when its heartbeat stops:
  a daemon thread of the holder rewrites a counter in it every ``HEARTBEAT_S``, and a lock
  whose counter stays still for ``STALE_AFTER_BEATS`` beats is stale. Counters, not file
  times, so no two hosts' clocks are compared.
"""
import datetime
import errno
import os
import platform
import threading
import time

# What this trainer writes into an output directory (docs/training.md, "Logs"); --overwrite moves these.
RUN_FILES = ("log.jsonl", "summary.json", "mlperf.log", "config.yaml", "final_params.h5",
             "checkpoints", "tb")
RUN_FILE_PREFIXES = ("param_digest.rank",)
LOCK_NAME = ".lock"
HEARTBEAT_S = 2.0
STALE_AFTER_BEATS = 3


class OutputDirError(ValueError):
    """An output directory that cannot take this run; the message says why and what to do."""


def check_path(output_dir):
    """Refuse a path that is empty or root-like: a mistyped variable must not aim a run (and
    an --overwrite) at / or $HOME."""
    if not output_dir or not output_dir.strip():
        raise OutputDirError("--output-dir is empty: name the run's directory, e.g. "
                             "--output-dir runs/demo")
    real = os.path.realpath(output_dir)
    home = os.path.realpath(os.path.expanduser("~"))
    if real == os.sep or os.path.dirname(real) == os.sep or real == home:
        raise OutputDirError(f"--output-dir {output_dir} is {real}, a root-like directory; "
                             "give the run a directory of its own, e.g. runs/demo")


def run_files(output_dir):
    """The names in ``output_dir`` that this trainer writes."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir)
                  if n in RUN_FILES or n.startswith(RUN_FILE_PREFIXES))


def move_aside(output_dir, now=None):
    """Move a previous run's files into ``OUTPUT_DIR/replaced-<time>/``; returns that path,
    or None if there was nothing to move."""
    names = run_files(output_dir)
    if not names:
        return None
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target = os.path.join(output_dir, f"replaced-{stamp}")
    suffix = 0
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(output_dir, f"replaced-{stamp}-{suffix}")
    os.makedirs(target)
    for name in names:
        os.replace(os.path.join(output_dir, name), os.path.join(target, name))
    return target


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_namespace():
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


class RunLock:
    """``OUTPUT_DIR/.lock`` for the life of this process (rank 0 holds it)."""

    def __init__(self, output_dir, say=print):
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.me = {"host": platform.node(), "pid": str(os.getpid()), "pidns": _pid_namespace()}
        self.say = say
        self._beats = 0
        self._stop = threading.Event()
        self._thread = None

    def holder(self):
        """The current lock's fields (host, pid, pidns, beat), or None if there is none."""
        try:
            with open(self.path) as f:
                return dict(part.split("=", 1) for part in f.read().split() if "=" in part)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _dead(self, holder):
        """Whether the holder is gone: at once where its pid can be asked (same host and pid
        namespace), else when its heartbeat stops for a few beats (no clocks compared)."""
        if all(holder.get(k) == self.me[k] for k in ("host", "pidns")) and \
                holder.get("pid", "").isdigit():
            return not _pid_alive(int(holder["pid"]))
        deadline = time.monotonic() + STALE_AFTER_BEATS * HEARTBEAT_S
        while time.monotonic() < deadline:
            time.sleep(HEARTBEAT_S / 2)
            now = self.holder()
            if now is None:
                return True
            if now.get("beat") != holder.get("beat"):
                return False
        return True

    def acquire(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
                if not self._dead(holder):
                    raise OutputDirError(
                        f"{os.path.dirname(self.path)} is in use by another run ({who}, since "
                        f"{holder.get('started', '?')}): wait for it to end, or choose another "
                        f"--output-dir; if that run is gone, remove {self.path}")
                self.say(f"output dir: removing the stale lock of {who} (no longer running)")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            self.started = datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            os.close(fd)
            self._write()
            self._thread = threading.Thread(target=self._beat, name="output-dir-lock",
                                            daemon=True)
            self._thread.start()
            return self
        raise OutputDirError(f"could not take the lock {self.path}: another run keeps "
                             "taking it; choose another --output-dir")

    def _write(self):
        fields = dict(self.me, started=self.started, beat=str(self._beats))
        with open(self.path, "r+") as f:
            f.write(" ".join(f"{k}={v}" for k, v in fields.items()) + "\n")
            f.truncate()

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            self._beats += 1
            try:
                self._write()
            except OSError:
                pass

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S + 1)
        holder = self.holder()
        if holder and all(holder.get(k) == self.me[k] for k in ("host", "pid", "pidns")):
            try:
                os.remove(self.path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
