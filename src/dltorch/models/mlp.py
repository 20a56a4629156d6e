"""Fully connected classifiers: the course's MLP (and, with no hidden layers, softmax regression)."""

from __future__ import annotations

from math import prod

from torch import nn

from dltorch.models.registry import register_model


@register_model
def mlp(
    in_shape: tuple[int, ...], num_outputs: int, hidden: list[int] = [512, 512], dropout: float = 0.0,  # noqa: B006
    zero_init: bool = False,
) -> nn.Module:
    """zero_init: the line (no hidden layer) starts from w = b = 0, as the course's AdaGrad lesson; hidden layers
    started at zero would stay identical, hence refused."""
    if zero_init and hidden:
        raise ValueError("zero_init: only for a line (hidden: []); zero hidden units would all stay identical")
    layers: list[nn.Module] = [nn.Flatten()]
    width = prod(in_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_outputs))
    if zero_init:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)
