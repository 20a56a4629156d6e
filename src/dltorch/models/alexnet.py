"""AlexNet (Krizhevsky et al., 2012) at 28x28 grayscale scale.

Kept: a large early receptive field (a 5x5 first convolution, where the original's 11x11 stride 4 would leave a
28x28 image 6 pixels wide), five convolutions with ReLU, overlapping 3x3 stride-2 max pooling after the first,
second and fifth convolutions, and a classifier of two hidden fully connected layers with dropout before each.
Scaled down: widths (32-64-128-128-96 instead of 96-256-384-384-256) and hidden units (512 instead of 4096).
Replaced: local response normalization by BatchNorm after every convolution (it trains faster and more stably;
LRN is not in later networks). No two-GPU split of the channels.
"""

from __future__ import annotations

from torch import nn

from dltorch.models.registry import register_model


def _conv(inputs: int, outputs: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True)]


def _pool() -> nn.Module:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # overlapping, as the original; 28 -> 14 -> 7 -> 4


@register_model
def alexnet(in_shape: tuple[int, ...], num_outputs: int, widths: list[int] = [32, 64, 128, 128, 96],  # noqa: B006
            hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """conv5x5 -> pool -> conv5x5 -> pool -> conv3x3 x3 -> pool -> dropout-FC-dropout-FC-classes."""
    if len(widths) != 5:
        raise ValueError(f"widths must list the 5 convolutions' channels, not {len(widths)}")
    channels, height, width = in_shape
    side = lambda n: (n - 1) // 2 + 1  # noqa: E731  one stride-2 pool with padding 1
    flat = widths[4] * side(side(side(height))) * side(side(side(width)))
    return nn.Sequential(
        *_conv(channels, widths[0], 5), _pool(),
        *_conv(widths[0], widths[1], 5), _pool(),
        *_conv(widths[1], widths[2], 3), *_conv(widths[2], widths[3], 3), *_conv(widths[3], widths[4], 3), _pool(),
        nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_outputs),
    )
