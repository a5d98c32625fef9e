"""Checkpoints: everything a run needs to continue exactly, in one file, written atomically.

A checkpoint is an uncompressed ``.npz`` (a zip of ``.npy`` arrays) holding

    param/<name>                 every parameter, BN running statistics included
    state/<solver>/<param>/<key> solver state arrays (momentum buffers, ...)
    meta                         JSON: step, stream position, schedule stage, elapsed time,
                                 solver step counters, eval history, config, world size

It is written to a temporary name, fsynced and renamed, so a job killed mid-write leaves the
previous checkpoint intact. A file that still fails to load (a truncated copy, a full disk
on another system) is reported and skipped in favour of the one before it.
"""
import glob
import io
import json
import os
import re
import sys
import zipfile

import numpy as np

PATTERN = "step-*.npz"
_NAME = re.compile(r"step-(\d+)\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which and why."""


def checkpoint_path(directory, step):
    return os.path.join(directory, f"step-{step:09d}.npz")


def save(directory, step, arrays, meta, keep=3):
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able) as the checkpoint of ``step``."""
    os.makedirs(directory, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(final)}")
    payload = dict(arrays)
    payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(tmp, "wb") as f:
        np.savez(f, **payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)
    prune(directory, keep)
    return final


def load(path):
    """(arrays, meta) of a checkpoint file; CheckpointError if it is unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reading each member checks its CRC
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})")
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no metadata: not written by this trainer")
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return arrays, meta


def list_checkpoints(directory):
    """Checkpoint paths in ``directory``, oldest first (by step)."""
    paths = [p for p in glob.glob(os.path.join(directory, PATTERN)) if _NAME.search(p)]
    return sorted(paths, key=lambda p: int(_NAME.search(p).group(1)))


def load_latest(directory, warn=None):
    """The newest loadable checkpoint as (path, arrays, meta), or None if there is none.

    An unreadable newest file (truncated, corrupt) is reported through ``warn`` and the one
    before it is used: losing some steps beats refusing to resume.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
    for path in reversed(list_checkpoints(directory)):
        try:
            arrays, meta = load(path)
        except CheckpointError as e:
            warn(f"warning: {e}; trying the previous checkpoint")
            continue
        return path, arrays, meta
    return None


def prune(directory, keep):
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for path in list_checkpoints(directory)[:-keep]:
        os.remove(path)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- nnabla objects <-> arrays ---------------------------------------------------------------
def pack(params, solver_states):
    """Flatten nnabla parameters and solver states (from ``Optimizer.get_states``) to arrays.

    Returns (arrays, counters): ``counters`` holds each solver state's step count ``t``,
    which belongs in the JSON metadata.
    """
    arrays = {f"param/{name}": v.d.copy() for name, v in params.items()}
    counters = {}
    for solver, states in solver_states.items():
        for pname, st in states.items():
            counters[f"{solver}/{pname}"] = int(st.t)
            for key, var in st.pstate.items():
                arrays[f"state/{solver}/{pname}/{key}"] = var.d.copy()
    return arrays, counters


def unpack(arrays, counters, params, solver_states):
    """Write checkpoint arrays back into nnabla parameters and solver states, checking shapes.

    Returns the solver states to hand to ``Optimizer.set_states``.
    """
    expected = {f"param/{n}" for n in params}
    found = {k for k in arrays if k.startswith("param/")}
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise CheckpointError(
            "checkpoint does not match the model: "
            f"{len(missing)} parameters missing (e.g. {missing[:2]}), {len(extra)} unexpected "
            f"(e.g. {extra[:2]}); resume with the model config the run started with")
    for name, var in params.items():
        saved = arrays[f"param/{name}"]
        if saved.shape != var.shape:
            raise CheckpointError(f"checkpoint parameter {name} has shape {saved.shape}, the model "
                                  f"{var.shape}: resume with the same model config")
        var.d = saved
    for solver, states in solver_states.items():
        for pname, st in states.items():
            st.t = counters[f"{solver}/{pname}"]
            for key, var in st.pstate.items():
                var.d = arrays[f"state/{solver}/{pname}/{key}"]
    return solver_states
