"""Fully connected classifiers: the course's MLP (and, with no hidden layers, softmax regression)."""

from __future__ import annotations

from math import prod

from torch import nn

from dltorch.models.registry import register_model


@register_model
def mlp(
    in_shape: tuple[int, ...], num_classes: int, hidden: list[int] = [512, 512], dropout: float = 0.0  # noqa: B006
) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = prod(in_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
