"""A small ResNet for 28x28 images: a stem, three stages of basic residual blocks with BatchNorm, global pooling."""

from __future__ import annotations

import torch
from torch import nn

from dltorch.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (He et al., 2016); a 1x1 projection when the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(outputs))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


@register_model
def resnet(
    in_shape: tuple[int, ...], num_outputs: int, widths: list[int] = [32, 64, 128], blocks: list[int] = [1, 1, 1],  # noqa: B006
    dropout: float = 0.0,
) -> nn.Module:
    """Stage i has blocks[i] blocks of widths[i] channels; every stage after the first halves the resolution."""
    if len(widths) != len(blocks) or not widths:
        raise ValueError("widths and blocks must be non-empty lists of the same length")
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], widths[0], 3, padding=1, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        for index in range(count):
            layers.append(BasicBlock(channels, width, stride=2 if stage > 0 and index == 0 else 1))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs)]
    return nn.Sequential(*layers)
