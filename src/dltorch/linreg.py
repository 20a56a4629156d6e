"""The course's two hand-written linear-regression loops, kept as lessons beside the engine.

`numpy_gd` spells out batch gradient descent (the loss, one step, the runner); `manual_autograd` lets
autograd compute the gradients but updates w and b by hand under no_grad. Every other model, including
`nn.Linear` with SGD, trains in engine.fit. Both loops return the engine's history format.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def mse_loss(w: float, b: float, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((w * x + b - y) ** 2))


def gradient_step(w: float, b: float, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, float]:
    """One step of batch gradient descent on the MSE: d/dw = 2 mean(e x), d/db = 2 mean(e), e = wx + b - y."""
    error = w * x + b - y
    return w - lr * 2 * float(np.mean(error * x)), b - lr * 2 * float(np.mean(error))


def numpy_gd(x: np.ndarray, y: np.ndarray, lr: float, iterations: int) -> tuple[float, float, list[dict[str, Any]]]:
    """Run gradient descent from w = b = 0, in float64 as the course; a history row holds the loss at the start
    of its iteration and the w, b its step reached (the last row's are the fit the course prints)."""
    w, b = 0.0, 0.0
    history = []
    for iteration in range(1, iterations + 1):
        loss = mse_loss(w, b, x, y)
        w, b = gradient_step(w, b, x, y, lr)
        # train_loss last: dvc.yaml's history plot draws a row's last field
        history.append({"epoch": iteration, "lr": lr, "w": w, "b": b, "train_loss": loss})
    return w, b, history


def manual_autograd(x: torch.Tensor, y: torch.Tensor, lr: float, epochs: int,
                    seed: int) -> tuple[float, float, list[dict[str, Any]]]:
    """As the course: w = randn(1), b = zeros(1), both requiring grad; autograd's gradients applied by hand.
    The course's randn is unseeded; torch.manual_seed(seed) before it makes the run reproducible."""
    generator = torch.Generator().manual_seed(seed)  # the same stream as torch.manual_seed(seed)
    w = torch.randn(1, generator=generator).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    history = []
    for epoch in range(1, epochs + 1):
        loss = ((w * x + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():  # the update itself must not become part of the graph
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
        history.append({"epoch": epoch, "lr": lr, "train_loss": loss.item()})
    return w.item(), b.item(), history


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The closed-form fit of y = w x + b, the answer gradient descent converges to."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    (w, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(w), float(b)
