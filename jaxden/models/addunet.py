"""Additive U-Net: a U-Net whose skips are added, optionally through learnable gates.

Lakkavalli & Sinha, "Multi-Task Learning with Additive U-Net for Image Denoising and
Classification" (arXiv 2602.12649) replace the U-Net's concatenated skips by gated additive
fusion, u + softplus(beta_l) * s_l, which keeps the same number of channels C at every level and
adds one parameter per skip. The gate parameterisation, the fixed-resolution variant with a
subtractive residual encoder and the kernel schedules come from the companion paper,
Lakkavalli, "Rethinking Skip Connections: Additive U-Net for Robust and Interpretable
Denoising" (arXiv 2601.13208), as summarised by its themoonlight review.

Layout is NHWC with images in [0, 1].
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxden.models.conv import ConvTranspose, conv_function, max_pool

SKIPS = ("gated", "add", "concat", "none")
GATES = ("scalar", "channel")
NORMS = ("none", "group")
ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu}


def _check_choice(name, value, choices):
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not valid; choose one of {valid}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class ConvBlock(nnx.Module):
    """`num_convs` x [conv k x k ("SAME") -> norm -> activation].

    The first conv maps `in_features` to `features`, the others keep `features`. With
    norm="group" the GroupNorm uses gcd(features, 8) groups (8 groups when features is a
    multiple of 8).
    """

    def __init__(self, in_features, features, kernel_size, num_convs, norm, activation, *, rngs):
        self.convs = nnx.List(
            nnx.Conv(in_features if i == 0 else features, features, (kernel_size, kernel_size),
                     conv_general_dilated=conv_function("auto"), rngs=rngs)
            for i in range(num_convs)
        )
        self.norms = nnx.List(
            nnx.GroupNorm(features, num_groups=math.gcd(features, 8), rngs=rngs)
            for _ in range(num_convs if norm == "group" else 0)
        )
        self.activation = activation

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = act(x)
        return x


class AddUNet(nnx.Module):
    """Additive U-Net denoiser (Lakkavalli & Sinha, arXiv 2602.12649; arXiv 2601.13208).

    Every level has the same width C ("fixed feature width across depth"). Skip s_l of level l
    (0 is the shallowest, highest-resolution level) is fused into the decoder stream u just
    before that level's decoder block:

    - "gated": u + softplus(beta_l) * s_l, beta_l a learnable scalar per skip (gate="scalar")
      or a vector of shape (C,) (gate="channel"); beta_l starts at softplus^-1(gate_init).
    - "add": u + s_l, no parameter.
    - "concat": [u, s_l] on the channel axis, the standard U-Net baseline. The decoder block
      after fusion then takes 2C channels, so concat has sum_l k_l^2 * C^2 more weights than
      add (one first conv per level with twice the input channels).
    - "none": u alone.

    Standard variant (fixed_resolution=False): stem conv (in_channels -> C); for each level a
    conv block whose output is s_l, then 2x2 max-pooling (parameter-free, so the fusion modes
    differ only in their gates or the concat convs); a bottleneck block; then for each level,
    deepest first, a 2x2 stride-2 transposed conv (C -> C), fusion with s_l and a conv block;
    a 1x1 conv head (C -> out_channels, zero bias). Inputs whose height or width is not a
    multiple of 2^levels are reflect-padded at the bottom and right, and the output is cropped
    back, so images of any size can be denoised whole.

    Fixed-resolution variant (fixed_resolution=True, arXiv 2601.13208): no down- or
    up-sampling. After the stem, a subtractive residual encoder r_i = Enc_i(x_i),
    x_{i+1} = x_i - r_i caches r_i as the skip of level i; the decoder starts from u_0 = x_L
    and computes u_{j+1} = Dec_j(fuse(u_j, r_{L-1-j})); then the 1x1 head.

    With residual=True the network predicts the noise and the model returns y - net(y)
    (DnCNN-style); otherwise it returns net(y).

    Args:
      in_channels: channels of the input image (1 gray, 3 RGB).
      out_channels: channels of the output; defaults to in_channels (and must equal it when
        residual=True).
      width: the channel count C at every level.
      levels: the number of levels L (skips); the standard variant downsamples L times.
      convs_per_block: convs in each encoder, bottleneck and decoder block.
      skip: "gated", "add", "concat" or "none".
      gate: "scalar" (one gate per skip) or "channel" (one per skip and channel); used by
        skip="gated".
      gate_init: the initial gate value softplus(beta), > 0.
      residual: predict the noise and return y - net(y).
      fixed_resolution: the companion paper's variant without down/up-sampling.
      kernel_sizes: odd kernel size per level, shallowest first (the companion paper's
        "kernel schedules"), used by the level's encoder and decoder blocks; the stem uses the
        first and the bottleneck the last. Defaults to 3 everywhere.
      norm: "none" or "group" (GroupNorm after every conv of a block).
      activation: "relu" or "gelu".
      decoder: False builds the stem and encoder (and bottleneck) only, the shared encoder of
        a classifier-only baseline; `encode` works, `decode` and `__call__` do not.
      rngs: the `nnx.Rngs` for parameter initialisation.
    """

    def __init__(
        self,
        in_channels,
        *,
        out_channels=None,
        width=32,
        levels=3,
        convs_per_block=2,
        skip="gated",
        gate="scalar",
        gate_init=1.0,
        residual=True,
        fixed_resolution=False,
        kernel_sizes=None,
        norm="none",
        activation="relu",
        decoder=True,
        rngs: nnx.Rngs,
    ):
        out_channels = in_channels if out_channels is None else out_channels
        for name, value in [("in_channels", in_channels), ("out_channels", out_channels),
                            ("width", width), ("levels", levels),
                            ("convs_per_block", convs_per_block)]:
            _check_positive_int(name, value)
        _check_choice("skip", skip, SKIPS)
        _check_choice("gate", gate, GATES)
        _check_choice("norm", norm, NORMS)
        _check_choice("activation", activation, tuple(ACTIVATIONS))
        if not gate_init > 0:
            raise ValueError(f"gate_init must be > 0 (a softplus value), got {gate_init!r}")
        if residual and out_channels != in_channels:
            raise ValueError(
                f"residual=True returns y - net(y), so out_channels ({out_channels}) must equal "
                f"in_channels ({in_channels})")
        kernel_sizes = (3,) * levels if kernel_sizes is None else tuple(kernel_sizes)
        if len(kernel_sizes) != levels or not all(
                isinstance(k, int) and k > 0 and k % 2 == 1 for k in kernel_sizes):
            raise ValueError(
                f"kernel_sizes must hold {levels} odd positive integers (one per level), "
                f"got {kernel_sizes!r}")

        self.levels = levels
        self.skip = skip
        self.residual = residual
        self.fixed_resolution = fixed_resolution
        self.has_decoder = decoder
        block = functools.partial(ConvBlock, num_convs=convs_per_block, norm=norm,
                                  activation=activation, rngs=rngs)
        self.stem = nnx.Conv(in_channels, width, (kernel_sizes[0],) * 2,
                             conv_general_dilated=conv_function("auto"), rngs=rngs)
        self.encoder = nnx.List(block(width, width, k) for k in kernel_sizes)
        if not fixed_resolution:
            self.bottleneck = block(width, width, kernel_sizes[-1])
        if not decoder:
            return
        if not fixed_resolution:
            self.upsample = nnx.List(
                ConvTranspose(width, width, (2, 2), strides=(2, 2), padding="VALID",
                                  rngs=rngs)
                for _ in range(levels))
        fused = 2 * width if skip == "concat" else width
        self.decoder = nnx.List(block(fused, width, k) for k in kernel_sizes)
        self.head = nnx.Conv(width, out_channels, (1, 1), bias_init=nnx.initializers.zeros,
                             conv_general_dilated=conv_function("auto"), rngs=rngs)
        if skip == "gated":
            shape = (levels,) if gate == "scalar" else (levels, width)
            beta0 = np.log(np.expm1(np.float64(gate_init)))  # softplus^-1(gate_init)
            self.beta = nnx.Param(jnp.full(shape, beta0, jnp.float32))

    def gates(self):
        """Effective gate values by level, shallowest first.

        Shape (L,) for scalar gates, (L, C) for channel gates: softplus(beta). Ones of shape
        (L,) for skip="add". Raises ValueError for "concat" and "none", which have no gates,
        and for an encoder-only model (decoder=False).
        """
        if not self.has_decoder:
            raise ValueError("this AddUNet was built with decoder=False: it has no skips")
        if self.skip == "gated":
            return jax.nn.softplus(self.beta[...])
        if self.skip == "add":
            return jnp.ones((self.levels,), jnp.float32)
        raise ValueError(f"skip={self.skip!r} has no gates; only 'gated' and 'add' skips do")

    def encode(self, y):
        """Stem and encoder: returns (deepest features, skips), skips shallowest first.

        In the standard variant y is first reflect-padded to a multiple of 2^L, and the
        deepest features are the bottleneck output, shape (B, ceil(H/2^L), ceil(W/2^L), C).
        In the fixed-resolution variant they are x_L, shape (B, H, W, C).
        """
        chex.assert_rank(y, 4)
        x = self.stem(self._pad(y))
        skips = []
        for block in self.encoder:
            if self.fixed_resolution:
                r = block(x)
                skips.append(r)
                x = x - r
            else:
                x = block(x)
                skips.append(x)
                x = max_pool(x, 2)
        if not self.fixed_resolution:
            x = self.bottleneck(x)
        return x, tuple(skips)

    def decode_features(self, features, skips, y, gate_scale=None):
        """Decoder without the 1x1 head: the last decoder block's output, (B, H, W, C) for
        the input y given to `encode` (padding cropped).

        `gate_scale`, an optional (L,) array, multiplies each level's effective gate at
        inference ("gated" and "add" skips only; 0 switches a skip off).
        """
        chex.assert_rank(y, 4)
        chex.assert_equal(len(skips), self.levels)
        if not self.has_decoder:
            raise ValueError("this AddUNet was built with decoder=False (an encoder only)")
        gains = self._gains(gate_scale)
        u = features
        for level in reversed(range(self.levels)):
            if not self.fixed_resolution:
                u = self.upsample[level](u)
            u = self.decoder[level](self._fuse(u, skips[level], gains, level))
        return u[:, : y.shape[1], : y.shape[2], :]

    def head_output(self, decoded, y):
        """The 1x1 head on `decode_features`' output: the denoised image (y - noise estimate
        with residual=True)."""
        out = self.head(decoded)
        return y - out if self.residual else out

    def decode(self, features, skips, y, gate_scale=None):
        """Decoder and head: returns the denoised image for the input y given to `encode`.

        y is needed to crop the padding and, with residual=True, to subtract the predicted
        noise. `gate_scale` is as in `decode_features`.
        """
        return self.head_output(self.decode_features(features, skips, y, gate_scale), y)

    def __call__(self, y, gate_scale=None):
        """Denoise a batch y of shape (B, H, W, in_channels), any H and W."""
        features, skips = self.encode(y)
        return self.decode(features, skips, y, gate_scale)

    def _pad(self, y):
        if self.fixed_resolution:
            return y
        multiple = 2**self.levels
        pad_h, pad_w = -y.shape[1] % multiple, -y.shape[2] % multiple
        return jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")

    def _gains(self, gate_scale):
        if self.skip in ("concat", "none"):
            if gate_scale is not None:
                raise ValueError(
                    f"gate_scale applies to 'gated' and 'add' skips only, not skip={self.skip!r}")
            return None
        gains = self.gates()
        if gate_scale is not None:
            chex.assert_shape(gate_scale, (self.levels,))
            gains = gains * jnp.reshape(gate_scale, (self.levels,) + (1,) * (gains.ndim - 1))
        return gains

    def _fuse(self, u, s, gains, level):
        if self.skip == "concat":
            return jnp.concatenate([u, s], axis=-1)
        if self.skip == "none":
            return u
        return u + gains[level] * s


# Used for testing only.
AddUNetTiny = functools.partial(AddUNet, width=4, levels=2, convs_per_block=1)
