"""Twin of ``jaxden.models.dlwnet.DLWNet`` (the 2-D weight net, NCHW)."""

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_FLOOR = 1e-4


def normalize_weights(raw, normalization="softmax"):
    """W from the raw output, as ``jaxden.models.dlwnet.normalize_weights``."""
    if normalization == "softmax":
        flat = raw.flatten(1)
        return (torch.softmax(flat, dim=1) * flat.shape[1]).view_as(raw) + WEIGHT_FLOOR
    if normalization == "softplus":
        return F.softplus(raw) + WEIGHT_FLOOR
    return 2.0 * torch.sigmoid(raw) + WEIGHT_FLOOR


class DLWNet(nn.Module):
    """``depth`` 3x3 convs (padding 1), ReLU between them, then ``normalize_weights``."""

    def __init__(self, in_channels, *, depth=5, features=64, normalization="softmax"):
        super().__init__()
        widths = [in_channels] + [features] * (depth - 1) + [in_channels]
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1)
                                   for i in range(depth))
        self.normalization = normalization

    def raw(self, y):
        x = y
        for conv in self.convs[:-1]:
            x = F.relu(conv(x))
        return self.convs[-1](x)

    def forward(self, y):
        return normalize_weights(self.raw(y), self.normalization)
