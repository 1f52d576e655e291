"""DLWNet: the weight network h_theta of data-driven loss weighting (DLW).

Rui, Cao, Zhao, Meng & Ng, "A Data-driven Loss Weighting Scheme across Heterogeneous Tasks
for Image Denoising" (arXiv 2301.06081; authors' PyTorch code `xyrui/DLWnet`, where the
network is called HWnet, "hyper-weight network") learn a network h_theta that maps a noisy
image y to a positive per-pixel weight map W = h_theta(y) of y's shape. W weights the
fidelity term of a variational denoiser,

    x_hat(W) = argmin_x 0.5 * sum(W * (y - x)^2) + R(x),

and theta is trained through the (unrolled) solvers of several such models R so that x_hat is
close to the clean image. This module is only the network; the solvers and the bilevel
training live elsewhere (`jaxden.solvers`, `jaxden.methods`).

**W is the weight itself, not its square.** The paper writes the fidelity as
0.5 * ||W (.) (Y - X)||^2, but the authors' code multiplies the squared residual by the
network's output (e.g. the TV solver's X-update (W * Y + mu * Z - G) / (W + mu) is the prox of
0.5 * sum(W * (Y - X)^2)), and their Jittor version comments that the map "actually means
W^2". jaxden follows the code: the fidelity is 0.5 * sum(W * (y - x)^2) with W = h_theta(y), as
in `jaxden.solvers.tv(y, lam, weights=W)`, so the authors' trained maps are jaxden's W as is.

Two networks, both plain conv stacks with ReLU, no normalisation layers, bias on, Kaiming
normal initialisation (fan_in, ReLU gain) and zero biases, as in the authors' code:

- `DLWNet`: 2-D 3x3 convs over (H, W) with the C channels as features, the authors'
  `HWnet2D` (Jittor version), for grayscale or RGB images.
- `DLWNet3D`: the authors' band-aware `HWnet` for many-channel (hyperspectral) stacks, with
  the C channels as a third convolution axis and separable (1, 3, 3) spatial and (3, 1, 1)
  spectral kernels; it has the same parameters for any number of bands.

The raw network output r is turned into W by one of `NORMALIZATIONS` (see
`normalize_weights`); "softmax" is the authors'.

Layout is NHWC (B, H, W, C) with images in [0, 1]; W has the same shape.
"""

import functools

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from jaxden.models.conv import conv3d_function

NORMALIZATIONS = ("softmax", "softplus", "sigmoid")
WEIGHT_FLOOR = 1e-4  # added to every normalised weight, as in the authors' code

# PyTorch's kaiming_normal_(mode="fan_in", nonlinearity="relu"): N(0, 2 / fan_in), untruncated
_KAIMING_NORMAL = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        valid = ", ".join(repr(n) for n in NORMALIZATIONS)
        raise ValueError(f"normalization={normalization!r} is not valid; choose one of {valid}")


def normalize_weights(raw, normalization="softmax"):
    """The positive weight map W from the raw network output `raw` of shape (B, ...).

    - "softmax" (the authors' `my_softmax(r) + 1e-4`): a softmax over all the entries of each
      sample (every pixel and channel together), times their number N = H * W * C, plus 1e-4.
      The mean weight of every image is exactly 1 + 1e-4, so W only redistributes a fixed
      budget of weight: it cannot scale the fidelity against the regulariser as a whole.
      Changing one pixel of r changes every weight of that image (through the normaliser),
      and never another image's.
    - "softplus": softplus(r) + 1e-4, pixelwise, unbounded above; the mean is free.
    - "sigmoid": 2 * sigmoid(r) + 1e-4, pixelwise, in (1e-4, 2 + 1e-4); the factor 2 (our
      choice) makes W = 1 + 1e-4 at r = 0, so a freshly initialised network starts near the
      unweighted fidelity, as "softmax" does.

    Every choice gives W >= 1e-4 > 0, so the weighted fidelity stays strictly convex.
    """
    _check_normalization(normalization)
    if normalization == "softmax":
        axes = tuple(range(1, raw.ndim))
        count = 1
        for axis in axes:
            count *= raw.shape[axis]
        return jax.nn.softmax(raw, axis=axes) * count + WEIGHT_FLOOR
    if normalization == "softplus":
        return jax.nn.softplus(raw) + WEIGHT_FLOOR
    return 2.0 * jax.nn.sigmoid(raw) + WEIGHT_FLOOR


def _conv(in_features, out_features, kernel_size, rngs):
    # 3-D kernels run as 2-D convolutions on CPU (jaxden.models.conv.conv3d_as_2d: the
    # DLWNet3D forward pass 3.7x, forward + backward 1.9x faster on 2 x 31 x 64 x 64)
    return nnx.Conv(in_features, out_features, kernel_size, padding="SAME",
                    kernel_init=_KAIMING_NORMAL, bias_init=jax.nn.initializers.zeros,
                    conv_general_dilated=conv3d_function("auto"), rngs=rngs)


class _WeightNet(nnx.Module):
    """Shared validation and the raw -> W step of the two weight networks."""

    def _set_common(self, in_channels, depth, features, normalization):
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("depth", depth, minimum=2)
        _check_positive_int("features", features)
        _check_normalization(normalization)
        self.in_channels = in_channels
        self.depth = depth
        self.normalization = normalization

    def _check_input(self, y):
        chex.assert_rank(y, 4)
        if y.shape[-1] != self.in_channels:
            raise ValueError(f"y has {y.shape[-1]} channels (last axis of shape {y.shape}); "
                             f"this {type(self).__name__} was built with "
                             f"in_channels={self.in_channels}")

    def __call__(self, y):
        """The weight map W = h_theta(y) >= 1e-4, of y's shape (B, H, W, C), any H and W."""
        return normalize_weights(self.raw(y), self.normalization)


class DLWNet(_WeightNet):
    """2-D weight network, the authors' `HWnet2D` (Jittor version of DLW, `dep=5`).

    `depth` 3x3 convs ("SAME" zero padding) in all, each but the last followed by ReLU:
    in_channels -> features, (depth - 2) x [features -> features], features -> in_channels.
    The raw output (B, H, W, C) goes through `normalize_weights`. The receptive field is
    (2 * depth + 1) x (2 * depth + 1) pixels. No normalisation layers, so the samples of a
    batch are independent.

    With depth=5, features=64 and C = 1 it has 112,001 parameters.

    Args:
      in_channels: channels C of the image (1 gray, 3 RGB); W has C channels too (one weight
        per pixel and channel).
      depth: the number of conv layers, >= 2.
      features: the width of the hidden layers.
      normalization: "softmax" (the authors'), "softplus" or "sigmoid"; see
        `normalize_weights`.
      rngs: the `nnx.Rngs` for parameter initialisation.
    """

    def __init__(self, in_channels, *, depth=5, features=64, normalization="softmax",
                 rngs: nnx.Rngs):
        self._set_common(in_channels, depth, features, normalization)
        widths = [in_channels] + [features] * (depth - 1) + [in_channels]
        self.convs = nnx.List(_conv(widths[i], widths[i + 1], (3, 3), rngs)
                              for i in range(depth))

    def raw(self, y):
        """The raw output r (B, H, W, C) before `normalize_weights`."""
        self._check_input(y)
        x = y
        for conv in self.convs[:-1]:
            x = jax.nn.relu(conv(x))
        return self.convs[-1](x)


class DLWNet3D(_WeightNet):
    """Band-aware 3-D weight network, the authors' `HWnet` (`xyrui/DLWnet`, `net.py`).

    The C channels become a depth ("band") axis: y (B, H, W, C) -> (B, C, H, W, 1), one input
    feature, so the same network serves any number of bands. Kernels are in the authors'
    (band, H, W) order, "SAME" zero padding on every axis. Layers, as in the authors' code:

    1. conv (1, 3, 3) 1 -> features, ReLU;
    2. conv (3, 1, 1) features -> features, ReLU;
    3. (depth - 2) x [conv (1, 3, 3), ReLU, conv (3, 1, 1), ReLU], features -> features;
    4. conv (3, 3, 3) features -> 1 (no activation),

    then back to (B, H, W, C) and `normalize_weights` over all H * W * C entries of each
    image. That is 2 * depth - 1 convs, and a receptive field of (2 * depth + 1) pixels on
    every axis (bands included). The authors train with depth=4 and 64 features (113,281
    parameters, matching their checkpoints' layer indices); their Jittor version used depth 5.

    Args:
      in_channels: the number of bands C the model is used with; the parameters do not depend
        on it (it is only checked against the input), so a model built for C bands can be
        given another C's parameters unchanged.
      depth: the authors' `dep`, >= 2.
      features: the width of the hidden layers (the authors' `num_filters`).
      normalization: "softmax" (the authors'), "softplus" or "sigmoid"; see
        `normalize_weights`.
      rngs: the `nnx.Rngs` for parameter initialisation.
    """

    def __init__(self, in_channels, *, depth=4, features=64, normalization="softmax",
                 rngs: nnx.Rngs):
        self._set_common(in_channels, depth, features, normalization)
        spatial, spectral = (1, 3, 3), (3, 1, 1)
        convs = [_conv(1, features, spatial, rngs), _conv(features, features, spectral, rngs)]
        for _ in range(depth - 2):
            convs.append(_conv(features, features, spatial, rngs))
            convs.append(_conv(features, features, spectral, rngs))
        convs.append(_conv(features, 1, (3, 3, 3), rngs))
        self.convs = nnx.List(convs)

    def raw(self, y):
        """The raw output r (B, H, W, C) before `normalize_weights`."""
        self._check_input(y)
        x = jnp.transpose(y, (0, 3, 1, 2))[..., None]  # (B, C, H, W, 1)
        for conv in self.convs[:-1]:
            x = jax.nn.relu(conv(x))
        return jnp.transpose(self.convs[-1](x)[..., 0], (0, 2, 3, 1))


# Used for testing only.
DLWNetTiny = functools.partial(DLWNet, depth=3, features=4)
DLWNet3DTiny = functools.partial(DLWNet3D, depth=3, features=4)
