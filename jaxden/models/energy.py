"""GradResNet: the energy network of a classification-denoising model.

Thiry & Guth, "Classification-Denoising Networks" (arXiv 2410.03505) train one network whose
per-class outputs are log-joint scores f_c(y) = log p(y, c) of a noisy image y = x + sigma * e.
Classification is a softmax over f; denoising is Tweedie's formula,
D(y) = y + sigma^2 * grad_y logsumexp_c f_c(y), so the denoiser is the network's input gradient
(computed elsewhere, with `jax.grad`; see `jaxden.tweedie`). This module is only the network.

The paper calls it "GradResNet": ResNet-18-like, with GELU instead of ReLU (smooth, because
training differentiates through grad_y f, a double backprop) and GroupNorm instead of BatchNorm
(no batch statistics, so no train/eval mismatch and samples stay independent), with "UNet-like
properties" so that the input gradient has full resolution. Its widths, strides and readout are
not known (see PAPERS.md, section 2, [N]); the design below is our choice.

Layout is NHWC with images in [0, 1].
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from jaxden.models.conv import conv_function

SIGMA_OFFSET = 1e-3  # the sigma channel holds log(sigma + SIGMA_OFFSET)
GROUPNORM_EPSILON = 1e-5


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _group_norm(features, groups, rngs):
    return nnx.GroupNorm(features, num_groups=math.gcd(features, groups),
                         epsilon=GROUPNORM_EPSILON, rngs=rngs)


class PreActBlock(nnx.Module):
    """Pre-activation residual block (He et al., "Identity Mappings in Deep Residual Networks").

    GroupNorm -> GELU -> conv 3x3 (stride `stride`) -> GroupNorm -> GELU -> conv 3x3, plus a
    shortcut: the identity, or a 1x1 conv with the same stride when the width or the resolution
    changes. The shortcut takes the block's raw input. Convs use "SAME" padding, so a stride-2
    block maps H x W to ceil(H / 2) x ceil(W / 2).
    """

    def __init__(self, in_features, features, stride, groups, *, conv, rngs):
        self.norm1 = _group_norm(in_features, groups, rngs)
        self.conv1 = nnx.Conv(in_features, features, (3, 3), strides=stride, padding="SAME",
                              conv_general_dilated=conv, rngs=rngs)
        self.norm2 = _group_norm(features, groups, rngs)
        self.conv2 = nnx.Conv(features, features, (3, 3), padding="SAME",
                              conv_general_dilated=conv, rngs=rngs)
        if stride != 1 or in_features != features:
            self.shortcut = nnx.Conv(in_features, features, (1, 1), strides=stride,
                                     padding="SAME", conv_general_dilated=conv, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x):
        h = self.conv1(jax.nn.gelu(self.norm1(x)))
        h = self.conv2(jax.nn.gelu(self.norm2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class GradResNet(nnx.Module):
    """Energy network f(y) = (log p(y, c))_c of Thiry & Guth (arXiv 2410.03505), "GradResNet".

    Our design (the paper's exact widths, strides and readout are unknown):

    - stem: 3x3 conv, stride 1, in_channels (+1 with sigma_conditioning) -> widths[0];
    - stages: stage 0 keeps the full input resolution; each later stage s starts with a
      stride-2 block and has width widths[s]; every stage has `blocks_per_stage` pre-activation
      residual blocks (`PreActBlock`: GroupNorm -> GELU -> conv -> GroupNorm -> GELU -> conv,
      plus an identity or 1x1-conv shortcut); odd sizes work ("SAME" padding, ceil(H / 2));
    - readout: for every stage s, GroupNorm -> GELU -> global average pool over H and W; the
      per-stage vectors are concatenated and one Linear(sum(widths), num_classes) gives f.

    The readout is what makes it "UNet-like" in gradient space: the backward pass from f to y
    gets a direct route from every scale, like a U-Net's skips, and the full-resolution
    stage 0 gives grad_y f (the denoiser) full resolution. GELU keeps f smooth for double
    backprop; GroupNorm (gcd(width, groups) groups, epsilon 1e-5) normalises each sample on its
    own, so samples in a batch are independent.

    Noise conditioning (sigma_conditioning=True): a constant extra input channel holds
    log(sigma + 1e-3), which is smooth and bounded for sigma in [0, 1] (from log(1e-3) = -6.9
    at sigma = 0 to 0.001 at sigma = 1) and spreads small noise levels apart (sigma is on the
    [0, 1] image scale, so sigma = 25/255 is about 0.098). Without conditioning the network is
    blind: `sigma` is accepted and ignored, so callers can always pass it.

    Args:
      in_channels: channels of the input image (1 gray, 3 RGB).
      num_classes: the number of classes K; f has shape (B, K).
      widths: channel count of each stage, full resolution first; stage s works at
        resolution ceil(H / 2^s).
      blocks_per_stage: residual blocks in every stage.
      groups: GroupNorm groups; a norm over `features` channels uses gcd(features, groups).
      sigma_conditioning: add the log(sigma + 1e-3) input channel (then `sigma` is required).
      conv_impl: how the convolutions run: "xla", "matmul" (stride-2 ones as im2col matrix
        products, unit-stride ones with gradients of every order written as forward
        convolutions: much faster for the double backprop and in the trainer's microbatch
        loop on XLA:CPU; `jaxden.models.conv`) or "auto" (matmul on CPU, XLA elsewhere).
        The same parameters and function either way.
      rngs: the `nnx.Rngs` for parameter initialisation.
    """

    def __init__(
        self,
        in_channels,
        *,
        num_classes,
        widths=(32, 64, 128),
        blocks_per_stage=2,
        groups=8,
        sigma_conditioning=False,
        conv_impl="auto",
        rngs: nnx.Rngs,
    ):
        for name, value in [("in_channels", in_channels), ("num_classes", num_classes),
                            ("blocks_per_stage", blocks_per_stage), ("groups", groups)]:
            _check_positive_int(name, value)
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or not widths:
            raise ValueError(f"widths must be a non-empty sequence of positive integers, "
                             f"got {widths!r}")
        widths = tuple(widths)
        for i, width in enumerate(widths):
            _check_positive_int(f"widths[{i}]", width)
        if not isinstance(sigma_conditioning, bool):
            raise ValueError(f"sigma_conditioning must be a bool, got {sigma_conditioning!r}")

        conv = conv_function(conv_impl)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = widths
        self.sigma_conditioning = sigma_conditioning
        self.stem = nnx.Conv(in_channels + int(sigma_conditioning), widths[0], (3, 3),
                             padding="SAME", conv_general_dilated=conv, rngs=rngs)
        stages = []
        for s, width in enumerate(widths):
            in_features = widths[max(s - 1, 0)]
            stages.append(nnx.List(
                PreActBlock(in_features if b == 0 else width, width,
                            2 if (s > 0 and b == 0) else 1, groups, conv=conv, rngs=rngs)
                for b in range(blocks_per_stage)))
        self.stages = nnx.List(stages)
        self.readout_norms = nnx.List(_group_norm(width, groups, rngs) for width in widths)
        self.head = nnx.Linear(sum(widths), num_classes, rngs=rngs)

    def features(self, y, sigma=None):
        """The per-stage feature maps (before the readout), full resolution first: stage s
        has shape (B, ceil(H / 2^s), ceil(W / 2^s), widths[s]). `sigma` is as in `__call__`."""
        chex.assert_rank(y, 4)
        if y.shape[-1] != self.in_channels:
            raise ValueError(f"y has {y.shape[-1]} channels (last axis of shape {y.shape}); "
                             f"this GradResNet was built with in_channels={self.in_channels}")
        x = self.stem(self._with_sigma_channel(y, sigma))
        maps = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            maps.append(x)
        return tuple(maps)

    def __call__(self, y, sigma=None):
        """Per-class log-joint scores f(y), shape (B, num_classes), for y of shape
        (B, H, W, in_channels), any H and W.

        `sigma` is a scalar or a (B,) array on the [0, 1] scale; required with
        sigma_conditioning=True, ignored otherwise.
        """
        pooled = [jnp.mean(jax.nn.gelu(norm(x)), axis=(1, 2))
                  for norm, x in zip(self.readout_norms, self.features(y, sigma))]
        return self.head(jnp.concatenate(pooled, axis=-1))

    def _with_sigma_channel(self, y, sigma):
        if not self.sigma_conditioning:
            return y
        if sigma is None:
            raise ValueError("sigma is required: this GradResNet was built with "
                             "sigma_conditioning=True")
        sigma = jnp.asarray(sigma, dtype=y.dtype)
        batch = y.shape[0]
        if sigma.shape not in ((), (batch,)):
            raise ValueError(f"sigma must be a scalar or have shape ({batch},) (one per sample), "
                             f"got shape {sigma.shape}")
        code = jnp.log(jnp.broadcast_to(sigma, (batch,)) + SIGMA_OFFSET)
        # an elementwise sum with y's slice keeps y's sharding (concatenate needs one sharding)
        channel = jnp.zeros_like(y[..., :1]) + code[:, None, None, None]
        return jnp.concatenate([y, channel], axis=-1)


# Used for testing only.
GradResNetTiny = functools.partial(GradResNet, widths=(4, 8), blocks_per_stage=1, groups=2)
