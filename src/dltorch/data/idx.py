"""The IDX image sets (Fashion-MNIST, MNIST) as in-memory tensors: batches are slices, not a per-sample
DataLoader. Every task that reads the fetched images (classification, autoencoder, gan) reads them here."""

from __future__ import annotations

from pathlib import Path

import torch

from dltorch.data.datasets import CLASSES, DATASETS
from dltorch.data.tensors import LabelledImages
from dltorch.errors import DataError


def _read_idx(path: Path) -> torch.Tensor:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    if not path.is_file():
        raise DataError(f"{path}: missing; run the fetch stage first (dvc repro fetch)")
    try:
        return read_sn3_pascalvincent_tensor(str(path), strict=False)
    except Exception as exc:  # torchvision raises bare asserts/ValueErrors on a bad header
        raise DataError(f"{path}: not a valid IDX file ({exc or type(exc).__name__})") from None


def load_split(raw_root: Path, dataset: str, train: bool) -> LabelledImages:
    folder = raw_root / DATASETS[dataset].folder / "raw"
    if not folder.parent.is_dir():
        raise DataError(f"{folder}: missing; run the fetch stage first (dvc repro fetch), or give the model an "
                        "image folder (train/<class>/<image>) as data")
    prefix = "train" if train else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{folder}: {prefix} images {tuple(images.shape)} do not match labels {tuple(labels.shape)}")
    return LabelledImages(images.unsqueeze(1).float().div_(255), labels.long(), tuple(CLASSES[dataset]))
