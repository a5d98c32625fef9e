"""One recorder for what a run reports: log.jsonl (and its TensorBoard copy), mlperf.log and
the progress line, fed by the trainer's few events, so the loop makes one call where three
writers used to be called."""
import math

from .progress import Progress, format_seconds


class Recorder:
    def __init__(self, log, mlperf, meters, total_steps, initial_step, enabled):
        self.log, self.mlperf, self.meters = log, mlperf, meters
        self.progress = Progress(total_steps, initial_step=initial_step, enabled=enabled)

    def stage(self, stage, step, epoch, lr, hyper, first):
        """A stage begins (``first``: at its first step, not a resume landing mid-stage)."""
        if first:
            self.log.write("stage", epoch=epoch, step=step, elapsed_s=self.meters.elapsed(),
                           global_batch=stage.global_batch, lr=lr, stage=stage.index,
                           local_batch=stage.local_batch, accumulation=stage.accumulation,
                           steps=stage.steps, **hyper)
        self.progress.message(f"stage {stage.index} from step {step} (epoch {epoch:.3f}): "
                              f"global batch {stage.global_batch}, {stage.local_batch} per "
                              f"rank x {stage.accumulation}")

    def update(self, step, epoch, stage, lr, events, loss_scale=None):
        """After an update: the progress line, a step line when due, an epoch line at an
        epoch's end (and MLPerf's epoch_stop)."""
        m = self.meters
        self.progress.update(step, epoch, m.mean_loss(), m.images_per_s(), lr,
                             stage.global_batch)
        if events.log:
            self.log.write("step", epoch=epoch, step=step, elapsed_s=m.elapsed(),
                           global_batch=stage.global_batch, lr=lr, **m.step_fields(),
                           **({"loss_scale": loss_scale} if loss_scale is not None else {}))
        if events.epoch_end:
            self.log.write("epoch", epoch=epoch, step=step, elapsed_s=m.elapsed(),
                           global_batch=stage.global_batch, lr=lr,
                           epoch_index=math.floor(epoch), **m.epoch_fields())
            self.mlperf.epoch_stop(step, epoch)

    def eval_start(self, step, epoch):
        self.mlperf.eval_start(step, epoch)

    def evaluated(self, step, epoch, stage, lr, top1, top5, val_loss):
        self.log.write("eval", epoch=epoch, step=step, elapsed_s=self.meters.elapsed(),
                       val_top1=top1, val_top5=top5, val_loss=val_loss,
                       global_batch=stage.global_batch, lr=lr)
        self.mlperf.eval_stop(step, epoch, top1)
        self.progress.message(f"epoch {epoch:.2f}: val top-1 {top1:.4f} top-5 {top5:.4f} "
                              f"loss {val_loss:.4f} ({format_seconds(self.meters.elapsed())})")

    def next_update(self, step, epoch_before, epoch_now, evaluated):
        """MLPerf's epoch, block and stage starts for the update after ``step``."""
        self.mlperf.next_update(step, epoch_before, epoch_now, evaluated)

    def close(self):
        self.progress.close()
