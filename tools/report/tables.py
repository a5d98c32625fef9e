"""The report's tables as rows of strings, and one renderer (a padded Markdown pipe table that
reads on a terminal and pastes into a README)."""
from . import reference

NA = "n/a"
PARTIAL = "partial (running or crashed)"


def fmt_seconds(s):
    if s is None:
        return NA
    if s < 600:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fmt_pct(x, digits=2):
    return NA if x is None else f"{100 * x:.{digits}f}%"


def fmt_threshold(t):
    return f"{100 * t:g}%"


def fmt_rate(x):
    if x is None:
        return NA
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def fmt_epoch(e):
    return NA if e is None else f"{e:.2f}"


def status(m):
    text = "completed" if m.completed else PARTIAL
    if m.resumes:
        text += f", resumed {m.resumes}×"
    return text


def schedule(m):
    return "→".join(str(b) for b in m.batch_schedule) or NA


def processors(m):
    if not m.world_sizes:
        return NA
    return "→".join(str(s) for s in m.world_sizes) + f" × {m.device} {m.unit}"


def reached(m, t):
    hit = m.time_to.get(t)
    if hit is None:
        return "not reached" if m.completed else "not reached yet"
    elapsed, epoch = hit
    return f"{fmt_seconds(elapsed)} (epoch {fmt_epoch(epoch)})"


def mlperf_ttt(m):
    """run_start -> run_stop of mlperf.log, with its status."""
    if m.mlperf is None:
        return "n/a (no mlperf.log)"
    if m.mlperf["ttt_s"] is None:
        return "no run_stop yet" if m.mlperf["started"] else "no run_start yet"
    between = ", with the time between jobs" if m.resumes else ""
    return f"{fmt_seconds(m.mlperf['ttt_s'])} ({m.mlperf['status']}{between})"


def mlperf_to_target(m):
    if m.mlperf is None:
        return NA
    if m.mlperf["to_target_s"] is None:
        return "not reached" if m.completed else "not reached yet"
    return f"{fmt_seconds(m.mlperf['to_target_s'])} (top-1 ≥ {fmt_threshold(m.mlperf['target'])})"


def epochs_to_target(m):
    if m.epochs_to_target is None:
        return "not reached" if m.completed else "not reached yet"
    return fmt_epoch(m.epochs_to_target)


def per_run_table(metrics, thresholds, show_efficiency):
    """Metrics as rows, runs as columns: reads well for the handful of runs one compares."""
    rows = [
        ("log", [status(m) for m in metrics]),
        ("processors", [processors(m) for m in metrics]),
        ("batch schedule", [schedule(m) for m in metrics]),
        ("data backend", [m.data_backend or NA for m in metrics]),
        ("epochs", [fmt_epoch(m.epochs) for m in metrics]),
        ("steps", [NA if m.steps is None else str(m.steps) for m in metrics]),
        ("wall time", [fmt_seconds(m.wall_s) for m in metrics]),
        ("MLPerf time-to-train", [mlperf_ttt(m) for m in metrics]),
        ("MLPerf time to target", [mlperf_to_target(m) for m in metrics]),
        ("MLPerf epochs to target", [epochs_to_target(m) for m in metrics]),
        ("top-1 final", [fmt_pct(m.final_top1) for m in metrics]),
        ("top-1 best", [NA if m.best_top1 is None else
                        f"{fmt_pct(m.best_top1)} (epoch {fmt_epoch(m.best_top1_epoch)})"
                        for m in metrics]),
        ("top-5 final", [fmt_pct(m.final_top5) for m in metrics]),
        ("top-5 best", [fmt_pct(m.best_top5) for m in metrics]),
    ]
    rows += [(f"time to top-1 ≥ {fmt_threshold(t)}", [reached(m, t) for m in metrics])
             for t in thresholds]
    rows.append(("images/s", [fmt_rate(m.images_per_s) for m in metrics]))
    rows.append(("images/s per accelerator", [fmt_rate(m.images_per_s_each) for m in metrics]))
    if show_efficiency:
        rows.append(("scaling efficiency", [fmt_pct(m.efficiency, 1) for m in metrics]))
    rows += [("all-reduce share", [fmt_pct(m.allreduce_share, 1) for m in metrics]),
             ("data-wait share", [fmt_pct(m.data_wait_share, 1) for m in metrics])]
    header = ["", *[m.name for m in metrics]]
    return header, [[label, *values] for label, values in rows]


def comparison_table(metrics):
    """The paper's comparison, one row per run: batch, processors, library, time, top-1."""
    header = ["run", "batch", "processors", "library", "time", "top-1"]
    rows = [[m.name, schedule(m), processors(m), m.library,
             fmt_seconds(m.wall_s) + ("" if m.completed else " (partial)"),
             fmt_pct(m.final_top1)] for m in metrics]
    return header, rows


def paper_table():
    return list(reference.HEADER), [list(r) for r in reference.ROWS]


def render(header, rows):
    widths = [max(3, *(len(str(c)) for c in col)) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |",
                      *[line(r) for r in rows]])
