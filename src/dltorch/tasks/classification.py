"""Image classification: data, loss, metrics and export spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data import classification as images
from dltorch.data.classification import LabelledImages, channel_stats
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task

GRID_SIZE = 32


class Normalize(nn.Module):
    """Normalization lives in the graph, so the exported model takes raw pixels in [0, 1]."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


class Classifier(nn.Sequential):
    """Normalization, then the architecture; with `mirror_average`, in eval mode (validation, test, export, serving)
    the logits of each image and of its mirror image are averaged: Fashion-MNIST's classes are left-right symmetric,
    so the mirror is a second look at the same item. A Sequential, so its weights keep their keys either way."""

    def __init__(self, normalize: Normalize, net: nn.Module, mirror_average: bool = False) -> None:
        super().__init__(normalize, net)
        self.mirror_average = mirror_average

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.training or not self.mirror_average:
            return super().forward(pixels)
        # (2N, classes) -> (2, N, classes): an unflatten keeps the batch dimension symbolic in the exported graph
        return super().forward(torch.cat([pixels, pixels.flip(-1)])).unflatten(0, (2, -1)).mean(0)


def wrap(net: nn.Module, inputs: dict) -> nn.Module:
    return Classifier(Normalize(inputs["mean"], inputs["std"]), net, inputs.get("test_time_hflip", False))


def dataset_name(data: Path, fetched: str) -> str:
    """The image set the fetch stage put under data, or an image folder's name."""
    return data.name if images.is_image_folder(data) else fetched


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[LabelledImages, LabelledImages | None]:
    return images.load_train_val(data, dataset, val_size, seed, settings.image_size if settings else None)


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> LabelledImages:
    return images.load_test(data, dataset, settings.image_size if settings else None)


def model_inputs(train: LabelledImages, dataset: str) -> dict:
    """What the task tells the architecture builder and the normalization layer, and the class names the data
    gave (the bundle keeps them; export writes them into the ONNX file for `dltorch predict`)."""
    mean, std = channel_stats(train)
    return {"in_shape": tuple(train.inputs.shape[1:]), "num_outputs": len(train.classes), "mean": mean, "std": std,
            "classes": list(train.classes)}


def mse_onehot(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The course's first classifier: regress the one-hot vector of the label."""
    return F.mse_loss(logits, F.one_hot(targets, logits.shape[1]).to(logits.dtype))


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Sums over the batch; the engine divides by the sample count."""
    return {"accuracy": (outputs.argmax(1) == targets).sum().item()}


def summarize(logits: torch.Tensor, targets: torch.Tensor, loss: float, classes: tuple[str, ...]) -> dict:
    """Test metrics: accuracy, loss, per-class accuracy and the confusion matrix (rows: true class)."""
    predicted = logits.argmax(1)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((targets, predicted), torch.ones_like(targets), accumulate=True)
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
    return {
        "accuracy": (predicted == targets).float().mean().item(),
        "loss": loss,
        "per_class_accuracy": {name: round(acc, 4) for name, acc in zip(classes, per_class.tolist(), strict=True)},
        "confusion": confusion.tolist(),
    }


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close logits: the same predicted class for every input, hence the same accuracy."""
    agreement = float((actual.argmax(1) == expected.argmax(1)).mean())
    torch_acc = float((expected.argmax(1) == targets).mean())
    onnx_acc = float((actual.argmax(1) == targets).mean())
    checks = {
        "argmax_agreement": {"measured": agreement, "limit": 1.0, "passed": agreement == 1.0},
        "accuracy_equal": {"measured": onnx_acc - torch_acc, "limit": 0.0, "passed": onnx_acc == torch_acc},
    }
    return checks, {"torch_accuracy": torch_acc, "onnx_accuracy": onnx_acc}


def report(run: Evaluation) -> tuple[dict, list[Path]]:
    """Test metrics, the figures, and a per-image CSV for `dvc plots`' confusion template."""
    test, name, out_dir = run.test, run.name, run.out_dir
    classes = list(test.classes)  # the training split's: test labels are indices into them
    summary = summarize(run.outputs, test.targets, run.loss, test.classes)
    predicted = run.outputs.argmax(1)
    shown = slice(0, GRID_SIZE)
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.confusion_matrix(summary["confusion"], classes, f"{name}: test confusion", out_dir / "confusion.png"),
        plots.prediction_grid(test.inputs[shown].numpy(), predicted[shown].numpy(), test.targets[shown].numpy(),
                              classes, name, out_dir / "predictions.png"),
    ]
    _write_predictions(out_dir / "predictions.csv", test.targets.tolist(), predicted.tolist(), classes)
    metrics = {"test_accuracy": summary["accuracy"], "test_loss": summary["loss"],
               "per_class_accuracy": summary["per_class_accuracy"]}
    return metrics, figures


def _write_predictions(path: Path, targets: list[int], predicted: list[int], classes: list[str]) -> None:
    rows = ((classes[t], classes[p]) for t, p in zip(targets, predicted, strict=True))
    write_csv(path, ["actual", "predicted"], rows)


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Test metrics of onnxruntime outputs, keyed as in evaluate's metrics.json (the int8 gate compares these)."""
    return {"test_accuracy": float((outputs.argmax(1) == targets).mean())}


TASK = register_task(Task(
    name="classification", input_name="pixels", output_name="logits",
    monitor=("val_accuracy", "max"),  # picks the best epoch and drives early stopping
    ranking=("test_accuracy", "max"),
    metrics={"test_accuracy": "max", "test_loss": "min"}, rankable=("test_accuracy",),
    dynamic_axes={0: ("batch", 1)},  # any batch; every other axis is the example's
    losses={"cross_entropy": lambda smoothing: nn.CrossEntropyLoss(label_smoothing=smoothing),
            "mse_onehot": lambda smoothing: mse_onehot},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, dataset_name=dataset_name, wrap=wrap,
))
