"""Twin of ``jaxden.models.energy.GradResNet`` (NCHW)."""

import torch
from torch import nn

from benchmarks.torch_twins.layers import SameConv2d, gelu, group_norm

SIGMA_OFFSET = 1e-3
GROUPNORM_EPSILON = 1e-5


class PreActBlock(nn.Module):
    """GroupNorm -> GELU -> conv 3x3 (stride) -> GroupNorm -> GELU -> conv 3x3, + shortcut
    (identity, or 1x1 conv with the stride); "SAME" padding as XLA's."""

    def __init__(self, in_features, features, stride, groups):
        super().__init__()
        self.norm1 = group_norm(in_features, groups, GROUPNORM_EPSILON)
        self.conv1 = (nn.Conv2d(in_features, features, 3, padding=1) if stride == 1
                      else SameConv2d(in_features, features, 3, stride=stride))
        self.norm2 = group_norm(features, groups, GROUPNORM_EPSILON)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        if stride != 1 or in_features != features:
            self.shortcut = SameConv2d(in_features, features, 1, stride=stride)
        else:
            self.shortcut = None

    def forward(self, x):
        h = self.conv1(gelu(self.norm1(x)))
        h = self.conv2(gelu(self.norm2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class GradResNet(nn.Module):
    """``jaxden.models.GradResNet`` with the same arguments (``conv_impl`` and ``rngs``
    aside): per-class scores f(y) of shape (B, num_classes) for y (B, C, H, W)."""

    def __init__(self, in_channels, *, num_classes, widths=(32, 64, 128), blocks_per_stage=2,
                 groups=8, sigma_conditioning=False):
        super().__init__()
        widths = tuple(widths)
        self.sigma_conditioning = sigma_conditioning
        self.stem = nn.Conv2d(in_channels + int(sigma_conditioning), widths[0], 3, padding=1)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                PreActBlock(widths[max(s - 1, 0)] if b == 0 else width, width,
                            2 if (s > 0 and b == 0) else 1, groups)
                for b in range(blocks_per_stage))
            for s, width in enumerate(widths))
        self.readout_norms = nn.ModuleList(group_norm(w, groups, GROUPNORM_EPSILON)
                                           for w in widths)
        self.head = nn.Linear(sum(widths), num_classes)

    def features(self, y, sigma=None):
        x = self.stem(self._with_sigma_channel(y, sigma))
        maps = []
        for stage in self.stages:
            for block in stage:
                x = block(x)
            maps.append(x)
        return tuple(maps)

    def forward(self, y, sigma=None):
        pooled = [gelu(norm(x)).mean(dim=(2, 3))
                  for norm, x in zip(self.readout_norms, self.features(y, sigma))]
        return self.head(torch.cat(pooled, dim=-1))

    def _with_sigma_channel(self, y, sigma):
        if not self.sigma_conditioning:
            return y
        sigma = torch.as_tensor(sigma, dtype=y.dtype)
        code = torch.log(sigma.expand(y.shape[0]) + SIGMA_OFFSET)
        channel = torch.zeros_like(y[:, :1]) + code[:, None, None, None]
        return torch.cat([y, channel], dim=1)

