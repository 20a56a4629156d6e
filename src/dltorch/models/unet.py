"""The course's UNet (Ronneberger et al., 2015): a contracting path of double convolutions and max pooling, an
expanding path of transposed convolutions, skip connections by concatenation and a 1x1 head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dltorch.models.registry import register_model

# Four poolings halve a side four times: sides that are multiples of 16 keep every skip the up path's size.
MAX_LEVELS = 4


class DoubleConv(nn.Module):
    """(3x3 conv, BatchNorm, ReLU) twice; the convolutions need no bias in front of BatchNorm."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, features: list[int]) -> None:
        super().__init__()
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        self.pool = nn.MaxPool2d(2, 2)
        channels = in_channels
        for width in features:
            self.downs.append(DoubleConv(channels, width))
            channels = width
        for width in reversed(features):
            self.ups.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.ups.append(DoubleConv(width * 2, width))
        self.bottleneck = DoubleConv(features[-1], features[-1] * 2)
        self.head = nn.Conv2d(features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for index in range(0, len(self.ups), 2):
            x = self.ups[index](x)
            skip = skips[-1 - index // 2]
            if x.shape[2:] != skip.shape[2:]:  # a side that was odd before pooling: match the skip's size
                x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = self.ups[index + 1](torch.cat((skip, x), dim=1))
        return self.head(x)


@register_model(tasks=("segmentation",))
def unet(in_shape: tuple[int, ...], num_outputs: int, features: list[int] = [16, 32, 64, 128]) -> nn.Module:  # noqa: B006
    """in_shape is (channels, height, width); num_outputs: output channels of logits (1 for a binary mask)."""
    if not 1 <= len(features) <= MAX_LEVELS or min(features) < 1:
        raise ValueError(f"features must list 1 to {MAX_LEVELS} positive widths (the exported graph takes sides "
                         f"that are multiples of {2**MAX_LEVELS}), not {features}")
    return UNet(in_shape[0], num_outputs, list(features))
