"""Segmentation data: image/mask folder pairs (the Carvana layout the course uses) and albumentations transforms.

A folder pair is an image folder (.jpg, .jpeg, .png) and a mask folder holding, for image `<id>.jpg`,
`<id>_mask.gif` (Carvana), `<id>_mask.png` or `<id>.png`. A mask's nonzero pixels (above half its maximum) are
the foreground. Any such pair can be read, e.g. the real Carvana `train/` and `train_masks/`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dltorch.config import AugmentConfig
from dltorch.data.tensors import TensorData
from dltorch.errors import DataError

IMAGES, MASKS = "images", "masks"  # a split's folders: <split>/images/<id>.jpg, <split>/masks/<id>_mask.gif

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIXES = (".gif", ".png")
MASK_NAMES = ("{stem}_mask.gif", "{stem}_mask.png", "{stem}.png")


def albumentations() -> Any:
    """albumentations, imported on first use. It asks PyPI for a newer version on import unless told not to; a
    pipeline stage must not reach the network."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def train_transform(size: tuple[int, int], augment: AugmentConfig) -> Any:
    """The course's training transform: resize, rotate, horizontal and vertical flips, pixels to [0, 1], tensor.
    Each step is left out when params switch it off."""
    A = albumentations()
    from albumentations.pytorch import ToTensorV2

    steps = [A.Resize(*size)]
    if augment.rotate_limit:
        steps.append(A.Rotate(limit=augment.rotate_limit, p=1.0))  # fills the corners with black, mask 0
    if augment.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if augment.vflip:
        steps.append(A.VerticalFlip(p=augment.vflip))
    return A.Compose([*steps, A.Normalize(mean=0.0, std=1.0, max_pixel_value=255.0), ToTensorV2()])


def eval_transform(size: tuple[int, int]) -> Any:
    A = albumentations()
    from albumentations.pytorch import ToTensorV2

    return A.Compose([A.Resize(*size), A.Normalize(mean=0.0, std=1.0, max_pixel_value=255.0), ToTensorV2()])


def _files(folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder of {what}; run the synth stage first (dvc repro synth) or point "
                        "the model's data at a folder pair")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


class MaskedImageFolder(Dataset):
    """Images and their binary masks from a folder pair; item i is (image (3, H, W) float, mask (1, H, W) float)
    after `transform` (an albumentations Compose ending in ToTensorV2), or numpy arrays without one."""

    def __init__(self, images: Path, masks: Path, transform: Any = None) -> None:
        self.transform = transform
        if images.resolve() == masks.resolve():
            raise DataError(f"{images}: images and masks must be in separate folders")
        image_files = _files(images, IMAGE_SUFFIXES, "images")
        mask_files = set(_files(masks, MASK_SUFFIXES, "masks"))
        if not image_files:
            raise DataError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.pairs: list[tuple[Path, Path]] = []
        for image in image_files:
            found = [masks / name.format(stem=image.stem) for name in MASK_NAMES]
            mask = next((m for m in found if m in mask_files), None)
            if mask is None:
                raise DataError(f"{image}: no mask in {masks} (looked for {', '.join(m.name for m in found)})")
            self.pairs.append((image, mask))
        if len(mask_files) != len(image_files):
            unmatched = sorted(mask_files - {mask for _, mask in self.pairs})
            raise DataError(f"{masks}: {len(mask_files)} masks for {len(image_files)} images in {images}; "
                            f"no image for {unmatched[0]}")

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and mask (H, W) uint8 in {0, 1}; an unreadable file is a DataError naming it."""
        image_file, mask_file = self.pairs[index]
        image = _decode(image_file, "RGB")
        levels = _decode(mask_file, "L")
        if levels.shape != image.shape[:2]:
            raise DataError(f"{mask_file}: mask is {levels.shape[1]}x{levels.shape[0]} but its image {image_file} "
                            f"is {image.shape[1]}x{image.shape[0]}")
        return image, (levels >= max(1, int(levels.max()) // 2 + 1)).astype(np.uint8)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.read(index)
        if self.transform is None:
            return image, mask
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"].unsqueeze(0).float()

    def set_seed(self, seed: int) -> None:
        """Reseed the transform's random draws (albumentations' own generators), e.g. once per epoch."""
        if self.transform is not None:
            self.transform.set_random_seed(seed)

    def signature(self) -> str:
        """SHA-256 of every image and mask file's name and bytes: identifies the data for checkpoints."""
        digest = hashlib.sha256()
        for image, mask in self.pairs:
            for path in (image, mask):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()


def _decode(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


class Subset(Dataset):
    """Items `indices` of a MaskedImageFolder, keeping its set_seed."""

    def __init__(self, dataset: MaskedImageFolder, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.dataset[self.indices[index]]

    def set_seed(self, seed: int) -> None:
        self.dataset.set_seed(seed)


def materialize(dataset: Dataset) -> TensorData:
    """Every item of a dataset with a deterministic transform, as in-memory tensors (validation and test)."""
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    return TensorData(torch.stack([image for image, _ in items]), torch.stack([mask for _, mask in items]))
