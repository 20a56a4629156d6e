"""Autoencoding Fashion-MNIST: each image is its own target; the test MSE is judged against the linear baseline
with as many numbers per image, PCA fitted on the training images. Exported as one graph with two outputs, the
reconstruction and the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data.autoencoder import load_images, load_labels
from dltorch.data.datasets import CLASSES
from dltorch.data.tensors import TensorData, split_validation
from dltorch.io import write_csv
from dltorch.tasks.registry import Evaluation, Task, register_task

GOAL_RATIO = 0.8  # the autoencoder's test MSE must be at least 20% below PCA's at the same code size
SHOWN = 10  # test images in the reconstruction figure
MAX_MSE_PARITY = 1e-6  # ONNX's test MSE against torch's


def dataset_name(data: Path, fetched: str) -> str:
    return fetched  # the image set the fetch stage put under data


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[TensorData, TensorData | None]:
    return split_validation(load_images(data, dataset, train=True), val_size, seed)


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    return load_images(data, dataset, train=False)


def model_inputs(train: TensorData, dataset: str) -> dict:
    """The reconstruction has the input's channels."""
    return {"in_shape": tuple(train.inputs.shape[1:]), "num_outputs": train.inputs.shape[1]}


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    return {}  # the loss is the score: the mean squared error per pixel


class CodeAndReconstruction(nn.Module):
    """The exported view: one pass through the encoder, both its code and the decoder's image as outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.model.encoder(pixels)
        return self.model.decoder(code), code


def per_image_mse(rebuilt: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (rebuilt - images).pow(2).flatten(1).mean(1)


@torch.no_grad()
def pca_reconstruction(train: torch.Tensor, test: torch.Tensor, components: int) -> torch.Tensor:
    """The best linear code of `components` numbers: the top principal directions of the training images (exact,
    from the eigenvectors of their covariance, in float64), applied to the test images."""
    flat = train.flatten(1).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues: the last columns are the top ones
    basis = vectors[:, -components:]
    test_centred = test.flatten(1).double() - mean
    return (test_centred @ basis @ basis.T + mean).reshape(test.shape).to(test.dtype)


def code_points(codes: torch.Tensor) -> tuple[np.ndarray, tuple[str, str]]:
    """The code itself when it has 2 numbers, else its projection on its own top 2 principal directions."""
    if codes.shape[1] == 2:
        return codes.numpy(), ("code 1", "code 2")
    centred = codes.double() - codes.double().mean(0)
    _, _, vectors = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vectors[:2].T).float().numpy(), ("principal component 1", "principal component 2")


@torch.no_grad()
def report(run: Evaluation) -> tuple[dict[str, Any], list[Path]]:
    """Test MSE against PCA's at the same code size, the goal; reconstructions and the codes by class."""
    test, name, out_dir = run.test, run.name, run.out_dir
    codes = torch.cat([run.model.encoder(test.inputs[i : i + 1000]) for i in range(0, len(test), 1000)])
    latent = codes.shape[1]
    train_images = load_images(run.data, run.dataset, train=True).inputs
    pca = pca_reconstruction(train_images, test.inputs, latent)
    errors, pca_errors = per_image_mse(run.outputs, test.inputs), per_image_mse(pca, test.inputs)
    test_mse, pca_mse = errors.mean().item(), pca_errors.mean().item()
    ratio = test_mse / pca_mse
    labels = load_labels(run.data, run.dataset, train=False)
    points, axis_names = code_points(codes)
    classes = CLASSES[run.dataset]
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.reconstructions(test.inputs[:SHOWN].numpy(), run.outputs[:SHOWN].numpy(),
                              f"{name}: test images and reconstructions (MSE {test_mse:.4f})",
                              out_dir / "predictions.png"),
        plots.codes_by_class(points, labels.numpy(), classes, f"{name}: test codes ({latent} numbers) by class",
                             axis_names, out_dir / "confusion.png"),
    ]
    _write_errors(out_dir / "predictions.csv", labels, classes, pca_errors, errors)
    metrics = {"test_mse": test_mse, "pca_mse": pca_mse, "mse_ratio_pca": ratio, "latent": latent,
               "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO}
    return metrics, figures


def _write_errors(path: Path, labels: torch.Tensor, classes: list[str], pca: torch.Tensor,
                  autoencoder: torch.Tensor) -> None:
    """One row per test image: PCA's MSE (`actual`: the baseline) and the autoencoder's (`predicted`); under the
    diagonal the autoencoder does better."""
    rows = ((i, classes[label], f"{base:.6g}", f"{ours:.6g}") for i, (label, base, ours)
            in enumerate(zip(labels.tolist(), pca.tolist(), autoencoder.tolist(), strict=True)))
    write_csv(path, ["image", "class", "actual", "predicted"], rows)


def _mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((outputs.astype(np.float64) - targets) ** 2))


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Beyond close pixels: the same test MSE."""
    torch_mse, onnx_mse = _mse(expected, targets), _mse(actual, targets)
    gap = abs(onnx_mse - torch_mse)
    checks = {"mse_difference": {"measured": gap, "limit": MAX_MSE_PARITY, "passed": gap <= MAX_MSE_PARITY}}
    return checks, {"torch_mse": torch_mse, "onnx_mse": onnx_mse}


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Test metrics of onnxruntime outputs, keyed as in evaluate's metrics.json (the int8 gate compares these)."""
    return {"test_mse": _mse(outputs, targets)}


TASK = register_task(Task(
    name="autoencoder",
    input_name="pixels",  # (N, 1, 28, 28) in [0, 1]
    output_name="reconstruction",  # (N, 1, 28, 28) in [0, 1]
    extra_outputs=("code",),  # (N, latent)
    export_view=CodeAndReconstruction,
    monitor=("val_loss", "min"), ranking=("test_mse", "min"),
    metrics={"test_mse": "min", "pca_mse": "min", "mse_ratio_pca": "min"}, rankable=("test_mse",),
    dynamic_axes={0: ("batch", 1)},
    losses={"mse": lambda smoothing: nn.MSELoss()},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, dataset_name=dataset_name,
))
