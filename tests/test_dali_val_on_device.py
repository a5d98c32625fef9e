"""Validation batches written straight into the graph's input (data.device=gpu on a GPU):
the same images, labels and counts as the host path, with DALI's CPU pipeline here."""
import nnabla as nn
import numpy as np
from nnabla.ext_utils import get_extension_context

from data.dali_loader import DaliValLoader
from data.imagefolder import list_imagenet
from training.evaluate import batches


def test_batches_into_give_what_the_host_path_gives(toy_dir):
    _, val = list_imagenet(toy_dir)
    ctx = get_extension_context("cpu")
    graph = type("G", (), {})()
    graph.image = nn.Variable((7, 3, 16, 16))
    host = list(DaliValLoader(val, 16, batch_size=7))
    device = DaliValLoader(val, 16, batch_size=7)
    got = 0
    for (labels, valid), (x, y, v) in zip(batches(graph, device, ctx), host):
        assert valid == v and labels.shape == y.shape
        np.testing.assert_array_equal(labels[:valid], y[:v])
        np.testing.assert_array_equal(graph.image.d[:valid], x[:v])   # padding rows never count
        got += 1
    assert got == len(host) and host[-1][2] < 7      # the short last batch was covered
