"""The GAN's data: the fetched IDX images (data/idx.py's reader) as inputs, their labels as targets. The adversarial
step reads only the images; the labels are there for evaluate's judge classifier and its class shares."""

from __future__ import annotations

from pathlib import Path

import torch

from dltorch.data.idx import load_split
from dltorch.data.tensors import TensorData


def load_images(raw_root: Path, dataset: str, train: bool) -> TensorData:
    split = load_split(raw_root, dataset, train)
    return TensorData(split.inputs, split.targets)


def fixed_noise(count: int, width: int, seed: int) -> torch.Tensor:
    """`count` noise vectors of `width` numbers, the same for a given seed on every machine (its own generator:
    drawing them leaves the global one, which training and its checkpoint use, untouched)."""
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))
