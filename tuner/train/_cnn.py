"""The built-in CNN for image-shaped examples (C, H, W): conv blocks with spatial dropout, then dense layers.

Each conv block is conv, optional batch norm, the activation, 2x2 max pooling (while the image is at
least 2x2) and ``Dropout2d``, which drops whole feature maps: neighbouring pixels are too correlated
for element-wise dropout to regularize a conv layer. The dense layers use ordinary dropout. The
dropout modules' rates are set like a plug-in's (``PluginModel``), one per block with ``per_layer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tuner.train._models import _ACTIVATIONS

__all__ = ["CNN"]


class CNN(nn.Module):
    """Conv blocks (conv, batch norm, activation, pooling, Dropout2d), then linear layers with Dropout."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], kernel: int, hidden: Sequence[int],
                 n_out: int, activation: str = "relu", batch_norm: bool = False) -> None:
        super().__init__()
        c, h, w = (int(d) for d in input_shape)
        blocks: list[nn.Module] = []
        for ch in channels:
            pool = h >= 2 and w >= 2
            blocks.append(nn.Sequential(
                nn.Conv2d(c, ch, kernel, padding=kernel // 2),
                nn.BatchNorm2d(ch) if batch_norm else nn.Identity(),
                _ACTIVATIONS[activation](),
                nn.MaxPool2d(2) if pool else nn.Identity(),
                nn.Dropout2d(0.0),
            ))
            c, h, w = ch, (h // 2 if pool else h), (w // 2 if pool else w)
        self.features = nn.Sequential(*blocks)
        dense: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for units in hidden:
            dense += [nn.Linear(width, units), nn.BatchNorm1d(units) if batch_norm else nn.Identity(),
                      _ACTIVATIONS[activation](), nn.Dropout(0.0)]
            width = units
        self.dense = nn.Sequential(*dense)
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.dense(self.features(x)))
        return out
