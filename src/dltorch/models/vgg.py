"""VGG (Simonyan and Zisserman, 2015) at 28x28 grayscale scale.

Kept: stages of 3x3 convolutions (padding 1) separated by 2x2 max pooling, the width doubling from one stage to the
next, and a classifier of two hidden fully connected layers with dropout. Added: BatchNorm after every convolution
(torchvision's vgg*_bn; the 2015 networks were trained without it, in stages). Scaled down: four stages (28, 14, 7,
3 pixels) starting at 32 channels instead of five starting at 64, the VGG-11 pattern of convolutions per stage
(1, 1, 2, 2), and 256 hidden units instead of 4096.
"""

from __future__ import annotations

from torch import nn

from dltorch.models.registry import register_model


@register_model
def vgg(in_shape: tuple[int, ...], num_outputs: int, width: int = 32, convs: list[int] = [1, 1, 2, 2],  # noqa: B006
        hidden: int = 256, dropout: float = 0.5) -> nn.Module:
    """Stage i has convs[i] 3x3 convolutions of width * 2**i channels, then a 2x2 max pool."""
    channels, height, side = in_shape
    if not convs or min(convs) < 1 or min(height, side) >> len(convs) == 0:
        most = min(height, side).bit_length() - 1
        raise ValueError(f"convs must list 1 or more convolutions per stage, at most {most} stages for "
                         f"{height}x{side} images, not {convs}")
    layers: list[nn.Module] = []
    for stage, count in enumerate(convs):
        for _ in range(count):
            layers += [nn.Conv2d(channels, width << stage, 3, padding=1, bias=False), nn.BatchNorm2d(width << stage),
                       nn.ReLU(inplace=True)]
            channels = width << stage
        layers.append(nn.MaxPool2d(2))
        height, side = height // 2, side // 2
    return nn.Sequential(
        *layers, nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(channels * height * side, hidden), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_outputs),
    )
