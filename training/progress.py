"""Progress on the terminal: a tqdm bar on a TTY, a plain line every N seconds in a job log.

Cluster jobs write stderr to a file, where a redrawing bar becomes thousands of
carriage-return fragments; there a line per ``interval_s`` with the same numbers reads better.
"""
import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps, initial_step=0, enabled=True, interval_s=15.0,
                 stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.total = total_steps
        self.interval_s = interval_s
        self._bar = None
        self._last_print = 0.0
        self._t0 = time.perf_counter()
        self._step0 = initial_step
        if enabled and self.stream.isatty():
            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                             dynamic_ncols=True, file=self.stream, smoothing=0.1)

    def update(self, step, epoch, loss, images_per_s, lr, global_batch):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(f"ep {epoch:.2f} loss {loss:.3f} {images_per_s:.0f} img/s "
                                      f"lr {lr:.3g} B {global_batch}", refresh=False)
            self._bar.refresh()
            return
        now = time.perf_counter()
        if now - self._last_print < self.interval_s and step < self.total:
            return
        self._last_print = now
        rate = (step - self._step0) / max(now - self._t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        print(f"step {step}/{self.total} epoch {epoch:.2f} loss {loss:.4f} "
              f"{images_per_s:.0f} img/s lr {lr:.4g} batch {global_batch} "
              f"eta {format_seconds(eta)}", file=self.stream, flush=True)

    def message(self, text):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_seconds(seconds):
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
