"""The folders stage's work: the fetched image set written as an image folder (ImageFolder's layout), so a model
reads it the way it would read a user's own images: <out>/train/<class>/<index>.png and <out>/test/<class>/...,
the first `train_per_class` training and `test_per_class` test images of each class, named by their index in the
IDX file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dltorch.config import FoldersConfig
from dltorch.data.classification import TEST, TRAIN, load_split
from dltorch.errors import DataError
from dltorch.io import atomic_dir, folder_digest


def folder_name(class_name: str) -> str:
    """A class name as a folder name: a path separator cannot be part of one ('T-shirt/top' -> 'T-shirt_top')."""
    return class_name.replace("/", "_")


def write_image_folders(raw_root: Path, dataset: str, cfg: FoldersConfig, out: Path) -> str:
    """Write the folder (replacing `out` only when complete); returns the SHA-256 of its files."""
    from PIL import Image

    with atomic_dir(out) as tmp:
        for split, per_class in ((TRAIN, cfg.train_per_class), (TEST, cfg.test_per_class)):
            images = load_split(raw_root, dataset, train=split == TRAIN)
            pixels = images.inputs[:, 0].mul(255).round().to(torch.uint8).numpy()
            for label, name in enumerate(images.classes):
                chosen = np.flatnonzero(images.targets.numpy() == label)[:per_class]
                if len(chosen) < per_class:
                    raise DataError(f"{raw_root}: {dataset} has {len(chosen)} {split} images of class '{name}', "
                                    f"fewer than folders.{split}_per_class ({per_class})")
                folder = tmp / split / folder_name(name)
                folder.mkdir(parents=True)
                for index in chosen:
                    Image.fromarray(pixels[index]).save(folder / f"{index:05d}.png")
    return folder_digest(out)

