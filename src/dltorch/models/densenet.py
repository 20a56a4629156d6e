"""DenseNet-BC (Huang et al., 2017) at 28x28 grayscale scale, built from torchvision's dense block and transition.

Kept: dense blocks in which every layer (BN-ReLU-1x1 bottleneck to bn_size * growth_rate channels, BN-ReLU-3x3 to
growth_rate) reads the concatenation of the block's input and all earlier layers' outputs; transitions between
blocks (BN-ReLU-1x1 conv compressing the channels by `compression`, 2x2 average pool); a final BN-ReLU, global
average pooling and one linear classifier. Scaled down: a stem of one 3x3 convolution (2 * growth_rate channels)
and a max pool (28 -> 14) instead of the 7x7 stride-2 convolution and pool for 224 pixels, three blocks (at 14, 7
and 3 pixels) of 2, 6 and 6 layers, and a small growth rate (the CIFAR DenseNet-BC has 3 blocks and growth rate 12).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.densenet import _DenseBlock, _Transition

from dltorch.models.registry import register_model


@register_model
def densenet(in_shape: tuple[int, ...], num_outputs: int, growth_rate: int = 12,
             layers: list[int] = [2, 6, 6], bn_size: int = 4, compression: float = 0.5) -> nn.Module:  # noqa: B006
    """Block i has layers[i] dense layers; a transition follows every block but the last."""
    if not layers or min(layers) < 1 or not 0 < compression <= 1:
        raise ValueError(f"layers must list 1 or more dense layers per block and 0 < compression <= 1, "
                         f"not {layers} and {compression}")
    channels = 2 * growth_rate
    modules: list[nn.Module] = [nn.Conv2d(in_shape[0], channels, 3, padding=1, bias=False),
                                nn.MaxPool2d(3, stride=2, padding=1)]
    for index, count in enumerate(layers):
        modules.append(_DenseBlock(count, channels, bn_size, growth_rate, drop_rate=0.0))
        channels += count * growth_rate
        if index < len(layers) - 1:
            compressed = max(1, int(channels * compression))
            modules.append(_Transition(channels, compressed))
            channels = compressed
    modules += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(channels, num_outputs)]
    return nn.Sequential(*modules)
