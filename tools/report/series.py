"""nnabla Monitor series files, so ``nnabla_cli plot_series`` and nnabla habits keep working.

Format as nnabla.monitor.MonitorSeries writes it (nnabla 1.39.0, nnabla/monitor.py): the file
is ``<name with spaces replaced by dashes>.series.txt`` with one ``"{index} {value:g}"`` line
per point, and nnabla.monitor.plot_series reads it back with
``np.genfromtxt(filename, dtype='i8,f4', names=['k', 'v'])``, so the index must be an integer:
here it is the update step, as in nnabla's examples. The names follow nnabla's distributed
ImageNet example ("Train loss", "Validation error" = 1 - top-1, ...).
"""
import os

from .metrics import per_epoch_timing


def _points(records, key, transform=None):
    out = []
    for r in records:
        value, step = r.get(key), r.get("step")
        if value is not None and step is not None:
            out.append((int(step), transform(value) if transform else value))
    return out


def series_of(run):
    """{monitor name: [(step, value), ...]} for one run; empty series are left out."""
    steps, evals = run.events("step"), run.events("eval")
    epochs = per_epoch_timing(run)
    found = {
        "Train loss": _points(steps, "train_loss"),
        "Learning rate": _points(steps, "lr"),
        "Global batch": _points(steps, "global_batch"),
        "Images per second": _points(steps, "images_per_s"),
        "Epoch": _points(steps, "epoch"),
        "Elapsed seconds": _points(steps, "elapsed_s"),
        "Validation loss": _points(evals, "val_loss"),
        "Validation error": _points(evals, "val_top1", lambda v: 1.0 - v),
        "Validation top1": _points(evals, "val_top1"),
        "Validation top5": _points(evals, "val_top5"),
        "All-reduce share": _points(epochs, "allreduce_share"),
        "Data wait share": _points(epochs, "data_wait_share"),
    }
    return {name: pts for name, pts in found.items() if pts}


def file_name(name):
    return name.replace(" ", "-") + ".series.txt"   # as MonitorSeries names its file


def write_series(run, directory):
    """Write each series atomically; returns the file paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, points in series_of(run).items():
        path = os.path.join(directory, file_name(name))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for index, value in points:
                f.write("{} {:g}\n".format(index, value))
        os.replace(tmp, path)
        paths.append(path)
    return paths
