"""Sequence forecasting: windows of a series in, the next values out; data, loss, metrics, baselines, export spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data import sequence as series_data
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task

GOAL_RATIO = 0.2  # the goal: the model's test MSE at most this fraction of the last-value baseline's
PLOTTED_WINDOWS = 6


def _windows(data: Path, split: str) -> TensorData:
    series = series_data.read(data)
    part = series.part(split)
    inputs, targets = series_data.windows(part, series.spec.window, series.spec.horizon)
    if len(inputs) == 0:
        raise DataError(f"{data / series_data.SERIES_FILE}: no {split} series")
    return TensorData(inputs, targets)


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[TensorData, TensorData | None]:
    """Windows of the training series; for validation (val_size > 0) at most val_size windows, a seeded sample of
    the validation series' windows: whole series are held out, so no validation window overlaps a training one."""
    train = _windows(data, "train")
    if val_size == 0:
        return train, None
    val = _windows(data, "val")
    if len(val) > val_size:
        val = val.subset(torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:val_size])
    return train, val


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    return _windows(data, "test")


def model_inputs(train: TensorData, dataset: str) -> dict:
    steps, features = train.inputs.shape[1:]
    return {"in_shape": (steps, features), "num_outputs": train.targets.shape[1]}  # the horizon


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Sums over the batch of each window's mean absolute error; the engine divides by the window count."""
    return {"mae": (outputs - targets).abs().mean(dim=1).sum().item()}


def baselines(inputs: np.ndarray, horizon: int, moving_average: int) -> dict[str, np.ndarray]:
    """Forecasts that need no model, for the same windows: repeat the last value; the moving average."""
    return {"last_value": series_data.last_value_forecast(inputs, horizon),
            "moving_average": series_data.moving_average_forecast(inputs, horizon, moving_average)}


def _mse(forecast: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((forecast.astype(np.float64) - targets) ** 2))


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close outputs: the same test MSE from ONNX as from torch, to float32 rounding."""
    torch_mse, onnx_mse = _mse(expected, targets), _mse(actual, targets)
    limit = 1e-5 * max(1.0, torch_mse)
    checks = {"mse_equal": {"measured": abs(onnx_mse - torch_mse), "limit": limit,
                            "passed": abs(onnx_mse - torch_mse) <= limit}}
    return checks, {"torch_mse": torch_mse, "onnx_mse": onnx_mse}


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Test metrics of onnxruntime outputs, keyed as in evaluate's metrics.json (the int8 gate compares these)."""
    return {"test_mse": _mse(outputs, targets)}


def other_shape(test: TensorData) -> tuple[torch.Tensor, torch.Tensor]:
    """Parity at a window length other than the export example's: the last three quarters of each of the first
    100 test windows, predicting the same steps."""
    steps = test.inputs.shape[1]
    return test.inputs[:100, steps // 4 :], test.targets[:100]


@torch.no_grad()
def report(run: Evaluation) -> tuple[dict, list[Path]]:
    """Test MSE and MAE, both baselines' MSE on the same windows and the model's ratio to each, the goal."""
    spec, name, out_dir = series_data.read(run.data).spec, run.name, run.out_dir
    inputs, targets, predicted = run.test.inputs.squeeze(-1).numpy(), run.test.targets.numpy(), run.outputs.numpy()
    guesses = baselines(inputs, spec.horizon, spec.moving_average)
    mse = _mse(predicted, targets)
    metrics: dict[str, Any] = {"test_mse": mse, "test_mae": float(np.mean(np.abs(predicted - targets))),
                               "test_windows": len(targets), "window": spec.window, "horizon": spec.horizon}
    for label, forecast in guesses.items():
        baseline = _mse(forecast, targets)
        metrics[f"baseline_{label}_mse"] = baseline
        metrics[f"mse_ratio_{label}"] = mse / baseline
    metrics.update(goal_mse_ratio_last_value=GOAL_RATIO, goal_met=metrics["mse_ratio_last_value"] <= GOAL_RATIO)
    shown = np.linspace(0, len(targets) - 1, PLOTTED_WINDOWS).astype(int)
    lines = {name: predicted[shown], **{label.replace("_", " "): f[shown] for label, f in guesses.items()}}
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.forecasts(inputs[shown], targets[shown], lines,
                        f"{name}: test forecasts (MSE {mse:.4g}, {metrics['mse_ratio_last_value']:.3f} x last value)",
                        out_dir / "predictions.png"),
        plots.predicted_vs_actual(targets.ravel(), predicted.ravel(), f"{name}: test forecasts vs actual",
                                  out_dir / "confusion.png"),
    ]
    _write_predictions(out_dir / "predictions.csv", targets, predicted)
    return metrics, figures


def _write_predictions(path: Path, actual: np.ndarray, predicted: np.ndarray) -> None:
    """One row per forecast step of every test window: which window, which step ahead, actual and predicted."""
    rows = ((index, step + 1, f"{float(a):.6g}", f"{float(p):.6g}")
            for index, (truth, forecast) in enumerate(zip(actual, predicted, strict=True))
            for step, (a, p) in enumerate(zip(truth, forecast, strict=True)))
    write_csv(path, ["window", "step", "actual", "predicted"], rows)


TASK = register_task(Task(
    name="sequence", input_name="window", output_name="forecast", monitor=("val_loss", "min"),
    ranking=("test_mse", "min"),
    metrics={"test_mse": "min", "test_mae": "min", "mse_ratio_last_value": "min", "mse_ratio_moving_average": "min"},
    rankable=("test_mse",),
    # Any batch and any window length: the recurrent net reads as many steps as it is given.
    dynamic_axes={0: ("batch", 1), 1: ("steps", 1)},
    losses={"mse": lambda smoothing: nn.MSELoss()},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, other_shape=other_shape,
))  # wrap: none, the series' own scale in and out: sums of unit-order sines need no normalization
