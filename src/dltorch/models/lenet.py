"""LeNet-5 (LeCun et al., 1998) as the course builds it, padded so 28x28 inputs keep its 32x32 geometry."""

from __future__ import annotations

from torch import nn

from dltorch.models.registry import register_model


@register_model
def lenet5(in_shape: tuple[int, ...], num_outputs: int, activation: str = "relu", pool: str = "max") -> nn.Module:
    """conv 6 -> pool -> conv 16 -> pool -> 120-84-classes. The 1998 paper used sigmoid/tanh and average
    pooling (`activation: sigmoid`, `pool: avg`); ReLU and max pooling train faster and reach higher accuracy."""
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
    if activation not in act or pool not in pools:
        raise ValueError(f"activation must be one of {sorted(act)} and pool one of {sorted(pools)}")
    channels, height, width = in_shape
    flat = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
    return nn.Sequential(
        nn.Conv2d(channels, 6, kernel_size=5, padding=2), act[activation](), pools[pool](2),
        nn.Conv2d(6, 16, kernel_size=5), act[activation](), pools[pool](2),
        nn.Flatten(),
        nn.Linear(flat, 120), act[activation](),
        nn.Linear(120, 84), act[activation](),
        nn.Linear(84, num_outputs),
    )
