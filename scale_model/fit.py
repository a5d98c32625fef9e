"""Calibrate the scale model's alpha and beta on measured all-reduce times, and check them.

Input: JSON lines as written by ``tools/bench_comm.py --json`` (one object per measurement;
other lines, such as a printed table, are skipped). Each object needs the rank count, the
algorithm, the message size in bytes and the time in microseconds; ``grid`` ("XxY" or [X, Y])
is needed for torus2d rows. Accepted key spellings are listed in RANK_KEYS etc. below.

The fit treats the machine as ONE tier (all ranks on one host, as here): every step of every
algorithm costs alpha + bytes * beta, so a row's predicted time is
    alpha * (sum of its steps) + beta * (sum of bytes each rank sends),
with the step and byte counts taken from scale_model/model.py's phases. ``native`` (the MPI
library's own Allreduce) is predicted as recursive halving/doubling (Rabenseifner:
2*ceil(log2 n) steps, 2(n-1)/n * S bytes), Open MPI's usual large-message choice; that is an
assumption about the library, so its error says as much about that guess as about the model.
The fit minimises relative error (weights 1/t), so small and large messages count alike.

One host is not a cluster. Its "links" are shared memory: all n ranks copy at once through
the same memory system, and with more ranks than cores the OS time-slices them, so the cost
of a step grows with n in a way a per-link alpha-beta cannot know. ``host_cores=C`` switches
to a shared-host reading (a heuristic, stated as such): a step of n ranks moving m bytes each
costs o * (alpha + n * m * beta) with o = max(1, n / C) (time-slicing stretches the whole
step). Without it, alpha and beta fitted at one rank count only describe that rank count.
"""
import json
import math
from dataclasses import dataclass

import numpy as np

from .model import Links, SimError, allreduce_phases, parse_grid

RANK_KEYS = ("ranks", "nranks", "n", "world_size", "np")
BYTES_KEYS = ("bytes", "size_bytes", "nbytes", "size")
TIME_KEYS = ("time_us", "avg_us", "us")
# bench_comm's "plain" rows (pack, one MPI_Allreduce, unpack) are its reference, not an
# algorithm of the model: skipped.
REFERENCE_ALGORITHMS = ("plain",)


@dataclass(frozen=True)
class Row:
    ranks: int
    algorithm: str
    bytes: float
    time_us: float
    grid: tuple = None
    line: int = 0


def _first(obj, keys, line, what):
    for k in keys:
        if k in obj and obj[k] is not None:
            return obj[k]
    raise SimError(f"line {line}: no {what} (looked for {', '.join(keys)}) in {obj}")


def json_lines(path, what_to_pass):
    """(line number, object) of each JSON line of ``path``; other lines are skipped. One-line
    SimErrors for a file that cannot be read (``what_to_pass`` says what to give instead)
    and for a line that is not valid JSON."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise SimError(f"cannot read {path}: {e.strerror}; {what_to_pass}") from None
    for i, text in enumerate(lines, 1):
        text = text.strip()
        if not text.startswith("{"):
            continue
        try:
            yield i, json.loads(text)
        except json.JSONDecodeError as e:
            raise SimError(f"{path} line {i} is not valid JSON ({e.msg}); fix or delete it")


def read_rows(path, time_key=None):
    """Rows of a bench_comm JSON-lines file; non-JSON lines are skipped.

    time_key picks the timing field (e.g. min_us); default: the first of TIME_KEYS present.
    """
    rows = []
    for i, obj in json_lines(path, "pass the file bench_comm --json wrote"):
        if obj.get("algorithm") in REFERENCE_ALGORITHMS:
            continue
        ranks = int(_first(obj, RANK_KEYS, i, "rank count"))
        size = float(_first(obj, BYTES_KEYS, i, "message size"))
        t = float(_first(obj, (time_key,) if time_key else TIME_KEYS, i,
                         "time in microseconds"))
        if ranks <= 0 or size <= 0 or not t > 0:
            raise SimError(f"{path} line {i}: ranks, bytes and time_us must be positive, "
                           f"got {ranks}, {size:g}, {t:g}")
        grid = obj.get("grid")
        rows.append(Row(ranks, str(_first(obj, ("algorithm", "algo"), i, "algorithm")), size, t,
                        parse_grid(grid if not isinstance(grid, list) else tuple(grid), ranks)
                        if grid not in (None, "", "auto") else None, i))
    if not rows:
        raise SimError(f"{path} holds no JSON measurement lines; run tools/bench_comm.py --json")
    return rows


def features(row, host_cores=None):
    """(alpha multiplier, beta multiplier) of a row: its steps and bytes on one host."""
    if row.algorithm == "native":
        steps = 2 * math.ceil(math.log2(row.ranks)) if row.ranks > 1 else 0
        nbytes = 2.0 * (row.ranks - 1) / row.ranks * row.bytes
    else:
        unit = Links(local_size=row.ranks, intra_alpha=1.0, intra_bw=1.0, inter_alpha=1.0,
                     inter_bw=1.0, adapters=1)
        phases = allreduce_phases(row.algorithm, row.bytes, row.ranks, unit, row.grid)
        steps, nbytes = sum(p.steps for p in phases), sum(p.bytes_per_rank for p in phases)
    if host_cores:
        stretch = max(1.0, row.ranks / host_cores)
        return steps * stretch, nbytes * row.ranks * stretch
    return steps, nbytes


def fit_alpha_beta(rows, host_cores=None):
    """Least relative squares for t = alpha * steps + beta * bytes, both kept >= 0."""
    if len(rows) < 2:
        raise SimError(f"the fit needs at least 2 rows, got {len(rows)}; widen the fit selection")
    x = np.array([features(r, host_cores) for r in rows], dtype=np.float64)
    t = np.array([r.time_us * 1e-6 for r in rows])
    w = 1.0 / t
    a, b = np.linalg.lstsq(x * w[:, None], t * w, rcond=None)[0]
    if a < 0 or b < 0:   # refit the remaining parameter alone
        col = 1 if a < 0 else 0
        only = float(np.sum(x[:, col] * w * w * t) / np.sum((x[:, col] * w) ** 2))
        a, b = (0.0, only) if col == 1 else (only, 0.0)
    if b <= 0:
        raise SimError("the fit found no per-byte cost (beta = 0): include larger messages")
    return float(a), float(b)


def predict_us(row, alpha, beta, host_cores=None):
    steps, nbytes = features(row, host_cores)
    return (alpha * steps + beta * nbytes) * 1e6


def calibrate(rows, fit_algorithm="ring", fit_ranks=None, min_bytes=0.0, max_bytes=math.inf,
              host_cores=None):
    """Fit on the selected rows, predict all rows; returns alpha, beta and per-row errors."""
    def selected(r):
        return (r.algorithm == fit_algorithm and (fit_ranks is None or r.ranks == fit_ranks)
                and min_bytes <= r.bytes <= max_bytes)
    fit_rows = [r for r in rows if selected(r)]
    if not fit_rows:
        known = sorted({(r.algorithm, r.ranks) for r in rows})
        raise SimError(f"no rows match the fit selection (algorithm {fit_algorithm}, ranks "
                       f"{fit_ranks or 'any'}); the file has {known}")
    if host_cores is not None and host_cores <= 0:
        raise SimError(f"host_cores={host_cores} must be a positive number of CPU cores")
    alpha, beta = fit_alpha_beta(fit_rows, host_cores)
    report = []
    for r in rows:
        pred = predict_us(r, alpha, beta, host_cores)
        report.append({"algorithm": r.algorithm, "ranks": r.ranks,
                       "grid": "x".join(map(str, r.grid)) if r.grid else None,
                       "bytes": r.bytes, "measured_us": r.time_us, "predicted_us": pred,
                       "error": (pred - r.time_us) / r.time_us, "fitted": selected(r)})
    return {"alpha_s": alpha, "beta_s_per_byte": beta, "bandwidth_GBps": 1e-9 / beta,
            "host_cores": host_cores, "rows": report, "summary": summarize(report)}


def summarize(report):
    """Per algorithm and held-out/fitted: rows, median and max |error|, share within 25%."""
    out = []
    for key in sorted({(r["algorithm"], r["fitted"]) for r in report}):
        errs = np.abs([r["error"] for r in report if (r["algorithm"], r["fitted"]) == key])
        out.append({"algorithm": key[0], "fitted": key[1], "rows": len(errs),
                    "median_abs_error": float(np.median(errs)),
                    "max_abs_error": float(errs.max()),
                    "within_25pct": float(np.mean(errs <= 0.25))})
    return out
