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
    try:
        with open(tmp, "wb") as f:
            _write_npz(f, payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:     # a full disk or quota: the partial file goes, the older stay
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise CheckpointError(
            f"cannot write the checkpoint of step {step} in {directory} "
            f"({e.strerror or e}); the previous checkpoints are kept: free space there, then "
            "continue with --resume") from None
    _fsync_dir(directory)
    prune(directory, keep)
    _remove_orphans(directory, keep=tmp)
    return final


def _remove_orphans(directory, keep):
    """Temporary files of writes cut short (a run killed mid-checkpoint). Only one run writes
    here at a time (training/output_dir.py's lock), so any other than ours is an orphan."""
    for path in glob.glob(os.path.join(directory, ".tmp-*")):
        if path != keep:
            try:
                os.remove(path)
            except OSError:
                pass


def _write_npz(f, arrays):
    """``np.savez(f, **arrays)`` (the same stored zip of .npy members), with the zip file
    closed even when a write fails, so a full disk leaves no half-open archive behind."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, value in arrays.items():
            with z.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def load(path, required=()):
    """(arrays, meta) of a checkpoint file; CheckpointError if it is unreadable or its
    metadata lacks a ``required`` key."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reading each member checks its CRC
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})")
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no metadata: not written by this trainer")
    try:
        meta = json.loads(np.asarray(arrays.pop("meta")).tobytes().decode())
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata ({e})") from None
    missing = [k for k in required if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path} has malformed metadata (no "
                              f"{', '.join(missing)}): not written by this trainer")
    return arrays, meta


def list_checkpoints(directory):
    """Checkpoint paths in ``directory``, oldest first (by step)."""
    paths = [p for p in glob.glob(os.path.join(directory, PATTERN)) if _NAME.search(p)]
    return sorted(paths, key=lambda p: int(_NAME.search(p).group(1)))


def load_latest(directory, warn=None, required=()):
    """The newest loadable checkpoint as (path, arrays, meta), or None if there is none.

    An unreadable newest file (truncated, corrupt) is reported through ``warn`` and the one
    before it is used: losing some steps beats refusing to resume. If checkpoints exist but
    none loads (what a failing or overloaded file system shows), CheckpointError with one
    line per file: starting afresh there would overwrite the run.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
    paths, problems = list_checkpoints(directory), []
    for path in reversed(paths):
        try:
            arrays, meta = load(path, required)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        for problem in problems:
            warn(f"warning: {problem}; using an older checkpoint")
        return path, arrays, meta
    if problems:
        raise CheckpointError("\n".join(problems[::-1]) + f"\nnone of the {len(problems)} "
                              f"checkpoints in {directory} can be read, so nothing was "
                              "changed: retry when the file system is healthy, resume from a "
                              "copy (--resume FILE), or start afresh with --overwrite (the "
                              "old run is moved aside)")
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
