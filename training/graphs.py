"""The nnabla graphs the trainer runs: one training graph per per-rank batch size, and one
validation graph. Each calls the same model, so all of them share its weights."""
from types import SimpleNamespace

import nnabla as nn

from .objective import classification_loss


def input_shape(cfg):
    size = cfg.data.image_size
    return (size, size, 3) if cfg.model.channel_last else (3, size, size)


def build_train_graph(cfg, model, local_batch, label_smoothing, loss_ctx=None):
    """``loss_ctx``: the context of the loss (float even when the model runs in half)."""
    train = SimpleNamespace(image=nn.Variable((local_batch,) + input_shape(cfg)),
                            label=nn.Variable((local_batch, 1)))
    logits = model(train.image, train=True)
    with nn.context_scope(loss_ctx or nn.get_current_context()):
        train.loss = classification_loss(logits, train.label, label_smoothing)
    return train


def build_val_graph(cfg, model):
    val = SimpleNamespace(image=nn.Variable((cfg.eval.batch_size,) + input_shape(cfg)))
    val.logits = model(val.image, train=False)
    return val


class TrainGraphs:
    """Training graphs by (per-rank batch, label smoothing), built on first use."""

    def __init__(self, cfg, model, schedule, loss_ctx=None):
        self.cfg, self.model, self.schedule, self.loss_ctx = cfg, model, schedule, loss_ctx
        self._graphs = {}

    def for_stage(self, stage):
        key = (stage.local_batch, self.schedule.hyper(stage)["label_smoothing"])
        if key not in self._graphs:
            self._graphs[key] = build_train_graph(self.cfg, self.model, *key, self.loss_ctx)
        return self._graphs[key]
