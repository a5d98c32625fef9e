"""Calibrate the scale model's tiers on the emulated cluster (tools/minicluster), and check them.

Input: JSON lines of tools/bench_comm.py --json run across the emulated nodes; besides
bench_comm's fields (ranks, grid, algorithm, message, bytes, time_us, bucket_mb) each row
names its cluster: nodes, ranks_per_node, rails, rail_per_rank, rate_mbit (the tbf rate of
every rail), coll and component (the Open MPI coll component of native/plain; may be null).
A *shape* is nodes x ranks per node on some rails; the fit uses the rows of some shapes and
predicts the others (held out).

The tiers, as model.Links holds them:
    intra   shared memory between one node's ranks: intra_alpha (s per step), intra_bw
            (bytes/s per rank)
    inter   one rail, a veth pair shaped by tbf: inter_alpha, inter_bw per rail; fitted as
            a multiple of the tbf rate (inter_bw = rate / inter_beta_rel), so rows recorded at
            different rates share one parameter
    call    call_latency: fixed cost of each library call (one per phase of a bucket)
Rails: with rail_per_rank, local rank L talks on rail L mod K only (traffic to a rank goes out
on the destination's rail): adapters = K. Without it Open MPI's tcp btl stripes one pair's
traffic over every rail, so a node is one adapter of K times a rail's bandwidth (any one flow
can use all rails; concurrent flows share them).
Buckets: comm/ cuts a message into buckets of bucket_mb (plan.bucket_layout) and runs a whole
all-reduce per bucket; ``plain`` is one call on the packed buffer. Packing and the reductions'
additions are not modelled (memory copies at GB/s next to rails at tens of MB/s).
Library rows (``native``, ``plain``: Open MPI's own MPI_Allreduce) are not alpha-beta rings:
they are predicted as the model's closest algorithm by component (han: reduce in the node,
all-reduce among node leaders, broadcast = hierarchical; anything else: ring, a guess at
coll/tuned's large-message choice), shown, and by default neither fitted nor counted in the
targets.

The fit. model.allreduce_time is piecewise linear in p = (intra_alpha, 1/intra_bw, inter_alpha,
inter_beta_rel, call_latency): linear on each side of the max(inter step, intra step) of a
ring step that crosses nodes. A row's features are the slopes of the model at the current
estimate; the parameters minimise the squared relative error under p >= 0 (exact NNLS: five
parameters, every support tried); repeat until no row changes side. Predictions are
model.allreduce_time itself with the fitted Links, so fit and model cannot disagree.

CPU: the emulated nodes share the host's cores and ranks busy-poll, so whatever the rows' rank
count does to the host (time-slicing) is inside the fitted values, most of all the intra tier's.
Shapes with the same total rank count share that; the table shows each shape's ranks.
Pure: numpy and the standard library.
"""
import itertools
import math
from dataclasses import dataclass

import numpy as np

from .fit import json_lines
from .model import Links, SimError, allreduce_time, parse_grid

FIELDS = ("ranks", "grid", "algorithm", "message", "bytes", "time_us", "bucket_mb", "nodes",
          "ranks_per_node", "rails", "rail_per_rank", "rate_mbit", "coll")
MODEL_ALGORITHMS = ("ring", "torus2d", "hierarchical")       # comm/'s, the model's own
LIBRARY_ALGORITHMS = ("native", "plain")                     # Open MPI's MPI_Allreduce
# What the fit uses and the targets count: comm/'s own rings (every step a Sendrecv or a row
# collective the model counts one by one) at the sizes gradients travel in (comm/'s 4 MB
# buckets). hierarchical's leader phase is Open MPI's MPI_Allreduce, not the model's ring; its
# rows are shown. Smaller messages are shown, not counted: tbf lets a burst of 256 KB per link
# pass unshaped, so a per-rank chunk under about a MB sees more than the link's rate, and a
# step of a small message is the shared cores' scheduling of busy-polling ranks (0.2-0.35 ms
# per ring step at 4 KiB against a 5 us 1-byte latency between the namespaces).
COUNTED_ALGORITHMS = ("ring", "torus2d")
MIN_COUNTED_BYTES = 4 * 2 ** 20
PARAMETERS = ("intra_alpha_s", "intra_beta_s_per_byte", "inter_alpha_s", "inter_beta_rel",
              "call_latency_s")
WIRE_ITEMSIZE = {"float32": 4, "float16": 2}
DEFAULT_FIT_SHAPES = "4x2:2"
TARGET_MEDIAN, TARGET_MAX = 0.20, 0.40       # issue 15: held-out |error|
# Where the fit starts (only which side of each max() a row is on depends on it): a GB/s of
# shared memory per rank, the tbf rate itself, tens of microseconds per step and call.
START = np.array([20e-6, 1e-9, 100e-6, 1.0, 20e-6])


@dataclass(frozen=True)
class Shape:
    nodes: int
    ranks_per_node: int
    rails: int
    rail_per_rank: bool

    @property
    def ranks(self):
        return self.nodes * self.ranks_per_node

    def label(self):
        return f"{self.nodes}x{self.ranks_per_node}"

    def rails_label(self):
        if self.rails == 1:
            return "1"
        return f"{self.rails} {'per rank' if self.rail_per_rank else 'striped'}"


@dataclass(frozen=True)
class ShapeSpec:
    """NxG[:K[:rpr|striped]]: N nodes x G ranks per node, optionally on K rails, optionally
    only rail-per-rank (rpr) or only striped rows."""
    nodes: int
    ranks_per_node: int
    rails: int = None
    rail_per_rank: bool = None
    text: str = ""

    def matches(self, s):
        return (s.nodes == self.nodes and s.ranks_per_node == self.ranks_per_node
                and self.rails in (None, s.rails)
                and self.rail_per_rank in (None, s.rail_per_rank))


def parse_shapes(text):
    """'4x2:2,8x1' -> [ShapeSpec, ...]."""
    specs = []
    for part in (p.strip() for p in str(text).split(",")):
        fields = part.split(":")
        nxg = fields[0].lower().split("x")
        bad = (len(fields) > 3 or len(nxg) != 2 or not all(v.isdigit() and int(v) > 0 for v in nxg)
               or (len(fields) > 1 and not (fields[1].isdigit() and int(fields[1]) > 0))
               or (len(fields) > 2 and fields[2] not in ("rpr", "striped")))
        if bad:
            raise SimError(f"shape {part!r} is not NODESxRANKS[:RAILS[:rpr|striped]] "
                           "(e.g. 4x2:2 or 4x2:2:rpr)")
        specs.append(ShapeSpec(int(nxg[0]), int(nxg[1]),
                               int(fields[1]) if len(fields) > 1 else None,
                               {"rpr": True, "striped": False}.get(fields[2])
                               if len(fields) > 2 else None, part))
    return specs


@dataclass(frozen=True)
class ClusterRow:
    line: int
    shape: Shape
    algorithm: str
    message: str
    bytes: float
    time_us: float
    grid: tuple
    bucket_mb: float
    rate_mbit: float
    coll: str
    component: str = None
    wire_itemsize: int = 4
    rounds_us: tuple = ()

    @property
    def ranks(self):
        return self.shape.ranks

    def model_algorithm(self):
        """(the model's algorithm for this row, how it was chosen: '' for comm/'s own)."""
        if self.algorithm in MODEL_ALGORITHMS:
            return self.algorithm, ""
        if (self.component or "").lower() == "han":
            return "hierarchical", "han as hierarchical"
        return "ring", f"{self.component or 'unknown component'} as ring"


def read_cluster_rows(path):
    """Rows of a cluster benchmark's JSON lines; non-JSON lines (tables, comments) skipped."""
    rows = [_row(obj, f"{path} line {i}", i) for i, obj in json_lines(
        path, "pass the JSON lines of tools/bench_comm.py --json run on the emulated cluster")]
    if not rows:
        raise SimError(f"{path} holds no JSON rows; record the cluster benchmark with --json")
    return rows


def _row(obj, where, line):
    missing = [k for k in FIELDS if obj.get(k) is None]
    if missing:
        raise SimError(f"{where}: no {', '.join(missing)}; cluster rows need {', '.join(FIELDS)} "
                       "(bench_comm --json on the emulated cluster writes them)")
    try:
        shape = Shape(int(obj["nodes"]), int(obj["ranks_per_node"]), int(obj["rails"]),
                      bool(obj["rail_per_rank"]))
        size, t, rate = float(obj["bytes"]), float(obj["time_us"]), float(obj["rate_mbit"])
        bucket = float(obj["bucket_mb"])
    except (TypeError, ValueError) as e:
        raise SimError(f"{where}: a field is not a number ({e}); fix the row")
    if min(shape.nodes, shape.ranks_per_node, shape.rails) <= 0 or \
            not min(size, t, rate, bucket) > 0:
        raise SimError(f"{where}: nodes, ranks_per_node, rails, bytes, time_us, rate_mbit and "
                       "bucket_mb must be positive")
    if int(obj["ranks"]) != shape.ranks:
        raise SimError(f"{where}: ranks={obj['ranks']} but nodes x ranks_per_node = "
                       f"{shape.nodes} x {shape.ranks_per_node}; fix the row")
    algorithm = str(obj["algorithm"])
    if algorithm not in MODEL_ALGORITHMS + LIBRARY_ALGORITHMS:
        raise SimError(f"{where}: unknown algorithm {algorithm!r}; cluster rows are one of "
                       f"{', '.join(MODEL_ALGORITHMS + LIBRARY_ALGORITHMS)}")
    grid = obj["grid"]
    grid = parse_grid(tuple(grid) if isinstance(grid, list) else grid, shape.ranks)
    if algorithm == "hierarchical" and grid != (shape.ranks_per_node, shape.nodes):
        raise SimError(f"{where}: hierarchical on grid {grid[0]}x{grid[1]}, but the model's "
                       f"reduces per node ({shape.ranks_per_node}x{shape.nodes}); "
                       "record hierarchical with comm.grid=auto")
    wire = str(obj.get("wire_dtype") or "float32") if algorithm != "plain" else "float32"
    if wire not in WIRE_ITEMSIZE:
        raise SimError(f"{where}: wire_dtype {wire!r} is not float32 or float16")
    return ClusterRow(line, shape, algorithm, str(obj["message"]), size, t, grid, bucket, rate,
                      str(obj["coll"]), obj.get("component"), WIRE_ITEMSIZE[wire],
                      tuple(float(x) for x in obj.get("time_us_rounds") or ()))


# --- the model of one row ---------------------------------------------------------------------
def links(row, p):
    """model.Links of a row's cluster at parameters p (see PARAMETERS)."""
    intra_alpha, intra_beta, inter_alpha, inter_beta_rel, call = (float(v) for v in p)
    rail_bw = row.rate_mbit * 1e6 / 8 / inter_beta_rel if inter_beta_rel > 0 else math.inf
    striped = not row.shape.rail_per_rank
    return Links(local_size=row.shape.ranks_per_node, intra_alpha=intra_alpha,
                 intra_bw=1.0 / intra_beta if intra_beta > 0 else math.inf,
                 inter_alpha=inter_alpha,
                 inter_bw=rail_bw * row.shape.rails if striped else rail_bw,
                 adapters=1 if striped else row.shape.rails, call_latency=call)


def buckets(row):
    """[(bytes of one bucket, how many)]: comm/plan.bucket_layout's cut of the message."""
    if row.algorithm == "plain":
        return [(row.bytes, 1)]
    x, _ = row.grid
    multiple = {"torus2d": x, "ring": row.ranks}.get(row.algorithm, 1)
    size = row.wire_itemsize
    elements = int(round(row.bytes / 4))       # bench_comm's arrays are float32
    cap = max(multiple, int(row.bucket_mb * 2 ** 20) // size // multiple * multiple)
    full, rest = divmod(elements, cap)
    out = [(cap * size, full)] if full else []
    if rest:
        out.append((-(-rest // multiple) * multiple * size, 1))
    return out


def predict_seconds(row, p):
    """The model's time of one row's all-reduce at parameters p."""
    algorithm, _ = row.model_algorithm()
    lk = links(row, p)
    return sum(count * allreduce_time(algorithm, nbytes, row.ranks, lk, row.grid)
               for nbytes, count in buckets(row))


def features(row, p):
    """Slopes of predict_seconds in each parameter at p: the row's linear piece there.
    (The model is piecewise linear, so a small step gives the slope exactly, off the kinks.)"""
    base = predict_seconds(row, p)
    out = np.empty(len(PARAMETERS))
    for j in range(len(PARAMETERS)):
        h = 1e-6 * max(abs(p[j]), START[j])
        q = np.array(p, dtype=np.float64)
        q[j] += h
        out[j] = (predict_seconds(row, q) - base) / h
    return out


def nnls(a, b):
    """min |a x - b| with x >= 0, exactly: the best feasible least-squares fit over every
    support (fine for five parameters; numpy has no NNLS and scipy is not a dependency)."""
    n = a.shape[1]
    best, best_res = np.zeros(n), float(np.sum(b ** 2))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            x_sub = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
            if np.any(x_sub < 0):
                continue
            res = float(np.sum((a[:, cols] @ x_sub - b) ** 2))
            if res < best_res * (1 - 1e-12):
                best, best_res = np.zeros(n), res
                best[list(cols)] = x_sub
    return best


def fit_tiers(rows, start=START, rounds=30):
    """Parameters minimising the squared relative error of the rows, all kept >= 0."""
    if len(rows) < len(PARAMETERS):
        raise SimError(f"the fit needs at least {len(PARAMETERS)} rows, got {len(rows)}; "
                       "widen --fit-shapes")
    t = np.array([r.time_us * 1e-6 for r in rows])
    p, best, best_err = np.array(start, dtype=np.float64), None, math.inf
    for _ in range(rounds):
        x = np.array([features(r, p) for r in rows])
        p_new = nnls(x / t[:, None], np.ones(len(rows)))
        err = float(np.sum((np.array([predict_seconds(r, p_new) for r in rows]) / t - 1) ** 2))
        if err < best_err:
            best, best_err = p_new, err
        x_new = np.array([features(r, p_new) for r in rows])
        p = p_new
        if np.allclose(x_new, x, rtol=1e-6, atol=0):     # no row changed side: converged
            break
    if best[1] <= 0 and best[3] <= 0:
        raise SimError("the fit found no per-byte cost in either tier: include large messages")
    return best


def tier_values(p, rows=()):
    """The fitted parameters in the units people read (us, MB/s)."""
    intra_alpha, intra_beta, inter_alpha, inter_beta_rel, call = (float(v) for v in p)
    rates = sorted({r.rate_mbit for r in rows})
    return {"intra_alpha_us": intra_alpha * 1e6,
            "intra_MBps": 1e-6 / intra_beta if intra_beta > 0 else math.inf,
            "inter_alpha_us": inter_alpha * 1e6,
            "inter_rate_fraction": 1 / inter_beta_rel if inter_beta_rel > 0 else math.inf,
            "inter_MBps_per_rail": {f"{rate:g}": rate / 8 / inter_beta_rel
                                    if inter_beta_rel > 0 else math.inf for rate in rates},
            "call_latency_us": call * 1e6}


# --- fit and check ----------------------------------------------------------------------------
def check_algorithms(algorithms):
    unknown = [a for a in algorithms if a not in MODEL_ALGORITHMS + LIBRARY_ALGORITHMS]
    if unknown or not algorithms:
        raise SimError(f"fit algorithms {', '.join(unknown) or '(none)'}: choose from "
                       f"{', '.join(MODEL_ALGORITHMS + LIBRARY_ALGORITHMS)}")


def calibrate_cluster(rows, fit_shapes=DEFAULT_FIT_SHAPES, fit_algorithms=COUNTED_ALGORITHMS,
                      min_bytes=MIN_COUNTED_BYTES):
    """Fit on the rows of fit_shapes (fit_algorithms, messages of at least min_bytes), predict
    every row; the targets count held-out rows of COUNTED_ALGORITHMS from min_bytes up."""
    specs = parse_shapes(fit_shapes) if isinstance(fit_shapes, str) else list(fit_shapes)
    check_algorithms(fit_algorithms)

    def in_fit_shape(r):
        return any(s.matches(r.shape) for s in specs)
    fit_rows = [r for r in rows if in_fit_shape(r) and r.algorithm in fit_algorithms
                and r.bytes >= min_bytes]
    if not fit_rows:
        have = sorted({(r.shape.label(), r.shape.rails_label()) for r in rows})
        raise SimError(f"no rows of the fit shapes {','.join(s.text for s in specs)} "
                       f"(algorithms {','.join(fit_algorithms)}); the file has "
                       + "; ".join(f"{a} on {b} rails" for a, b in have)
                       + " (pass --fit-shapes)")
    held = [r for r in rows if not in_fit_shape(r)]
    if not held:
        raise SimError("every row is of a fit shape, so nothing is held out; fit fewer shapes")
    p = fit_tiers(fit_rows)
    fitted = {id(r) for r in fit_rows}
    report = []
    for r in rows:
        pred = predict_seconds(r, p) * 1e6
        rounds = np.array(r.rounds_us) if r.rounds_us else np.array([r.time_us])
        report.append({
            "line": r.line, "shape": r.shape.label(), "ranks": r.ranks,
            "rails": r.shape.rails_label(), "algorithm": r.algorithm,
            "modelled_as": r.model_algorithm()[1], "coll": r.coll, "component": r.component,
            "message": r.message, "bytes": r.bytes, "measured_us": r.time_us,
            "predicted_us": pred, "error": (pred - r.time_us) / r.time_us,
            "rounds_spread": float((rounds.max() - rounds.min()) / r.time_us),
            "set": ("fit" if id(r) in fitted else "fit shape" if in_fit_shape(r) else "held out"),
            "counted": r.algorithm in COUNTED_ALGORITHMS and r.bytes >= min_bytes})
    return {"parameters": dict(zip(PARAMETERS, map(float, p))),
            "tiers": tier_values(p, rows), "fit_shapes": [s.text for s in specs],
            "fit_algorithms": list(fit_algorithms), "min_bytes": min_bytes, "rows": report,
            "summary": summarize(report, min_bytes)}


def summarize(report, min_bytes=MIN_COUNTED_BYTES):
    """|error| per (set, shape, rails) of comm/'s algorithms; library rows apart; the verdict."""
    def stats(errs):
        errs = np.abs(errs)
        return {"rows": len(errs), "median_abs_error": float(np.median(errs)),
                "max_abs_error": float(errs.max())}
    groups = []
    order = {"fit": 0, "fit shape": 1, "held out": 2}
    for key in sorted({(x["set"], x["shape"], x["rails"]) for x in report},
                      key=lambda k: (order[k[0]],) + k[1:]):
        errs = [x["error"] for x in report if x.get("counted", x["algorithm"] in MODEL_ALGORITHMS)
                and (x["set"], x["shape"], x["rails"]) == key]
        if errs:
            groups.append({"set": key[0], "shape": key[1], "rails": key[2], **stats(errs)})
    held = [x["error"] for x in report
            if x["set"] == "held out" and x.get("counted", x["algorithm"] in MODEL_ALGORITHMS)]
    held_all = [x["error"] for x in report
                if x["set"] == "held out" and x["algorithm"] in MODEL_ALGORITHMS]
    by_algorithm = {a: stats([x["error"] for x in report
                              if x["set"] == "held out" and x["algorithm"] == a])
                    for a in MODEL_ALGORITHMS + LIBRARY_ALGORITHMS
                    if any(x["set"] == "held out" and x["algorithm"] == a for x in report)}
    by_algorithm_large = {a: stats([x["error"] for x in report if x["set"] == "held out"
                                    and x["algorithm"] == a and x["bytes"] >= min_bytes])
                          for a in MODEL_ALGORITHMS + LIBRARY_ALGORITHMS
                          if any(x["set"] == "held out" and x["algorithm"] == a
                                 and x["bytes"] >= min_bytes for x in report)}
    library = [x["error"] for x in report if x["algorithm"] in LIBRARY_ALGORITHMS]
    out = {"groups": groups, "held_out": stats(held) if held else None,
           "held_out_every_size_and_comm_algorithm": stats(held_all) if held_all else None,
           "held_out_by_algorithm": by_algorithm,
           "held_out_by_algorithm_from_min_bytes": by_algorithm_large,
           "library": stats(library) if library else None,
           "target": {"median": TARGET_MEDIAN, "max": TARGET_MAX}}
    if held:
        h = out["held_out"]
        out["meets_target"] = bool(h["median_abs_error"] <= TARGET_MEDIAN
                                   and h["max_abs_error"] <= TARGET_MAX)
    return out


def _size(nbytes):
    for unit, scale in (("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}" if nbytes % scale == 0 else \
                f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:g} B"


def markdown(result, command=None):
    """The calibration as Markdown: tier values, per-row table, per-shape summary, verdict."""
    t, s = result["tiers"], result["summary"]
    rails = ", ".join(f"{v:.2f} MB/s at {k} Mbit/s" for k, v in t["inter_MBps_per_rail"].items())
    lines = []
    if command:
        lines += [f"`{command}`", ""]
    small = _size(result["min_bytes"])
    lines += [f"Fitted on shapes {', '.join(result['fit_shapes'])} "
              f"({', '.join(result['fit_algorithms'])} rows of {small} and more):", "",
              "| tier | alpha (us per step) | bandwidth |", "| --- | --- | --- |",
              f"| intra (shared memory, per rank) | {t['intra_alpha_us']:.1f} | "
              f"{t['intra_MBps']:.0f} MB/s |",
              f"| inter (one rail) | {t['inter_alpha_us']:.1f} | {rails} "
              f"({t['inter_rate_fraction']:.0%} of the tbf rate) |",
              f"| call latency (per phase and bucket) | {t['call_latency_us']:.1f} | |", "",
              "| set | shape | ranks | rails | algorithm | message | measured ms | "
              "predicted ms | error | counted |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {"fit": 0, "fit shape": 1, "held out": 2}
    for x in sorted(result["rows"], key=lambda x: (order[x["set"]], x["shape"], x["rails"],
                                                   x["algorithm"], x["coll"], x["bytes"])):
        algo = x["algorithm"] + (f" ({x['modelled_as']}, coll {x['coll']})"
                                 if x["modelled_as"] else "")
        msg = "ResNet-50 grads" if x["message"] == "resnet50" else _size(x["bytes"])
        lines.append(f"| {x['set']} | {x['shape']} | {x['ranks']} | {x['rails']} | {algo} | "
                     f"{msg} | {x['measured_us'] / 1e3:.2f} | {x['predicted_us'] / 1e3:.2f} | "
                     f"{x['error'] * 100:+.0f}% | {'yes' if x.get('counted') else ''} |")
    lines += ["", f"|error| of the counted rows ({', '.join(COUNTED_ALGORITHMS)}, {small} and "
              "more):", "",
              "| set | shape | rails | rows | median | max |", "| --- | --- | --- | --- | --- | --- |"]
    for g in s["groups"]:
        lines.append(f"| {g['set']} | {g['shape']} | {g['rails']} | {g['rows']} | "
                     f"{g['median_abs_error'] * 100:.0f}% | {g['max_abs_error'] * 100:.0f}% |")
    lines += ["", "Held out, per algorithm (all held-out shapes):", "",
              f"| algorithm | rows, every size | median | max | rows from {small} | median | "
              "max |", "| --- | --- | --- | --- | --- | --- | --- |"]
    large = s["held_out_by_algorithm_from_min_bytes"]
    for a, g in s["held_out_by_algorithm"].items():
        b = large.get(a)
        lines.append(f"| {a} | {g['rows']} | {g['median_abs_error'] * 100:.0f}% | "
                     f"{g['max_abs_error'] * 100:.0f}% | " + (
                         f"{b['rows']} | {b['median_abs_error'] * 100:.0f}% | "
                         f"{b['max_abs_error'] * 100:.0f}% |" if b else "- | - | - |"))
    lines.append("")
    if s["held_out"]:
        h = s["held_out"]
        lines.append(f"Held out, all shapes, counted rows ({h['rows']}): median |error| "
                     f"{h['median_abs_error'] * 100:.0f}% "
                     f"(target {TARGET_MEDIAN:.0%}), worst {h['max_abs_error'] * 100:.0f}% "
                     f"(target {TARGET_MAX:.0%}): "
                     f"{'meets' if s['meets_target'] else 'MISSES'} the target.")
        a = s["held_out_every_size_and_comm_algorithm"]
        lines.append(f"Held out, every size and all of comm/'s algorithms ({a['rows']} rows, "
                     f"hierarchical included): median |error| {a['median_abs_error'] * 100:.0f}%"
                     f", worst {a['max_abs_error'] * 100:.0f}% (not the target's rows).")
    if s["library"]:
        lb = s["library"]
        lines.append(f"Open MPI's own MPI_Allreduce (native, plain; not counted): median "
                     f"|error| {lb['median_abs_error'] * 100:.0f}%, worst "
                     f"{lb['max_abs_error'] * 100:.0f}% over {lb['rows']} rows.")
    spread = np.median([x["rounds_spread"] for x in result["rows"]])
    lines.append(f"Median spread between a row's rounds (max - min) / median: "
                 f"{spread * 100:.0f}%.")
    return "\n".join(lines) + "\n"
