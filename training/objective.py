"""The training loss and the validation counts, kept apart from the model and the loop."""
import nnabla.functions as F
import numpy as np


def classification_loss(logits, labels, label_smoothing=0.0):
    """Mean cross-entropy with label smoothing: (1-e)*CE + e*mean_k(-log p_k)."""
    xent = F.softmax_cross_entropy(logits, labels)
    if label_smoothing > 0:
        uniform = -F.mean(F.log_softmax(logits, axis=1), axis=1, keepdims=True)
        xent = (1.0 - label_smoothing) * xent + label_smoothing * uniform
    return F.mean(xent)


def topk_correct(logits, labels, k_values=(1, 5)):
    """How many rows have their label among the k largest logits, for each k (numpy)."""
    labels = labels.reshape(-1)
    k_max = min(max(k_values), logits.shape[1])
    top = np.argpartition(-logits, k_max - 1, axis=1)[:, :k_max]
    # argpartition leaves the top k unordered; order them so "top-1" is the argmax.
    order = np.take_along_axis(logits, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    hits = top == labels[:, None]
    return [int(hits[:, :min(k, k_max)].any(axis=1).sum()) for k in k_values]
