"""The end of a run: the last log line, summary.json, mlperf.log's run_stop, final parameters,
a terminal summary."""
import hashlib
import os
import sys

import nnabla as nn
import numpy as np

from .progress import format_seconds
from .runlog import EvalResult
from .run_state import checkpoint_dir


def param_digest(params):
    h = hashlib.sha256()
    for name, p in sorted(params.items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.d).tobytes())
    return h.hexdigest()


def write_param_digest(run):
    """OUTPUT_DIR/param_digest.rank<R>: sha256 of the trained parameters and of the BN
    statistics, one line each; equal files mean equal bytes (ranks in sync, runs alike)."""
    path = os.path.join(run.output_dir, f"param_digest.rank{run.comm.rank}")
    with open(path + ".tmp", "w") as f:
        f.write(f"trainable {param_digest(run.params)}\n"
                f"statistics {param_digest(run.statistics)}\n")
    os.replace(path + ".tmp", path)


def finish_run(run, result):
    """``run``: the Trainer; ``result``: its RunResult, whose ``status`` is "completed",
    "stopped" (a signal; checkpointed) or "diverged: ..."."""
    step, stage, lr, status, signal_name = result
    plan, meters, log = run.schedule.plan, run.meters, run.log
    wall, train_s = meters.elapsed(), max(meters.train_seconds(), 1e-9)
    epochs = plan.samples_before(step) / plan.epoch_length
    rate = plan.samples_before(step) / train_s
    final = log.evals[-1] if log.evals else EvalResult(None, None, None, None, None)
    event = {"completed": "end", "stopped": "stop"}.get(status, "error")
    batch = stage.global_batch if stage else None
    log.write(event, epoch=epochs, step=step, elapsed_s=wall, val_top1=final.top1,
              val_top5=final.top5, lr=lr, global_batch=batch, images_per_s=rate, status=status,
              **({"signal": signal_name} if signal_name else {}))
    summary = log.summary(
        wall_time_s=wall, epochs=epochs, steps=step, total_steps=run.schedule.total_steps,
        images_per_s=rate, eval_time_s=meters.totals["eval"], data_wait_s=meters.totals["data"],
        allreduce_s=meters.totals["allreduce"], comm_algorithm=run.comm.algorithm,
        comm_grid="x".join(map(str, run.comm.grid)), world_size=run.comm.size,
        comm_calls={k: v["calls"] for k, v in run.comm.counters()["phases"].items()},
        global_batch=batch, skipped_updates=meters.skipped_updates,
        parameters=run.n_params, status=status)
    log.write_summary(summary)
    log.close()
    run.mlperf.run_stop(step, status, log.evals)
    run.mlperf.close()
    if run.param_digest:
        write_param_digest(run)
    if run.comm.rank != 0:
        return
    out = run.output_dir
    if status == "completed":
        path = os.path.join(out, "final_params.h5")
        nn.save_parameters(path + ".tmp.h5", {**run.params, **run.statistics})
        os.replace(path + ".tmp.h5", path)
        print(f"\ndone: {step} steps, {epochs:.2f} epochs in {format_seconds(wall)} "
              f"({rate:.0f} img/s)")
        print(f"val top-1 {summary['final_val_top1']:.4f} (best {summary['best_val_top1']:.4f}), "
              f"top-5 {summary['final_val_top5']:.4f}")
        reached = ", ".join(f"{k}: {format_seconds(v) if v is not None else 'not reached'}"
                            for k, v in summary["time_to_top1"].items())
        print(f"time to top-1 {reached}")
        print(f"written: {out}/log.jsonl, summary.json, config.yaml, final_params.h5, "
              "checkpoints/")
    elif status == "stopped":
        print(f"\nstopped by {signal_name} after step {step} of {run.schedule.total_steps}; "
              f"checkpoint written: continue with --resume --output-dir {out}")
    else:
        print(f"error: training {status}; the last good checkpoint is kept in "
              f"{checkpoint_dir(out)}: lower optim.base_lr or lengthen optim.warmup_epochs, "
              "then --resume", file=sys.stderr)
