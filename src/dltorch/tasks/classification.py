"""Image classification: data, loss, metrics and export spec."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dltorch.data.images import CLASSES, TensorData, channel_stats, load_split, split_validation

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
MONITOR = ("val_accuracy", "max")  # picks the best epoch and drives early stopping


class Normalize(nn.Module):
    """Normalization lives in the graph, so the exported model takes raw pixels in [0, 1]."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def wrap(net: nn.Module, mean: list[float], std: list[float]) -> nn.Module:
    return nn.Sequential(Normalize(mean, std), net)


def load_train_val(raw_root: Path, dataset: str, val_size: int, seed: int) -> tuple[TensorData, TensorData | None]:
    return split_validation(load_split(raw_root, dataset, train=True), val_size, seed)


def load_test(raw_root: Path, dataset: str) -> TensorData:
    return load_split(raw_root, dataset, train=False)


def model_inputs(train: TensorData, dataset: str) -> dict:
    """What the task tells the architecture builder and the normalization layer."""
    mean, std = channel_stats(train)
    return {"in_shape": tuple(train.inputs.shape[1:]), "num_classes": len(CLASSES[dataset]), "mean": mean, "std": std}


def make_loss(name: str, label_smoothing: float = 0.0):
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "mse_onehot":
        # The course's first classifier: regress the one-hot vector of the label.
        def mse_onehot(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(logits, F.one_hot(targets, logits.shape[1]).to(logits.dtype))

        return mse_onehot
    raise ValueError(f"unknown loss '{name}'; known: cross_entropy, mse_onehot")


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Sums over the batch; the engine divides by the sample count."""
    return {"accuracy": (outputs.argmax(1) == targets).sum().item()}


def summarize(logits: torch.Tensor, targets: torch.Tensor, loss: float, dataset: str) -> dict:
    """Test metrics: accuracy, loss, per-class accuracy and the confusion matrix (rows: true class)."""
    classes = CLASSES[dataset]
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


def export_spec(example_batch: int = 4) -> dict:
    return {"input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "dynamic_dims": {0: "batch"},
            "example_shape": (example_batch, 1, 28, 28)}
