"""Binary classification of 2-D points (the logistic-regression lesson): the model outputs p(class 1) in [0, 1].

The sigmoid is part of the model (Task.wrap), as the course's `Linear` + `Sigmoid`: training, evaluate and the
exported graph all see probabilities, and the loss is the binary cross-entropy of those probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data.binary import read
from dltorch.data.tensors import TensorData, split_validation
from dltorch.errors import DataError
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task

CLASSES = ["0", "1"]
# Log loss clips probabilities to [EPS, 1 - EPS], as sklearn.metrics.log_loss does for float32 (its dtype's eps).
EPS = float(np.finfo(np.float32).eps)


class Probability(nn.Module):
    """The sigmoid, in float32 even under bf16 autocast, so probabilities near 0 and 1 keep their precision."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())


def wrap(net: nn.Module, inputs: dict) -> nn.Module:
    return nn.Sequential(net, Probability())


def _part(data: Path, split: str) -> TensorData:
    points, labels = read(data).part(split)
    if len(points) == 0:
        raise DataError(f"{data}: no {split} rows")
    return TensorData(torch.from_numpy(points).float(), torch.from_numpy(labels).float().unsqueeze(1))


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[TensorData, TensorData | None]:
    return split_validation(_part(data, "train"), val_size, seed)


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    return _part(data, "test")


def model_inputs(train: TensorData, dataset: str) -> dict:
    return {"in_shape": tuple(train.inputs.shape[1:]), "num_outputs": 1}  # one logit: class 1 against class 0


def binary_cross_entropy(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean log loss of probabilities. Autocast refuses BCE on probabilities (unsafe in half precision): it runs in
    float32 with autocast off."""
    with torch.autocast(probabilities.device.type, enabled=False):
        return F.binary_cross_entropy(probabilities.float().clamp(EPS, 1 - EPS), targets.float())


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Sums over the batch; the engine divides by the sample count."""
    return {"accuracy": ((outputs > 0.5) == (targets > 0.5)).sum().item()}


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy at threshold 0.5 and log loss, as float64 sums over float32 probabilities."""
    p = np.clip(probabilities.reshape(labels.shape).astype(np.float64), EPS, 1 - EPS)
    log_loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return {"test_accuracy": float(np.mean((p > 0.5) == (labels > 0.5))), "test_log_loss": float(log_loss)}


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close probabilities: the same class for every point, and the same log loss to float32 rounding."""
    torch_scores, onnx_scores = scores(expected, targets), scores(actual, targets)
    agreement = float(np.mean((actual > 0.5) == (expected > 0.5)))
    gap = abs(onnx_scores["test_log_loss"] - torch_scores["test_log_loss"])
    limit = 1e-5 * max(1.0, torch_scores["test_log_loss"])
    checks = {"class_agreement": {"measured": agreement, "limit": 1.0, "passed": agreement == 1.0},
              "log_loss_equal": {"measured": gap, "limit": limit, "passed": gap <= limit}}
    return checks, {"torch_log_loss": torch_scores["test_log_loss"], "onnx_log_loss": onnx_scores["test_log_loss"]}


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Test metrics of onnxruntime outputs, keyed as in evaluate's metrics.json (the int8 gate compares these)."""
    return scores(outputs, targets)


@torch.no_grad()
def report(run: Evaluation) -> tuple[dict, list[Path]]:
    """Test accuracy and log loss; for a single Linear layer its w and b; the decision boundary over the test
    points, beside the true one of the blobs (x1 + x2 = 0: data/binary.py)."""
    model, test, name, out_dir = run.model, run.test, run.name, run.out_dir
    points, labels = test.inputs.numpy(), test.targets.squeeze(1).numpy()
    probabilities = run.outputs.squeeze(1).numpy()
    predicted = (probabilities > 0.5).astype(int)
    metrics: dict = scores(probabilities, labels)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linear) == 1:
        metrics.update(w=linear[0].weight.squeeze(0).tolist(), b=linear[0].bias.item())
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels.astype(int), predicted), 1)
    probability = lambda grid: model(torch.from_numpy(grid).float()).squeeze(1).numpy()  # noqa: E731
    title = f"{name}: test accuracy {metrics['test_accuracy']:.3f}, log loss {metrics['test_log_loss']:.3f}"
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.decision_boundary(points, labels, probability, title, out_dir / "predictions.png",
                                {"true boundary x1 + x2 = 0": lambda x1: -x1}),
        plots.confusion_matrix(confusion.tolist(), CLASSES, f"{name}: test confusion", out_dir / "confusion.png"),
    ]
    write_csv(out_dir / "predictions.csv", ["actual", "predicted"],
              ((CLASSES[int(t)], CLASSES[p]) for t, p in zip(labels, predicted, strict=True)))
    return metrics, figures


TASK = register_task(Task(
    name="binary", input_name="points", output_name="probability",
    monitor=("val_loss", "min"),  # log loss: a proper score, finer than accuracy on a few hundred points
    ranking=("test_accuracy", "max"),
    metrics={"test_accuracy": "max", "test_log_loss": "min"}, rankable=("test_accuracy", "test_log_loss"),
    dynamic_axes={0: ("batch", 1)},  # any batch; every other axis is the example's
    losses={"bce": lambda smoothing: binary_cross_entropy},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, wrap=wrap,
))
