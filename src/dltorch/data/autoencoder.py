"""The autoencoder's data: the fetched IDX images (data/idx.py's reader), each image its own target. The labels
stay beside them, only to colour the codes by class."""

from __future__ import annotations

from pathlib import Path

import torch

from dltorch.data.idx import load_split
from dltorch.data.tensors import TensorData


def load_images(raw_root: Path, dataset: str, train: bool) -> TensorData:
    """Images as inputs and as targets: the same tensor, not a copy."""
    images = load_split(raw_root, dataset, train).inputs
    return TensorData(images, images)


def load_labels(raw_root: Path, dataset: str, train: bool) -> torch.Tensor:
    return load_split(raw_root, dataset, train).targets
