"""Regression on a synthetic set (x -> y): data, loss, metrics, export spec, and the course's hand-written loops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data.regression import read_set
from dltorch.data.tensors import TensorData, split_validation
from dltorch.errors import DataError, ParamsError
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task


def _part(data: Path, split: str) -> TensorData:
    x, y = read_set(data).part(split)
    if len(x) == 0:
        raise DataError(f"{data}: no {split} rows")
    as_column = lambda a: torch.from_numpy(a).float().unsqueeze(1)  # noqa: E731
    return TensorData(as_column(x), as_column(y))


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[TensorData, TensorData | None]:
    return split_validation(_part(data, "train"), val_size, seed)


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    return _part(data, "test")


def model_inputs(train: TensorData, dataset: str) -> dict:
    return {"in_shape": (1,), "num_outputs": 1}  # one x in, one y out


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    return {}  # the loss (MSE) is the score


def single_linear(model: nn.Module) -> nn.Linear | None:
    """The model's only Linear layer when the model is a line y = w x + b, else None."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linear[0] if len(linear) == 1 and linear[0].weight.shape == (1, 1) else None


def _line_of(model: nn.Module, trainer: str) -> nn.Linear:
    linear = single_linear(model)
    if linear is None:
        raise ParamsError(f"train.trainer '{trainer}' fits a line: the model must be one Linear layer 1 -> 1")
    return linear


@torch.no_grad()
def _set_line(linear: nn.Linear, w: float, b: float) -> None:
    linear.weight.fill_(w)
    linear.bias.fill_(b)


def train_numpy_gd(model: nn.Module, data: Path, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The course's NumPy gradient descent (numpy_gd below); the fitted w and b are written into the model's
    Linear."""
    linear = _line_of(model, "numpy_gd")
    x, y = read_set(data).part("train")
    w, b, history = numpy_gd(x, y, cfg.lr, cfg.epochs)
    _set_line(linear, w, b)
    return history


def train_manual_autograd(model: nn.Module, data: Path, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The course's autograd loop with a hand-written update (manual_autograd below), written into the model's
    Linear."""
    linear = _line_of(model, "manual_autograd")
    x, y = read_set(data).part("train")
    column = lambda a: torch.from_numpy(a).float().unsqueeze(1)  # noqa: E731
    w, b, history = manual_autograd(column(x), column(y), cfg.lr, cfg.epochs, cfg.seed)
    _set_line(linear, w, b)
    return history


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close outputs: the same test MSE from ONNX as from torch, to float32 rounding."""
    torch_mse = float(np.mean((expected - targets) ** 2))
    onnx_mse = float(np.mean((actual - targets) ** 2))
    limit = 1e-5 * max(1.0, torch_mse)
    checks = {"mse_equal": {"measured": abs(onnx_mse - torch_mse), "limit": limit,
                            "passed": abs(onnx_mse - torch_mse) <= limit}}
    return checks, {"torch_mse": torch_mse, "onnx_mse": onnx_mse}


@torch.no_grad()
def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Test metrics of onnxruntime outputs, keyed as in evaluate's metrics.json (the int8 gate compares these)."""
    return {"test_mse": float(np.mean((outputs.reshape(targets.shape) - targets) ** 2))}


@torch.no_grad()
def report(run: Evaluation) -> tuple[dict, list[Path]]:
    """Train and test MSE; for a line also w, b and the closed-form least-squares w, b of the training rows."""
    model, test, loss, name, out_dir = run.model, run.test, run.loss, run.name, run.out_dir
    data = run.data
    x_train, y_train = read_set(data).part("train")
    train_pred = model(torch.from_numpy(x_train).float().unsqueeze(1)).squeeze(1).double().numpy()
    metrics: dict[str, Any] = {"train_mse": float(np.mean((train_pred - y_train) ** 2)), "test_mse": loss}
    lines = {name: (lambda xs: model(torch.from_numpy(xs).float().unsqueeze(1)).squeeze(1).numpy())}
    linear = single_linear(model)
    if linear is not None:
        w_ls, b_ls = least_squares(x_train, y_train)
        metrics.update(w=linear.weight.item(), b=linear.bias.item(), closed_form_w=w_ls, closed_form_b=b_ls)
        lines["least squares"] = lambda xs: w_ls * xs + b_ls
    if run.history and "w" in run.history[-1]:  # numpy's lesson fits in float64: its w, b, not the float32 Linear's
        w, b = run.history[-1]["w"], run.history[-1]["b"]
        metrics.update(w=w, b=b, train_mse=mse_loss(w, b, x_train, y_train))
    x_test, y_test = test.inputs.squeeze(1).numpy(), test.targets.squeeze(1).numpy()
    predicted = run.outputs.squeeze(1).numpy()
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.fit_over_points({"train": (x_train, y_train), "test": (x_test, y_test)}, lines,
                              f"{name}: fit (test MSE {loss:.4g})", out_dir / "predictions.png"),
        plots.predicted_vs_actual(y_test, predicted, f"{name}: test predicted vs actual", out_dir / "confusion.png"),
    ]
    _write_predictions(out_dir / "predictions.csv", y_test, predicted)
    return metrics, figures


def _write_predictions(path: Path, actual: np.ndarray, predicted: np.ndarray) -> None:
    write_csv(path, ["actual", "predicted"], ((float(a), float(p)) for a, p in zip(actual, predicted, strict=True)))



# The course's two hand-written linear-regression loops, kept as lessons beside the engine: `numpy_gd` spells out
# batch gradient descent (the loss, one step, the runner); `manual_autograd` lets autograd compute the gradients but
# updates w and b by hand under no_grad. Every other model, `nn.Linear` with SGD included, trains in engine.fit.
# Both return the engine's history format.


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
        started = time.perf_counter()
        loss = mse_loss(w, b, x, y)
        w, b = gradient_step(w, b, x, y, lr)
        # train_loss last: dvc.yaml's history plot draws a row's last field
        history.append({"epoch": iteration, "lr": lr, "w": w, "b": b, "seconds": time.perf_counter() - started,
                        "train_loss": loss})
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
        started = time.perf_counter()
        loss = ((w * x + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():  # the update itself must not become part of the graph
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
        history.append({"epoch": epoch, "lr": lr, "seconds": time.perf_counter() - started, "train_loss": loss.item()})
    return w.item(), b.item(), history


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The closed-form fit of y = w x + b, the answer gradient descent converges to."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    (w, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(w), float(b)

TASK = register_task(Task(
    name="regression", input_name="x", output_name="y", monitor=("val_loss", "min"), ranking=("test_mse", "min"),
    metrics={"test_mse": "min", "train_mse": "min"}, rankable=("test_mse",),
    dynamic_axes={0: ("batch", 1)},  # any batch; every other axis is the example's
    losses={"mse": lambda smoothing: nn.MSELoss()},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report,
    trainers={"numpy_gd": train_numpy_gd, "manual_autograd": train_manual_autograd},
))  # wrap: none, raw x in, so a linear model's weight and bias are the line's w and b
