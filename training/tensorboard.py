"""The run's scalars as TensorBoard event files in OUTPUT_DIR/tb/ (rank 0), so
``tensorboard --logdir runs/`` shows every run while it trains.

One more sink of the run log (training/runlog.py): each log.jsonl line it writes is also
handed here, and the numbers on it become scalars at the line's update step. Written with
tensorboardX (pinned in requirements.txt), whose writer queues events and writes them from
its own thread, flushing every ``FLUSH_S`` seconds; the cost per logged line is in
docs/after_training.md. A resumed run (its first line is a "resume" event at step S) opens
its writer with ``purge_step`` S + 1, so TensorBoard hides what the interrupted attempt
logged after the checkpoint, as log.jsonl is cut back.
"""
import os

DIR = "tb"
FLUSH_S = 10
# (line key, tag): the tags group into TensorBoard's sections by their prefix
SCALARS = (
    ("train_loss", "train/loss"),
    ("lr", "train/learning_rate"),
    ("global_batch", "train/global_batch"),
    ("images_per_s", "train/images_per_s"),
    ("data_wait_frac", "time/data_wait_share"),
    ("allreduce_frac", "time/allreduce_share"),
    ("val_top1", "val/top1"),
    ("val_top5", "val/top5"),
    ("val_loss", "val/loss"),
)
# Which events' lines carry which keys: a step line's images/s is a short window, an epoch
# line's a whole epoch, so each tag takes one kind of line and its curve stays one series.
EVENT_KEYS = {
    "step": ("train_loss", "lr", "global_batch", "images_per_s"),
    "epoch": ("data_wait_frac", "allreduce_frac"),
    "eval": ("val_top1", "val_top5", "val_loss"),
}
TAGS = dict(SCALARS)


class TensorBoardSink:
    def __init__(self, output_dir):
        # Imported here, when the run log is made, before the trainer starts its clock: the
        # import takes seconds (tensorboardX imports boto3 when it is installed; nnabla is
        # why it is), which would otherwise count as training time.
        from tensorboardX import SummaryWriter
        self._writer_class = SummaryWriter
        self.log_dir = os.path.join(output_dir, DIR)
        self._writer = None

    def _open(self, purge_step=None):
        # The file is named after the second it was opened in and the host; the suffix keeps
        # a resume in the same second from replacing the earlier attempt's file.
        suffix = f".{os.getpid()}.{purge_step or 0}"
        self._writer = self._writer_class(self.log_dir, purge_step=purge_step,
                                          flush_secs=FLUSH_S, filename_suffix=suffix)

    def write(self, record):
        if self._writer is None:
            resumed = record.get("event") == "resume" and record.get("step") is not None
            self._open(record["step"] + 1 if resumed else None)
        step = record.get("step")
        if step is None:
            return
        for key in EVENT_KEYS.get(record.get("event"), ()):
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(TAGS[key], value, global_step=step)

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
