"""Recurrent forecasters: an LSTM (or GRU, or plain tanh RNN) reads a window and predicts the next values."""

from __future__ import annotations

import torch
from torch import nn

from dltorch.models.registry import register_model

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# Its export with a dynamic length (dltorch/onnx_rnn.py) relies on private APIs of this torch release: params that
# use this architecture are refused at load on any other (config.py), before anything trains.
EXPORT_TORCH = "2.14"


def unsupported_torch(version: str | None = None) -> str | None:
    """Why this torch cannot export recurrent layers with a dynamic length, or None if it can."""
    version = version or torch.__version__
    if version == EXPORT_TORCH or version.startswith(EXPORT_TORCH + "."):
        return None
    return (f"the recurrent export (dltorch/onnx_rnn.py) relies on private torch APIs of torch "
            f"{EXPORT_TORCH}.x; this is torch {version}")


class Forecaster(nn.Module):
    """(N, steps, features) -> (N, horizon): the last step's hidden state through a linear head.

    Any number of steps works, so the exported graph takes windows of any length."""

    def __init__(self, cell: str, features: int, hidden: int, layers: int, dropout: float, horizon: int) -> None:
        super().__init__()
        # nn.LSTM applies dropout between stacked layers only; with one layer it would only warn
        self.rnn = CELLS[cell](features, hidden, num_layers=layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@register_model(tasks=("sequence",))
def lstm(in_shape: tuple[int, ...], num_outputs: int, cell: str = "lstm", hidden: int = 64, layers: int = 2,
         dropout: float = 0.0) -> nn.Module:
    """in_shape is (steps, features); num_outputs is the horizon: the number of values predicted."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, not '{cell}'")
    if hidden < 1 or layers < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError("hidden and layers must be at least 1 and dropout in [0, 1)")
    if len(in_shape) != 2:
        raise ValueError(f"in_shape must be (steps, features), not {tuple(in_shape)}")
    return Forecaster(cell, in_shape[-1], hidden, layers, dropout, num_outputs)
