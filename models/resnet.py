"""ResNet v1.5 for ImageNet, written with nnabla's parametric functions.

v1.5 puts the stride-2 of each downsampling bottleneck in the 3x3 convolution (not in the
first 1x1, as the original v1 did); this is the variant torchvision, NVIDIA's recipe and
MLPerf train. At full size with 1000 classes ResNet-50 has exactly 25,557,032 trainable
parameters, the reference count (BN running statistics are not counted: they are state, not
parameters, in nnabla as in PyTorch).

Two knobs exist only so the real architecture can train on a CPU in minutes:
  - ``width`` multiplies every channel count (0.25 gives a 16-channel stem);
  - ``small_stem`` replaces the 7x7/2 convolution and 3x3/2 max-pool with one 3x3/1
    convolution, so 32-64 px images keep enough spatial resolution.
The block structure (3, 4, 6, 3 bottlenecks) is unchanged by either.
"""
import math

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import nnabla.parametric_functions as PF
import numpy as np

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                    101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BOTTLENECK_DEPTHS = (50, 101, 152)
STAGE_WIDTHS = (64, 128, 256, 512)


def scaled(channels, width):
    """Channels after the width multiplier; never below 4 so every layer stays real."""
    return max(4, int(round(channels * width)))


def _he_normal(fan_out, rng):
    # Kaiming-normal with fan_out, as torchvision and NVIDIA initialise ResNet convolutions.
    return I.NormalInitializer(sigma=math.sqrt(2.0 / fan_out), rng=rng)


class ResNet:
    """A callable that builds the graph: ``logits = ResNet(...)(images, train=True)``.

    Parameters are created in nnabla's global scope under ``name`` on the first call and
    shared by every later call, so a training graph, a validation graph and graphs of other
    batch sizes (batch-size control) all use the same weights.
    """

    def __init__(self, depth=50, num_classes=1000, width=1.0, small_stem=False,
                 zero_init_last_bn=True, channel_last=False, rng=None, name="resnet"):
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"model.depth={depth} is not supported; use one of "
                             f"{sorted(BLOCKS_PER_STAGE)}")
        if width <= 0:
            raise ValueError(f"model.width={width} must be positive (1.0 is full size)")
        self.depth = depth
        self.num_classes = num_classes
        self.width = width
        self.small_stem = small_stem
        self.zero_init_last_bn = zero_init_last_bn
        self.channel_last = channel_last
        self.name = name
        self.rng = rng if rng is not None else np.random.RandomState(0)
        self.bottleneck = depth in BOTTLENECK_DEPTHS
        self.expansion = 4 if self.bottleneck else 1

    # --- layers -------------------------------------------------------------------------
    @property
    def _axis(self):
        return 3 if self.channel_last else 1

    def _conv(self, x, maps, kernel, stride, name):
        k = (kernel, kernel)
        return PF.convolution(x, maps, k, pad=(kernel // 2, kernel // 2), stride=(stride, stride),
                              with_bias=False, channel_last=self.channel_last,
                              w_init=_he_normal(maps * kernel * kernel, self.rng), name=name)

    def _bn(self, x, train, name, zero_gamma=False, relu=True):
        init = {"gamma": I.ConstantInitializer(0.0)} if zero_gamma else None
        h = PF.batch_normalization(x, axes=[self._axis], batch_stat=train, param_init=init,
                                   name=name)
        return F.relu(h, inplace=True) if relu else h

    def _block(self, x, maps, stride, train, name):
        """One residual block; ``maps`` is the bottleneck (inner) width."""
        out_maps = maps * self.expansion
        in_maps = x.shape[self._axis]
        with nn.parameter_scope(name):
            if self.bottleneck:
                h = self._bn(self._conv(x, maps, 1, 1, "conv1"), train, "bn1")
                h = self._bn(self._conv(h, maps, 3, stride, "conv2"), train, "bn2")  # v1.5
                h = self._conv(h, out_maps, 1, 1, "conv3")
                h = self._bn(h, train, "bn3", zero_gamma=self.zero_init_last_bn, relu=False)
            else:
                h = self._bn(self._conv(x, maps, 3, stride, "conv1"), train, "bn1")
                h = self._conv(h, out_maps, 3, 1, "conv2")
                h = self._bn(h, train, "bn2", zero_gamma=self.zero_init_last_bn, relu=False)
            if stride != 1 or in_maps != out_maps:
                shortcut = self._conv(x, out_maps, 1, stride, "downsample")
                shortcut = self._bn(shortcut, train, "downsample_bn", relu=False)
            else:
                shortcut = x
            return F.relu(F.add2(h, shortcut, inplace=False), inplace=True)

    # --- graph --------------------------------------------------------------------------
    def __call__(self, images, train=True):
        """images: (N, C, H, W), or (N, H, W, C) with channel_last. Returns (N, classes) logits."""
        with nn.parameter_scope(self.name):
            stem = scaled(64, self.width)
            if self.small_stem:
                h = self._bn(self._conv(images, stem, 3, 1, "stem_conv"), train, "stem_bn")
            else:
                h = self._bn(self._conv(images, stem, 7, 2, "stem_conv"), train, "stem_bn")
                h = F.max_pooling(h, (3, 3), stride=(2, 2), pad=(1, 1),
                                  channel_last=self.channel_last)
            for stage, (blocks, base) in enumerate(zip(BLOCKS_PER_STAGE[self.depth],
                                                       STAGE_WIDTHS)):
                maps = scaled(base, self.width)
                for b in range(blocks):
                    stride = 2 if (b == 0 and stage > 0) else 1
                    h = self._block(h, maps, stride, train, f"layer{stage + 1}_{b}")
            if self.channel_last:
                h = F.transpose(h, (0, 3, 1, 2))
            h = F.global_average_pooling(h)
            return PF.affine(h, self.num_classes, w_init=I.NormalInitializer(0.01, rng=self.rng),
                             b_init=I.ConstantInitializer(0.0), name="fc")

    def parameters(self):
        """Trainable parameters of this model (BN running statistics excluded)."""
        with nn.parameter_scope(self.name):
            return nn.get_parameters(grad_only=True)

    def statistics(self):
        """BN running means and variances: state updated by training, not by the optimizer."""
        with nn.parameter_scope(self.name):
            every = nn.get_parameters(grad_only=False)
        return {k: v for k, v in every.items() if k.rsplit("/", 1)[-1] in ("mean", "var")}


def count_parameters(params):
    return sum(int(p.size) for p in params.values())


def is_decay_exempt(name):
    """BN scales/shifts and biases get no weight decay (Goyal et al.; NVIDIA's recipe)."""
    leaf = name.rsplit("/", 1)[-1]
    return leaf in ("gamma", "beta", "b")
