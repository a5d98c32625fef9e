import nnabla as nn
import numpy as np
import pytest

from models.resnet import ResNet, count_parameters, is_decay_exempt


@pytest.fixture(autouse=True)
def fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def test_full_resnet50_has_the_reference_parameter_count():
    model = ResNet(50, 1000)
    logits = model(nn.Variable((1, 3, 224, 224)), train=True)
    params = model.parameters()
    assert logits.shape == (1, 1000)
    assert count_parameters(params) == 25_557_032   # torchvision's resnet50
    assert len(params) == 161                        # 53 conv + 53 BN x2 + fc W, b


def test_channel_last_builds_the_same_model():
    model = ResNet(50, 1000, channel_last=True)
    logits = model(nn.Variable((2, 224, 224, 3)))
    assert logits.shape == (2, 1000)
    assert count_parameters(model.parameters()) == 25_557_032


def test_v1_5_puts_the_stride_in_the_3x3_convolution():
    model = ResNet(50, 10)
    model(nn.Variable((1, 3, 224, 224)))
    # the first block of stage 2 downsamples: its 1x1 conv1 keeps stride 1, conv2 is 3x3
    params = model.parameters()
    assert params["layer2_0/conv1/conv/W"].shape == (128, 256, 1, 1)
    assert params["layer2_0/conv2/conv/W"].shape == (128, 128, 3, 3)
    x = nn.Variable((1, 3, 224, 224))
    x.d = np.random.RandomState(0).randn(*x.shape)
    y = model(x, train=False)
    y.forward()
    assert np.isfinite(y.d).all()


@pytest.mark.parametrize("small_stem,size", [(True, 32), (False, 64)])
def test_small_width_and_stem_output_shapes(small_stem, size):
    model = ResNet(50, 7, width=0.125, small_stem=small_stem)
    x = nn.Variable((3, 3, size, size))
    x.d = np.random.RandomState(0).randn(*x.shape)
    y = model(x, train=True)
    y.forward()
    assert y.shape == (3, 7)
    stem = model.parameters()["stem_conv/conv/W"]
    assert stem.shape == ((8, 3, 3, 3) if small_stem else (8, 3, 7, 7))


def test_zero_init_of_last_bn_gamma_is_optional():
    model = ResNet(50, 10, width=0.25, zero_init_last_bn=True)
    model(nn.Variable((1, 3, 32, 32)))
    p = model.parameters()
    assert np.all(p["layer1_0/bn3/bn/gamma"].d == 0)
    assert np.all(p["layer1_0/bn1/bn/gamma"].d == 1)
    nn.clear_parameters()
    model = ResNet(50, 10, width=0.25, zero_init_last_bn=False)
    model(nn.Variable((1, 3, 32, 32)))
    assert np.all(model.parameters()["layer1_0/bn3/bn/gamma"].d == 1)


def test_same_seed_same_weights_and_graphs_share_them():
    a = ResNet(50, 10, width=0.125, rng=np.random.RandomState(3))
    a(nn.Variable((1, 3, 32, 32)))
    wa = a.parameters()["fc/affine/W"].d.copy()
    a(nn.Variable((4, 3, 32, 32)), train=False)        # a second graph reuses the weights
    assert len(a.parameters()) == 161
    nn.clear_parameters()
    b = ResNet(50, 10, width=0.125, rng=np.random.RandomState(3))
    b(nn.Variable((1, 3, 32, 32)))
    np.testing.assert_array_equal(wa, b.parameters()["fc/affine/W"].d)


def test_decay_exemption_covers_bn_and_bias_only():
    assert is_decay_exempt("layer1_0/bn1/bn/gamma")
    assert is_decay_exempt("layer1_0/bn1/bn/beta")
    assert is_decay_exempt("fc/affine/b")
    assert not is_decay_exempt("fc/affine/W")
    assert not is_decay_exempt("layer1_0/conv1/conv/W")


def test_bad_depth_and_width_are_errors():
    with pytest.raises(ValueError, match="depth"):
        ResNet(49)
    with pytest.raises(ValueError, match="width"):
        ResNet(50, width=0)
