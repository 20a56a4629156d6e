"""The IDX image sets as in-memory tensors: batches are slices, not a per-sample DataLoader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dltorch.data.fetch import DATASETS
from dltorch.errors import DataError

CLASSES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(digit) for digit in range(10)],
}


@dataclass(frozen=True)
class TensorData:
    inputs: torch.Tensor  # float32 pixels in [0, 1], (N, 1, 28, 28)
    targets: torch.Tensor  # int64 class indices, (N,)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> TensorData:
        return TensorData(self.inputs[index], self.targets[index])


def _read_idx(path: Path) -> torch.Tensor:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    if not path.is_file():
        raise DataError(f"{path}: missing; run the fetch stage first (dvc repro fetch)")
    try:
        return read_sn3_pascalvincent_tensor(str(path), strict=False)
    except Exception as exc:  # torchvision raises bare asserts/ValueErrors on a bad header
        raise DataError(f"{path}: not a valid IDX file ({exc or type(exc).__name__})") from None


def load_split(raw_root: Path, dataset: str, train: bool) -> TensorData:
    folder = raw_root / DATASETS[dataset].folder / "raw"
    prefix = "train" if train else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} images {tuple(images.shape)} do not match labels {tuple(labels.shape)}")
    return TensorData(images.unsqueeze(1).float().div_(255), labels.long())


def split_validation(data: TensorData, val_size: int, seed: int) -> tuple[TensorData, TensorData | None]:
    """Hold out a fixed random val_size samples; the test set stays untouched for evaluate."""
    if val_size == 0:
        return data, None
    if val_size >= len(data):
        raise DataError(f"val_size {val_size} leaves no training data out of {len(data)} samples")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[val_size:]), data.subset(order[:val_size])


def channel_stats(data: TensorData) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training pixels, folded into the model's graph."""
    dims = [0, 2, 3]
    return data.inputs.mean(dim=dims).tolist(), data.inputs.std(dim=dims).tolist()
