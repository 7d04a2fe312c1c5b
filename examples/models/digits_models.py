"""Plug-in models for regtune: put this file in REGTUNE_MODELS_DIR and name ``digits_models:resnet``.

A factory is called as ``factory(input_shape, n_outputs, **args)`` and returns a ``torch.nn.Module``
that maps a batch of shape ``(N, *input_shape)`` to ``(N, n_outputs)``. regtune sets the ``p`` of
its dropout modules (the dropout knob) and puts L1/L2 on its weights (never biases or batch norm).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu: the shape stays the same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class SmallResNet(nn.Module):
    """A stem, residual blocks with spatial dropout between them, global pooling, dropout, a linear head."""

    def __init__(self, image: tuple[int, int, int], n_outputs: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.image = image
        self.stem = nn.Sequential(nn.Conv2d(image[0], channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.spatial_dropout = nn.Dropout2d(0.0)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.0)
        self.head = nn.Linear(channels, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image)
        x = self.spatial_dropout(self.blocks(self.stem(x)))
        return self.head(self.dropout(self.pool(x).flatten(1)))


def _image(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) from an image shape, or a square one-channel image from flat features (8x8 digits)."""
    if len(input_shape) == 3:
        return (input_shape[0], input_shape[1], input_shape[2])
    side = math.isqrt(math.prod(input_shape))
    if side * side != math.prod(input_shape):
        raise ValueError(f"needs (C, H, W) images or a square number of features, but got {input_shape}")
    return (1, side, side)


def resnet(input_shape: tuple[int, ...], n_outputs: int, channels: int = 16, blocks: int = 2) -> nn.Module:
    """Small residual CNN with batch norm, spatial dropout and dropout (flat square inputs become 1xHxW)."""
    return SmallResNet(_image(input_shape), n_outputs, channels, blocks)


def mlp_bn(input_shape: tuple[int, ...], n_outputs: int, hidden: int = 128) -> nn.Module:
    """Two hidden layers with batch norm, each followed by dropout."""
    n_in = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(),
                         nn.Linear(hidden, n_outputs))


def convnet(input_shape: tuple[int, ...], n_outputs: int, channels: int = 16, hidden: int = 64) -> nn.Module:
    """Two conv blocks with spatial dropout, a dense layer with dropout; no batch norm, so trials batch (vmap)."""
    image = _image(input_shape)
    side = image[1] // 4
    return nn.Sequential(
        nn.Unflatten(1, image) if len(input_shape) == 1 else nn.Identity(),
        nn.Conv2d(image[0], channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.0),
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.0),
        nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Dropout(0.0),
        nn.Linear(hidden, n_outputs))
