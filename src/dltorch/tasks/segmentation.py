"""Binary image segmentation: folder pairs of images and masks, BCE (+ Dice) loss, Dice/IoU/pixel accuracy, export
with dynamic batch, height and width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dltorch import plots
from dltorch.config import SIDE_MULTIPLE, TrainConfig
from dltorch.data import segmentation
from dltorch.data.streamed import StreamedData
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError, ParamsError
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task

GOAL_DICE = 0.95
MIN_IOU_PARITY = 0.999  # ONNX's masks against torch's: intersection over union, all pixels pooled
OVERLAYS = 8
CLASSES = ["background", "foreground"]


def _image_size(settings: TrainConfig | None) -> tuple[int, int]:
    if settings is None or settings.image_size is None:
        raise ParamsError("train.image_size: segmentation needs [height, width] to resize images to")
    return settings.image_size


def folder_pair(data: Path, split: str, transform: Any) -> segmentation.MaskedImageFolder:
    """<data>/<split>/images and <data>/<split>/masks, as the synth stage writes them."""
    folder = data / split
    return segmentation.MaskedImageFolder(folder / segmentation.IMAGES, folder / segmentation.MASKS, transform)


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[StreamedData, TensorData | None]:
    """train/ streamed through the augmenting transform, minus val_size images (a seeded sample) held out, resized
    only, to pick the best epoch. The val/ folder stays untouched for evaluate."""
    size = _image_size(settings)
    augmenting = folder_pair(data, "train", segmentation.train_transform(size, settings.augment))
    if val_size >= len(augmenting):
        raise DataError(f"val_size {val_size} leaves no training images out of {len(augmenting)} in "
                        f"{data / 'train'}")
    order = torch.randperm(len(augmenting), generator=torch.Generator().manual_seed(seed)).tolist()
    train = StreamedData(segmentation.Subset(augmenting, order[val_size:]), (3, *size), augmenting.signature())
    if val_size == 0:
        return train, None
    plain = folder_pair(data, "train", segmentation.eval_transform(size))
    return train, segmentation.materialize(segmentation.Subset(plain, order[:val_size]))


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    """The val/ folder, resized: the held-out images every reported metric is measured on."""
    return segmentation.materialize(folder_pair(data, "val", segmentation.eval_transform(_image_size(settings))))


def model_inputs(train: StreamedData, dataset: str) -> dict:
    return {"in_shape": tuple(train.sample_shape), "num_outputs": 1}  # one channel of logits: the foreground


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of each image, averaged: overlap of probabilities with the mask, smoothed by 1."""
    probs = torch.sigmoid(logits.float()).flatten(1)
    targets = targets.flatten(1)
    overlap = (probs * targets).sum(1)
    return (1 - (2 * overlap + 1) / (probs.sum(1) + targets.sum(1) + 1)).mean()


def bce_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE drives every pixel; Dice weighs the foreground as a whole, however small."""
    return F.binary_cross_entropy_with_logits(logits, targets) + dice_loss(logits, targets)


def mask_scores(predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: pixel accuracy, Dice and IoU of boolean masks (N, 1, H, W); both empty counts as a perfect 1."""
    predicted, targets = predicted.flatten(1), targets.flatten(1)
    overlap = (predicted & targets).sum(1).double()
    total = predicted.sum(1).double() + targets.sum(1).double()
    union = (predicted | targets).sum(1).double()
    return {"pixel_accuracy": (predicted == targets).double().mean(1),
            "dice": torch.where(total > 0, 2 * overlap / total.clamp(min=1), 1.0),
            "iou": torch.where(union > 0, overlap / union.clamp(min=1), 1.0)}


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Sums over the batch of each image's scores; the engine divides by the image count."""
    scores = mask_scores(outputs > 0, targets > 0.5)
    return {name: value.sum().item() for name, value in scores.items()}


def _masks(logits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(logits)) > 0


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close logits: ONNX's masks cover torch's (IoU of all pixels pooled >= 0.999), and Dice is the same."""
    torch_masks, onnx_masks = _masks(expected), _masks(actual)
    union = (torch_masks | onnx_masks).sum().item()
    iou = (torch_masks & onnx_masks).sum().item() / union if union else 1.0
    truth = torch.from_numpy(targets) > 0.5
    torch_dice = mask_scores(torch_masks, truth)["dice"].mean().item()
    onnx_dice = mask_scores(onnx_masks, truth)["dice"].mean().item()
    checks = {"mask_iou": {"measured": iou, "limit": MIN_IOU_PARITY, "passed": iou >= MIN_IOU_PARITY}}
    return checks, {"torch_dice": torch_dice, "onnx_dice": onnx_dice}


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Test metrics of onnxruntime outputs, keyed as in evaluate's metrics.json (the int8 gate compares these)."""
    return {"dice": mask_scores(_masks(outputs), torch.from_numpy(targets) > 0.5)["dice"].mean().item()}


def other_shape(test: TensorData) -> tuple[torch.Tensor, torch.Tensor]:
    """Parity at a size other than the export example's: the first 100 images (and masks) 32 pixels taller and
    16 wider, still multiples of 16."""
    height, width = test.inputs.shape[2:]
    size = (height + 2 * SIDE_MULTIPLE, width + SIDE_MULTIPLE)
    inputs = F.interpolate(test.inputs[:100], size=size, mode="bilinear", align_corners=False)
    return inputs, F.interpolate(test.targets[:100], size=size, mode="nearest")


@torch.no_grad()
def report(run: Evaluation) -> tuple[dict, list[Path]]:
    """Pixel accuracy, Dice and IoU (means over the val/ images), the loss, the goal; overlays and a pixel
    confusion matrix."""
    test, loss, name, out_dir = run.test, run.loss, run.name, run.out_dir
    predicted, truth = run.outputs > 0, test.targets > 0.5
    scores = {key: value.mean().item() for key, value in mask_scores(predicted, truth).items()}
    confusion = [[int((~truth & ~predicted).sum()), int((~truth & predicted).sum())],
                 [int((truth & ~predicted).sum()), int((truth & predicted).sum())]]
    metrics: dict[str, Any] = {**scores, "loss": loss, "images": len(test), "image_size": list(test.inputs.shape[2:]),
                               "goal_dice": GOAL_DICE, "goal_met": scores["dice"] >= GOAL_DICE}
    shown = slice(0, OVERLAYS)
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.mask_overlays(test.inputs[shown].numpy(), truth[shown, 0].numpy(), predicted[shown, 0].numpy(),
                            f"{name}: validation (Dice {scores['dice']:.4f})", out_dir / "predictions.png"),
        plots.confusion_matrix(confusion, CLASSES, f"{name}: validation pixels", out_dir / "confusion.png"),
    ]
    _write_predictions(out_dir / "predictions.csv", truth, predicted)
    return metrics, figures


def _write_predictions(path: Path, truth: torch.Tensor, predicted: torch.Tensor) -> None:
    """One row per image: the true and the predicted foreground fraction (a scatter, like a regression's)."""
    actual, guessed = truth.flatten(1).double().mean(1), predicted.flatten(1).double().mean(1)
    rows = ((i, f"{a:.6g}", f"{p:.6g}") for i, (a, p) in enumerate(zip(actual.tolist(), guessed.tolist(), strict=True)))
    write_csv(path, ["image", "actual", "predicted"], rows)


TASK = register_task(Task(
    name="segmentation",
    input_name="pixels",  # (N, 3, H, W) RGB in [0, 1], H and W multiples of 16
    output_name="logits",  # (N, 1, H, W); the mask is logits > 0 (probability > 0.5)
    monitor=("val_dice", "max"), ranking=("dice", "max"),
    metrics={"dice": "max", "iou": "max", "pixel_accuracy": "max", "loss": "min"}, rankable=("dice",),
    dynamic_axes={0: ("batch", 1), 2: ("height", SIDE_MULTIPLE), 3: ("width", SIDE_MULTIPLE)},
    losses={"bce": lambda smoothing: nn.BCEWithLogitsLoss(), "bce_dice": lambda smoothing: bce_dice},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, other_shape=other_shape,
))  # wrap: none, pixels in [0, 1] as the course's Normalize(mean 0, std 1) leaves them; BatchNorm does the rest
