"""fast_cnn: a network chosen for time to accuracy on a few CPU cores (issue 14), after airbench (Jordan, 2024).

airbench's CIFAR-10 network, scaled to 28x28 grayscale: a 3x3 stem convolution, then groups of (3x3 convolution,
2x2 max pool, BatchNorm, GELU, 3x3 convolution, BatchNorm, GELU): each group pools right after its first
convolution, so its second runs at a quarter of the pixels; global max pooling and one linear layer. No residual
connections: at this depth BatchNorm trains the plain stack. What makes it fast is the recipe in params.yaml
(one-cycle, label smoothing, crops and flips, mirror averaging at inference, bf16 where measured faster) as much as
the network.
"""

from __future__ import annotations

from torch import nn

from dltorch.models.registry import register_model


def conv_bn(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.GELU()]


@register_model
def fast_cnn(in_shape: tuple[int, ...], num_outputs: int, stem: int = 16,
             widths: list[int] = [32, 64, 128]) -> nn.Module:  # noqa: B006
    """A stem of `stem` channels, then one group per width; each group halves the resolution."""
    channels, height, side = in_shape
    if not widths or min(widths) < 1 or stem < 1 or min(height, side) >> len(widths) == 0:
        raise ValueError(f"widths must list 1 to {min(height, side).bit_length() - 1} positive group widths and stem "
                         f"be positive, not {widths} and {stem}")
    layers: list[nn.Module] = conv_bn(channels, stem)
    channels = stem
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(width),
                   nn.GELU(), *conv_bn(width, width)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs))
