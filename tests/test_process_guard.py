"""The fast tier's safety net (tests/process_guard.py): an unmarked test cannot start a process,
and only a test marked root may make network namespaces."""
import os
import subprocess

import pytest

from process_guard import GUARD, Guard, UnmarkedProcess


def test_an_unmarked_test_cannot_start_a_process():
    """This test is unmarked, so the real calls are refused before anything runs."""
    try:
        with pytest.raises(UnmarkedProcess, match="starts a process \\(true\\) but is not "
                                                  "marked procs: add @pytest.mark.procs"):
            subprocess.run(["true"])
        with pytest.raises(UnmarkedProcess, match=r"\(true\)"):
            os.system("true")
        assert len(GUARD.violations) == 2 and os.path.basename(__file__) in GUARD.violations[0]
    finally:
        GUARD.violations.clear()          # refused on purpose: the report hook would fail us


@pytest.mark.parametrize("argv,refused", [
    (["ip", "netns", "add", "t1-switch"], True),
    ("ip -n t1-node1 link set rail0 up", True),
    (["/usr/sbin/tc", "qdisc", "add"], True),
    (["unshare", "--uts", "true"], True),
    (["bash", "-c", "nsenter -t 1 -n true"], True),
    (["ip", "-j", "link", "show"], False),          # reading the root namespace needs no root
    (["mpirun", "-np", "2", "python"], False),
])
def test_namespace_commands_need_the_root_marker(argv, refused):
    guard = Guard()
    guard.arm("t", {"procs"})
    if refused:
        with pytest.raises(UnmarkedProcess, match="not marked root"):
            guard.check(argv)
    else:
        guard.check(argv)
    guard.arm("t", {"procs", "root"})
    guard.check(argv)
    assert guard.violations == []


def test_between_tests_nothing_is_refused():
    guard = Guard()
    guard.check(["mpirun"])                     # not armed: collection, teardown
    guard.arm("t", set())
    guard.disarm()
    guard.check(["unshare"])
    assert guard.violations == []
