"""Labelled images as in-memory tensors (batches are slices, not a per-sample DataLoader), from either source:

- the fetched IDX set (`data: raw`): <data>/<torchvision folder>/raw/*-ubyte, class names from datasets.CLASSES;
- an image folder in torchvision's ImageFolder layout (any other `data:`): <data>/train/<class>/<image>,
  <data>/test/<class>/<image> and an optional <data>/val/<class>/<image>. Class names are train/'s folder names,
  sorted (ImageFolder's rule); test/ and val/ are labelled by the same names, so a label means the same in every
  split. Images are grayscale when every training image is, else RGB; `train.image_size` resizes them all, and
  without it they must all be of one size.

The IDX reader is data/idx.py (shared with the autoencoder). Either way the classes travel with the tensors
(LabelledImages.classes) into the model bundle and the ONNX file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dltorch.data.idx import load_split
from dltorch.data.tensors import LabelledImages, TensorData, split_validation
from dltorch.errors import DataError

TRAIN, VAL, TEST = "train", "val", "test"  # an image folder's splits
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_image_folder(data: Path) -> bool:
    return (data / TRAIN).is_dir()


def load_train_val(data: Path, dataset: str, val_size: int, seed: int,
                   image_size: tuple[int, int] | None = None) -> tuple[LabelledImages, LabelledImages | None]:
    """An image folder's val/ is its validation split (val_size 0 still switches validation off); otherwise
    val_size random training images are held out."""
    if not is_image_folder(data):
        return split_validation(load_split(data, dataset, train=True), val_size, seed)
    folder = ImageFolderSplits(data, image_size)
    if (data / VAL).is_dir():
        return folder.load(TRAIN), folder.load(VAL) if val_size else None
    return split_validation(folder.load(TRAIN), val_size, seed)


def load_test(data: Path, dataset: str, image_size: tuple[int, int] | None = None) -> LabelledImages:
    if not is_image_folder(data):
        return load_split(data, dataset, train=False)
    return ImageFolderSplits(data, image_size).load(TEST)


class ImageFolderSplits:
    """The splits of one image folder, listed and decoded by torchvision's ImageFolder with the classes of train/."""

    def __init__(self, root: Path, image_size: tuple[int, int] | None) -> None:
        self.root, self.image_size = root, image_size
        self.classes = tuple(_class_folders(root / TRAIN))
        if not self.classes:
            raise DataError(f"{root / TRAIN}: no class folders (expected {TRAIN}/<class>/<image>)")
        self._reference: tuple[str, tuple[str, tuple[int, int]]] | None = None  # mode; a training image's path, size

    def load(self, split: str) -> LabelledImages:
        folder = self._listed(split)
        samples = folder.samples
        images = [folder[i][0] for i in range(len(folder))]  # decoded by its loader, _open
        mode, size = self._training_format()
        if self.image_size is None:
            _same_size(samples, images, size)
        pixels = torch.stack([_to_tensor(image, mode, self.image_size) for image in images])
        return LabelledImages(pixels, torch.tensor([label for _, label in samples]), self.classes)

    def _listed(self, split: str) -> Any:
        """The split as an ImageFolder labelled by train/'s classes; an empty or unknown class is an error."""
        from torchvision.datasets.folder import IMG_EXTENSIONS

        folder = self.root / split
        if not folder.is_dir():
            raise DataError(f"{folder}: missing (an image folder has {TRAIN}/ and {TEST}/, each <class>/<image>)")
        unknown = sorted(set(_class_folders(folder)) - set(self.classes))
        if unknown:
            raise DataError(f"{folder / unknown[0]}: class '{unknown[0]}' is not in {self.root / TRAIN} "
                            f"(its classes: {', '.join(self.classes)})")
        listed = _image_folder(folder, self.classes)
        found = {label for _, label in listed.samples}
        for name in _class_folders(folder):
            if self.classes.index(name) not in found:
                raise DataError(f"{folder / name}: empty class: no images ({', '.join(IMG_EXTENSIONS)})")
        if not listed.samples:
            raise DataError(f"{folder}: no class folders with images")
        return listed

    def _training_format(self) -> tuple[str, tuple[str, tuple[int, int]]]:
        """Grayscale when every training image is, else RGB; and one training image's size, which every image of
        every split must have unless train.image_size resizes them. Read from the files' headers."""
        if self._reference is None:
            headers = [(path, *_header(Path(path))) for path, _ in self._listed(TRAIN).samples]
            mode = "L" if all(header[1] in GRAYSCALE_MODES for header in headers) else "RGB"
            self._reference = (mode, (headers[0][0], headers[0][2]))
        return self._reference


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def _image_folder(root: Path, classes: tuple[str, ...]) -> Any:
    """ImageFolder over `root` labelled by the training split's classes (its own find_classes would list root's)."""
    from torchvision.datasets import ImageFolder

    class TrainClasses(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            return list(classes), {name: index for index, name in enumerate(classes)}

    return TrainClasses(str(root), loader=_open, allow_empty=True)


def _open(path: Path | str) -> Any:
    """The decoded image, in its own mode; an unreadable file is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _to_tensor(image: Any, mode: str, size: tuple[int, int] | None) -> torch.Tensor:
    from torchvision.transforms import functional as TF

    image = image.convert(mode)
    if size is not None and (image.height, image.width) != tuple(size):
        image = TF.resize(image, list(size), antialias=True)
    return TF.to_tensor(image)


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (width, height), without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return opened.mode, opened.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _same_size(samples: list[tuple[str, int]], images: list[Any], reference: tuple[str, tuple[int, int]]) -> None:
    """Mixed sizes cannot be stacked: name two files that differ (train.image_size resizes them instead)."""
    first, (width, height) = reference
    for (path, _), image in zip(samples, images, strict=True):
        if image.size != (width, height):
            raise DataError(f"{path} is {image.width}x{image.height} but {first} is {width}x{height}; "
                            "set train.image_size: [height, width] to resize every image")


def channel_stats(data: TensorData) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training pixels, folded into the model's graph."""
    dims = [0, 2, 3]
    return data.inputs.mean(dim=dims).tolist(), data.inputs.std(dim=dims).tolist()
