"""Layers shared by the twins: XLA's "SAME" padding and jaxden's activations."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def gelu(x: torch.Tensor) -> torch.Tensor:
    """``jax.nn.gelu``'s default: the tanh approximation."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"relu": F.relu, "gelu": gelu}


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) of XLA's "SAME" padding (``lax.padtype_to_pads``)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with XLA's "SAME" padding, computed for each input size (asymmetric for
    stride 2 on even sizes: (0, 1) for a 3x3 window, where ``padding=1`` would pad (1, 1))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, x):
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = same_pads(x.shape[-2], kh, sh)
        left, right = same_pads(x.shape[-1], kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def group_norm(features: int, groups: int, eps: float) -> nn.GroupNorm:
    """``nnx.GroupNorm(features, num_groups=gcd(features, groups), epsilon=eps)``."""
    return nn.GroupNorm(math.gcd(features, groups), features, eps=eps)
