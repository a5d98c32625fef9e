"""The folders are the architecture: arrows point down, never from the trainer into tools/.

comm/ knows nothing of models or data, data/ nothing of communicators, schedules/ and the scale
model import neither nnabla nor MPI, and neither training/ nor train_resnet50.py imports a
command-line tool. Checked on the source (every import statement, also inside functions).
"""
import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def imported_modules(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def sources(*patterns):
    return sorted(p for pat in patterns for p in glob.glob(os.path.join(REPO, pat)))


FORBIDDEN = [  # (files, top-level packages they must not import)
    (("train_resnet50.py", "training/*.py"), {"tools"}),
    (("comm/*.py",), {"models", "data", "training", "schedules", "tools", "nnabla_ext"}),
    (("data/*.py",), {"comm", "models", "training", "tools", "mpi4py"}),   # but see ALLOWED
    (("schedules/*.py",), {"nnabla", "mpi4py", "comm", "data", "models", "training", "tools"}),
    (("scale_model/*.py",), {"nnabla", "mpi4py", "comm", "data", "models", "training", "tools"}),
    # scale_model imports comm.plan (ALLOWED below), so plan stays pure
    (("comm/plan.py",), {"nnabla", "mpi4py", "nnabla_ext", "models", "data", "training",
                         "schedules", "tools"}),
    # the double of nnabla's communicator stands in for nnabla-ext-cuda: nothing of ours
    (("rehearsal/*.py",), {"comm", "data", "models", "training", "schedules", "tools",
                           "nnabla_ext"}),
]

# data/stage.py is an mpirun command-line tool (staging onto node-local disks), not part of the
# loaders: it may use MPI, and nothing imports it.
# The scale model prices comm/plan.py's phases (pure: numpy only), so an algorithm is written
# once; nothing else of comm/.
ALLOWED = {("data/stage.py", "mpi4py"), ("scale_model/model.py", "comm.plan")}


@pytest.mark.parametrize("patterns,forbidden", FORBIDDEN, ids=lambda v: ",".join(sorted(v))
                         if isinstance(v, set) else ",".join(v))
def test_imports_point_down(patterns, forbidden):
    files = sources(*patterns)
    assert files, f"no files match {patterns}"
    bad = [f"{os.path.relpath(f, REPO)} imports {m}" for f in files
           for m in imported_modules(f) if m.split(".")[0] in forbidden
           and (os.path.relpath(f, REPO), m.split(".")[0]) not in ALLOWED
           and (os.path.relpath(f, REPO), m) not in ALLOWED]
    assert not bad, "; ".join(bad)
