"""A GAN on Fashion-MNIST: the DCGAN (models/gan.py) trains by its own adversarial step and two optimizers inside
the engine's one loop. Its model is the generator: noise (N, noise) -> images (N, 1, 28, 28) in [0, 1].

Quality is a Fréchet distance (the formula of FID) in the feature space of a judge: FID's Inception network cannot
be downloaded here, so evaluate trains the project's LeNet-5 (Task.judge: 2 epochs on the training images and labels,
seeded) and takes its penultimate layer (84 numbers). It is trained there rather than read from a model's files
because dvc.yaml's evaluate stage is one template for every model and cannot depend on another model's outputs;
export trains it again (the same seed and data: the same judge) to score the ONNX files. Beside the distance of
10,000 generated images to the 10,000 test images: the floor (10,000 training images to the test images) and the
ceiling (the same generator untrained, from the same seed), and the share of each class among the generated
images by the judge's labels (mode collapse leaves classes out)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dltorch import plots
from dltorch.config import TrainConfig
from dltorch.data.datasets import CLASSES
from dltorch.data.gan import fixed_noise, load_images
from dltorch.data.tensors import TensorData
from dltorch.errors import ParamsError
from dltorch.io import write_csv
from dltorch.models.gan import GAN, adversarial_step, optimizers
from dltorch.tasks.registry import Evaluation, Task, register_task

GOAL_RATIO = 0.1  # the trained generator's distance at most a tenth of the untrained one's
GOAL_SHARE = 0.04  # every class at least 4% of the generated images (a uniform share is 10%)
NOISE_SEED = 2024  # the fixed noise: evaluate's generated images, export's parity set, the per-epoch grids
SHOWN = 64  # generated images in a grid
# The judge (Task.judge): LeNet-5, trained by the pipeline on the training images and labels, always the same way.
JUDGE_ARCH, JUDGE_SETTINGS = "lenet5", TrainConfig(epochs=2, batch_size=128, optimizer="adam", lr=1e-3, val_size=0,
                                                   seed=0, device="cpu")
FLOOR_SAMPLES = 10_000  # training images against the test images: the distance of real to real


# The Fréchet distance between two Gaussians fitted to feature vectors (the formula of FID, Heusel et al. 2017):
# |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2)). Computed with symmetric eigen-decompositions in float64:
# tr((C1 C2)^(1/2)) = tr((S C2 S)^(1/2)) with S = C1^(1/2), and S C2 S is symmetric positive semi-definite, so its
# square root's trace is the sum of the square roots of its eigenvalues; no scipy, no complex parts to discard.


def gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (unbiased, as numpy's cov) of rows of features, in float64."""
    rows = features.double()
    if rows.ndim != 2 or len(rows) < 2:
        raise ValueError(f"features must be (N >= 2, D), not {tuple(features.shape)}")
    return rows.mean(0), torch.cov(rows.T).reshape(rows.shape[1], rows.shape[1])


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Between Gaussians given as (mean, covariance)."""
    (mean1, cov1), (mean2, cov2) = first, second
    root = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root @ cov2 @ root).clamp(min=0).sqrt().sum()
    return float((mean1 - mean2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


def frechet_distance_of(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Between the Gaussians fitted to two sets of feature rows."""
    return frechet_distance(gaussian(features1), gaussian(features2))


def dataset_name(data: Path, fetched: str) -> str:
    return fetched  # the image set the fetch stage put under data


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   settings: TrainConfig | None = None) -> tuple[TensorData, None]:
    """Every training image; no validation split: a GAN's losses do not say which epoch is best, so the latest
    is kept (the monitor then finds no validation score)."""
    if val_size:
        raise ParamsError(f"train.val_size: the gan task has no validation split (its losses pick no best epoch); "
                          f"set it to 0, not {val_size}")
    return load_images(data, dataset, train=True), None


def load_test(data: Path, dataset: str, settings: TrainConfig | None = None) -> TensorData:
    return load_images(data, dataset, train=False)


def test_inputs(test: TensorData, model: nn.Module) -> TensorData:
    """As many fixed noise vectors as test images, the generator's inputs; the test images become the targets its
    images are compared with."""
    generator = _gan(model)
    return TensorData(fixed_noise(len(test), generator.noise, NOISE_SEED), test.inputs)


def export_shape(bundle: Any, model: nn.Module) -> tuple[int, ...]:
    return (_gan(model).noise,)


def _gan(model: nn.Module) -> GAN:
    if not isinstance(model, GAN):
        raise TypeError(f"the gan task trains a GAN (arch: gan), not a {type(model).__name__}")
    return model


def model_inputs(train: TensorData, dataset: str) -> dict:
    """Generated images have the training images' shape."""
    return {"in_shape": tuple(train.inputs.shape[1:]), "num_outputs": train.inputs.shape[1]}


def batch_scores(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    return {}  # the adversarial step reports both players' losses itself


def mean_image_gap(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """What evaluate records as the test loss (the adversarial step has its own two): the mean squared difference,
    per pixel, between the mean generated image and the mean real one."""
    return (generated.float().mean(0) - real.float().mean(0)).pow(2).mean()


@torch.no_grad()
def features(classifier: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    """The judge's penultimate layer: every layer but the last (the class scores)."""
    body = classifier[:-1].eval()
    return torch.cat([body(images[i : i + 1000]) for i in range(0, len(images), 1000)])


def _generate(generator: nn.Module, noise: torch.Tensor) -> torch.Tensor:
    return torch.cat([generator(noise[i : i + 1000]) for i in range(0, len(noise), 1000)])


def class_shares(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """The share of the samples given each class label."""
    return torch.bincount(labels, minlength=classes).double() / len(labels)


def untrained(model: GAN, seed: int) -> GAN:
    """The same architecture with the weights training started from: every layer reset in construction order
    under the seed training set before building it (models/gan.py builds the generator, then the discriminator)."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh.eval()


@torch.no_grad()
def report(run: Evaluation) -> tuple[dict[str, Any], list[Path]]:
    """The Fréchet distance with its floor and ceiling, the class shares, the goals; the figures."""
    name, out_dir, noise, real = run.name, run.out_dir, run.test.inputs, run.test.targets
    classifier = run.judge
    labels = load_images(run.data, run.dataset, train=False).targets
    judge_accuracy = (classifier(real).argmax(1) == labels).double().mean().item()
    real_features = features(classifier, real)
    train_images = load_images(run.data, run.dataset, train=True).inputs
    sample = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(NOISE_SEED))[:FLOOR_SAMPLES]
    ceiling_images = _generate(untrained(_gan(run.model), run.seed), noise)
    distance = frechet_distance_of(features(classifier, run.outputs), real_features)
    floor = frechet_distance_of(features(classifier, train_images[sample]), real_features)
    ceiling = frechet_distance_of(features(classifier, ceiling_images), real_features)
    classes = CLASSES[run.dataset]
    generated_shares = class_shares(classifier(run.outputs).argmax(1), len(classes))
    test_shares = class_shares(classifier(real).argmax(1), len(classes))
    ratio = distance / ceiling
    metrics: dict[str, Any] = {
        "frechet_distance": distance, "frechet_floor": floor, "frechet_ceiling": ceiling, "frechet_ratio": ratio,
        "min_class_share": generated_shares.min().item(), "judge": JUDGE_ARCH, "judge_accuracy": judge_accuracy,
        "generated": len(run.outputs), "class_shares": dict(zip(classes, generated_shares.tolist(), strict=True)),
        "goal_ratio": GOAL_RATIO, "goal_ratio_met": ratio <= GOAL_RATIO, "goal_share": GOAL_SHARE,
        "goal_share_met": generated_shares.min().item() >= GOAL_SHARE,
    }
    figures = [
        plots.training_curves(run.history, name, out_dir / "curves.png"),
        plots.sample_grid(run.outputs[:SHOWN].numpy(), f"{name}: generated on fixed noise (Fréchet {distance:.3g}, "
                          f"floor {floor:.3g}, ceiling {ceiling:.3g})", out_dir / "predictions.png"),
        _shares_figure(classes, test_shares, generated_shares, name, out_dir / "confusion.png"),
    ]
    write_csv(out_dir / "predictions.csv", ["class", "actual", "predicted"],
              ((c, f"{t:.6g}", f"{g:.6g}") for c, t, g in
               zip(classes, test_shares.tolist(), generated_shares.tolist(), strict=True)))
    return metrics, figures


def _shares_figure(classes: list[str], test: torch.Tensor, generated: torch.Tensor, name: str, path: Path) -> Path:
    """Each class's share by the judge's labels: the test images against the generated ones."""
    positions = list(range(len(classes)))
    panel = plots.Panel("share of the images by the judge's labels", "class", "share",
                        {"test images": (positions, test.tolist()), name: (positions, generated.tolist()),
                         f"goal: at least {GOAL_SHARE:.0%}": (positions, [GOAL_SHARE] * len(classes))}, log_y=False)
    return plots.panels([panel], f"{name}: classes generated ({', '.join(classes)})", path)


def epoch_figures(model: nn.Module, epoch: int, folder: Path) -> list[Path]:
    """The generator's images on the first SHOWN of the fixed noise vectors, after `epoch`; the model is left in
    training mode (train_one_epoch sets it anyway)."""
    generator = _gan(model)
    device = next(generator.parameters()).device
    noise = fixed_noise(SHOWN, generator.noise, NOISE_SEED).to(device)
    generator.eval()
    with torch.no_grad():
        images = generator(noise).float().cpu().numpy()
    generator.train()
    return [plots.sample_grid(images, f"epoch {epoch}", folder / f"samples_epoch_{epoch:03d}.png")]


def parity_checks(expected: np.ndarray, actual: np.ndarray, targets: np.ndarray) -> tuple[dict, dict]:
    """Close pixels (check_parity's own check) are the whole story for a generator."""
    return {}, {}


def onnx_scorer(judge: nn.Module) -> Any:
    """Scores onnxruntime's images as evaluate scores torch's: their Fréchet distance to the test images in the
    judge's features."""

    def scores(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"frechet_distance": frechet_distance_of(features(judge, torch.from_numpy(outputs)),
                                                        features(judge, torch.from_numpy(targets)))}

    return scores


def onnx_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    raise TypeError("the gan task's ONNX scores need its judge (Task.scorer with the trained judge)")


TASK = register_task(Task(
    name="gan",
    input_name="noise",  # (N, noise) standard normal
    output_name="images",  # (N, 1, 28, 28) in [0, 1]
    monitor=("val_loss", "min"),  # no validation split: the latest epoch is kept, early stopping cannot apply
    ranking=("frechet_distance", "min"),
    metrics={"frechet_distance": "min", "frechet_floor": "min", "frechet_ceiling": "max", "frechet_ratio": "min",
             "min_class_share": "max"},
    rankable=("frechet_distance",),
    dynamic_axes={0: ("batch", 1)},
    losses={"adversarial": lambda smoothing: mean_image_gap},
    load_train_val=load_train_val, load_test=load_test, model_inputs=model_inputs, batch_scores=batch_scores,
    parity_checks=parity_checks, onnx_metrics=onnx_metrics, report=report, dataset_name=dataset_name,
    step=adversarial_step, optimizers=optimizers, test_inputs=test_inputs, export_shape=export_shape,
    judge=(JUDGE_ARCH, JUDGE_SETTINGS), onnx_scorer=onnx_scorer, epoch_figures=epoch_figures,
))
