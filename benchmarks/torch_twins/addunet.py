"""Twin of ``jaxden.models.addunet`` (NCHW): same layers, padding, fusion and gates."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_twins.layers import ACTIVATIONS, group_norm

GROUPNORM_EPSILON = 1e-6  # nnx.GroupNorm's default, which jaxden's AddUNet keeps


class ConvBlock(nn.Module):
    """``num_convs`` x [conv k x k (padding k // 2 = "SAME") -> GroupNorm? -> activation]."""

    def __init__(self, in_features, features, kernel_size, num_convs, norm, activation):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_features if i == 0 else features, features, kernel_size,
                      padding=kernel_size // 2)
            for i in range(num_convs))
        self.norms = nn.ModuleList(
            group_norm(features, 8, GROUPNORM_EPSILON)
            for _ in range(num_convs if norm == "group" else 0))
        self.activation = activation

    def forward(self, x):
        act = ACTIVATIONS[self.activation]
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if len(self.norms):
                x = self.norms[i](x)
            x = act(x)
        return x


class AddUNet(nn.Module):
    """``jaxden.models.AddUNet`` with the same arguments (no ``rngs``; PyTorch's default
    initialisation except the gates, beta = softplus^-1(gate_init), and the head's zero bias).
    """

    def __init__(self, in_channels, *, out_channels=None, width=32, levels=3,
                 convs_per_block=2, skip="gated", gate="scalar", gate_init=1.0, residual=True,
                 fixed_resolution=False, kernel_sizes=None, norm="none", activation="relu",
                 decoder=True):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        kernel_sizes = (3,) * levels if kernel_sizes is None else tuple(kernel_sizes)
        self.levels, self.skip, self.residual = levels, skip, residual
        self.fixed_resolution, self.has_decoder = fixed_resolution, decoder

        def block(in_features, k):
            return ConvBlock(in_features, width, k, convs_per_block, norm, activation)

        self.stem = nn.Conv2d(in_channels, width, kernel_sizes[0],
                              padding=kernel_sizes[0] // 2)
        self.encoder = nn.ModuleList(block(width, k) for k in kernel_sizes)
        if not fixed_resolution:
            self.bottleneck = block(width, kernel_sizes[-1])
        if not decoder:
            return
        if not fixed_resolution:
            self.upsample = nn.ModuleList(nn.ConvTranspose2d(width, width, 2, stride=2)
                                          for _ in range(levels))
        fused = 2 * width if skip == "concat" else width
        self.decoder = nn.ModuleList(block(fused, k) for k in kernel_sizes)
        self.head = nn.Conv2d(width, out_channels, 1)
        nn.init.zeros_(self.head.bias)
        if skip == "gated":
            shape = (levels,) if gate == "scalar" else (levels, width)
            beta0 = math.log(math.expm1(gate_init))  # softplus^-1(gate_init)
            self.beta = nn.Parameter(torch.full(shape, beta0, dtype=torch.float32))

    def gates(self):
        if self.skip == "gated":
            return F.softplus(self.beta)
        if self.skip == "add":
            return torch.ones(self.levels)
        raise ValueError(f"skip={self.skip!r} has no gates")

    def encode(self, y):
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
                x = F.max_pool2d(x, 2, 2)
        if not self.fixed_resolution:
            x = self.bottleneck(x)
        return x, tuple(skips)

    def decode(self, features, skips, y, gate_scale=None):
        gains = None
        if self.skip in ("gated", "add"):
            gains = self.gates()
            if gate_scale is not None:
                gains = gains * gate_scale.reshape((self.levels,) + (1,) * (gains.ndim - 1))
        u = features
        for level in reversed(range(self.levels)):
            if not self.fixed_resolution:
                u = self.upsample[level](u)
            u = self.decoder[level](self._fuse(u, skips[level], gains, level))
        out = self.head(u[:, :, : y.shape[2], : y.shape[3]])
        return y - out if self.residual else out

    def forward(self, y, gate_scale=None):
        """Denoise y of shape (B, C, H, W)."""
        features, skips = self.encode(y)
        return self.decode(features, skips, y, gate_scale)

    def _pad(self, y):
        if self.fixed_resolution:
            return y
        multiple = 2**self.levels
        pad_h, pad_w = -y.shape[2] % multiple, -y.shape[3] % multiple
        if pad_h or pad_w:  # reflect at the bottom and right, as jnp.pad(mode="reflect")
            y = F.pad(y, (0, pad_w, 0, pad_h), mode="reflect")
        return y

    def _fuse(self, u, s, gains, level):
        if self.skip == "concat":
            return torch.cat([u, s], dim=1)
        if self.skip == "none":
            return u
        gain = gains[level]
        return u + (gain[:, None, None] if gain.ndim else gain) * s
