"""The running sums behind the log lines, so the training loop only says what happened.

Two windows are kept: since the last "step" line and since the last "epoch" line. Time is
split into categories measured with ``timing(name)`` (``data``: waiting for the loader,
``allreduce``: the gradient collective, ``eval``: validation); training time is wall time
minus evaluation. Totals carry over a resume through ``state()`` / ``load_state()``.
"""
import contextlib
import time

CATEGORIES = ("data", "allreduce", "eval")


class Meters:
    def __init__(self, elapsed_offset=0.0, totals=None, skipped_updates=0):
        self._start = time.perf_counter() - elapsed_offset
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        self.totals.update(totals or {})
        self.skipped_updates = skipped_updates   # FP16 overflows: iterations without an update
        self._step = self._window()
        self._epoch = self._window()

    # --- measuring ----------------------------------------------------------------------------
    def elapsed(self):
        """Wall time of training so far, earlier segments of a resumed run included."""
        return time.perf_counter() - self._start

    @contextlib.contextmanager
    def timing(self, category):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[category] += time.perf_counter() - t0

    def update(self, loss, images):
        """One update of ``images`` samples (whole job) with mean loss ``loss``."""
        for w in (self._step, self._epoch):
            w["loss"] += loss
            w["updates"] += 1
            w["images"] += images

    # --- reading ------------------------------------------------------------------------------
    def train_seconds(self):
        return self.elapsed() - self.totals["eval"]

    def images_per_s(self):
        """Throughput since the last "step" line (for the progress display)."""
        return self._rate(self._step)

    def mean_loss(self):
        return self._step["loss"] / max(self._step["updates"], 1)

    def step_fields(self):
        """Fields of a "step" line; starts a new step window."""
        fields = dict(train_loss=self.mean_loss(), images_per_s=self._rate(self._step))
        self._step = self._window()
        return fields

    def epoch_fields(self):
        """Fields of an "epoch" line (this epoch's shares of time); starts a new epoch window."""
        w = self._epoch
        seconds = max(self.train_seconds() - w["train_s"], 1e-9)
        fields = dict(train_loss=w["loss"] / max(w["updates"], 1),
                      images_per_s=w["images"] / seconds,
                      data_wait_s=self.totals["data"],
                      data_wait_frac=(self.totals["data"] - w["data"]) / seconds,
                      allreduce_s=self.totals["allreduce"] - w["allreduce"],
                      allreduce_frac=(self.totals["allreduce"] - w["allreduce"]) / seconds)
        self._epoch = self._window()
        return fields

    def state(self):
        return {"elapsed_offset": self.elapsed(), "totals": dict(self.totals),
                "skipped_updates": self.skipped_updates}

    # --- internals ----------------------------------------------------------------------------
    def _window(self):
        return {"loss": 0.0, "updates": 0, "images": 0, "train_s": self.train_seconds(),
                "data": self.totals["data"], "allreduce": self.totals["allreduce"]}

    def _rate(self, w):
        return w["images"] / max(self.train_seconds() - w["train_s"], 1e-9)
