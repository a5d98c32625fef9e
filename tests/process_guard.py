"""The fast tier's safety net: a test that starts a process must say so with a marker.

`make test-fast` leaves out tests marked ``procs`` (and ``root``, ``train``; tests/README.md).
A new test that launches mpirun, the trainer or any other command without the marker would
slip into the fast tier and slow it down silently, so while a test is set up and run, every
way this interpreter starts a process is checked against the test's markers:

- without ``procs``, starting any process fails the test, naming the command and the marker;
- without ``root``, running a command that makes or enters network namespaces (``unshare``,
  ``nsenter``, ``tc``, ``ip netns ...``, ``ip -n NS ...``) fails it the same way.

Only this interpreter's calls are seen: what a child process does in turn (a trainer that
makes namespaces, say) is not, and a fixture's teardown may start processes freely (it runs
after whichever test of the module happens to be last). ``train`` cannot be detected and
stays the author's call.
"""
import multiprocessing.util
import os
import subprocess

NAMESPACE_TOOLS = ("unshare", "nsenter", "tc")


class UnmarkedProcess(RuntimeError):
    """Raised where an unmarked test starts a process, before the process exists."""


class Guard:
    """The markers of the test under way, and what it was refused."""

    def __init__(self):
        self.test = None            # the test being set up or run, or None between tests
        self.markers = set()
        self.violations = []        # messages for the current test

    def arm(self, test_id, markers):
        self.test, self.markers, self.violations = test_id, set(markers), []

    def disarm(self):
        self.test = None

    def check(self, argv):
        if self.test is None:
            return
        words = words_of(argv)
        shown = " ".join(words)[:200]
        if "procs" not in self.markers:
            self.refuse(f"starts a process ({shown}) but is not marked procs: "
                        "add @pytest.mark.procs (tests/README.md)")
        if "root" not in self.markers and needs_root(words):
            self.refuse(f"makes or enters network namespaces ({shown}) but is not marked "
                        "root: add @pytest.mark.root (tests/README.md)")

    def refuse(self, what):
        message = f"{self.test} {what}"
        self.violations.append(message)
        raise UnmarkedProcess(message)


def words_of(argv):
    """The command as words, also when given as one string (shell=True, os.system)."""
    if isinstance(argv, (str, bytes, os.PathLike)):
        argv = [argv]
    words = [os.fsdecode(a) for a in argv]
    return words[0].split() if len(words) == 1 else words


def needs_root(words):
    if not words:
        return False
    tool, args = os.path.basename(words[0]), words[1:]
    if tool in ("sh", "bash") and args[:1] == ["-c"]:
        return any(needs_root(part.split()) for part in args[1:2])
    return tool in NAMESPACE_TOOLS or (tool == "ip" and any(a in ("netns", "-n") for a in args))


GUARD = Guard()


def install():
    """Wrap every way a process is started from Python: subprocess (run, Popen, check_output
    ... all end in Popen._execute_child), os.system, os.fork and os.posix_spawn, and
    multiprocessing's spawn and forkserver starts."""
    def wrap(owner, name, argv_of):
        original = getattr(owner, name, None)
        if original is None:
            return

        def guarded(*args, **kwargs):
            GUARD.check(argv_of(args, kwargs))
            return original(*args, **kwargs)
        setattr(owner, name, guarded)

    wrap(subprocess.Popen, "_execute_child", lambda a, k: a[1])          # (self, args, ...)
    wrap(os, "system", lambda a, k: a[0])
    wrap(os, "fork", lambda a, k: ["(os.fork)"])
    wrap(os, "forkpty", lambda a, k: ["(os.forkpty)"])
    wrap(os, "posix_spawn", lambda a, k: a[1])
    wrap(os, "posix_spawnp", lambda a, k: a[1])
    wrap(multiprocessing.util, "spawnv_passfds", lambda a, k: a[1])
