"""Image files -> the exported ONNX model's input, the way the dataset's images were made -> top-k classes.

Fashion-MNIST's images were made from product photos: edges close to the background trimmed, the longest side
scaled to 28 pixels, centred on a 28x28 canvas, grayscale, and negated, so objects are light on a black background.
`load_image` does the same: alpha is composited onto white, the image is inverted when its border is light
(`invert="auto"`; `yes`/`no` force it), the background (within 5% of the border's median) trimmed, the rest padded
to a square with the background and resized to the model's input size with Lanczos filtering. An image
already of the input size (one of the dataset's own) is only inverted if need be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dltorch.errors import CheckpointError, DltorchError

LIGHT_BORDER = 0.5  # mean border intensity in [0, 1] above which `auto` takes the background for light
TRIM_TOLERANCE = 0.05  # as the dataset's makers: background is within 5% of the maximum intensity of the border


class ImageError(DltorchError):
    """An image file is missing, unreadable or not an image."""


def load_image(path: Path, size: tuple[int, int], channels: int = 1, invert: str = "auto") -> np.ndarray:
    """One file as float32 pixels in [0, 1], shape (channels, height, width)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if invert == "yes" or (invert == "auto" and _border_mean(pixels) > LIGHT_BORDER):
        pixels = 1.0 - pixels
    if pixels.shape[:2] != size:  # an image already of the input size (one of the dataset's) is used as it is
        background = _border_value(pixels)
        pixels = _pad_to_square(_trim(pixels, background), background)
        resized = Image.fromarray(np.uint8(np.clip(pixels, 0, 1) * 255 + 0.5).squeeze())
        pixels = np.asarray(resized.resize((size[1], size[0]), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0].reshape(-1), pixels[-1].reshape(-1), pixels[:, 0].reshape(-1),
                           pixels[:, -1].reshape(-1)])


def _border_mean(pixels: np.ndarray) -> float:
    return float(_border(pixels).mean())


def _border_value(pixels: np.ndarray) -> float:
    return float(np.median(_border(pixels)))


def _trim(pixels: np.ndarray, background: float) -> np.ndarray:
    """Crop to the box of pixels that differ from the background; a blank image is kept whole."""
    differs = np.abs(pixels - background) > TRIM_TOLERANCE
    if differs.ndim == 3:
        differs = differs.any(axis=2)
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if len(rows) == 0:
        return pixels
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _pad_to_square(pixels: np.ndarray, fill: float) -> np.ndarray:
    """Keep the aspect ratio: extend the short side with the background, centred (as the dataset's makers did)."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    canvas = np.full((side, side, *pixels.shape[2:]), fill, dtype=np.float32)
    canvas[top : top + height, left : left + width] = pixels
    return canvas


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _class_names(session: Any, onnx_path: Path) -> list[str]:
    """The class names export wrote into the file (the training data's: folder names, or the fetched set's)."""
    from dltorch.export import CLASSES_KEY, read_metadata

    names = read_metadata(session).get(CLASSES_KEY)
    if names is None:
        raise CheckpointError(f"{onnx_path}: no class names in its metadata ({CLASSES_KEY}); export it again "
                              "(dvc repro export@<model>)")
    return json.loads(names)


class Predictor:
    """An onnxruntime session on one ONNX file; the input size and channels come from the graph itself."""

    def __init__(self, onnx_path: Path, invert: str = "auto") -> None:
        from dltorch.export import onnx_session

        if not onnx_path.is_file():
            raise CheckpointError(f"{onnx_path}: no exported model; run the export stage first (dvc repro)")
        try:
            self.session = onnx_session(onnx_path)
        except Exception as exc:  # onnxruntime raises its own exception types for a corrupt file
            raise CheckpointError(f"{onnx_path}: not a loadable ONNX model ({exc})") from None
        spec = self.session.get_inputs()[0]
        if len(spec.shape) != 4 or not all(isinstance(side, int) for side in spec.shape[1:]):
            raise CheckpointError(f"{onnx_path}: not an image classifier: its input '{spec.name}' has shape "
                                  f"{spec.shape}, not (batch, channels, height, width)")
        self.input_name = spec.name
        self.channels, self.height, self.width = spec.shape[1:]
        self.classes, self.invert = _class_names(self.session, onnx_path), invert

    def logits(self, paths: list[Path]) -> np.ndarray:
        batch = np.stack([load_image(path, (self.height, self.width), self.channels, self.invert) for path in paths])
        return self.session.run(None, {self.input_name: batch})[0]

    def top_k(self, path: Path, k: int) -> list[dict[str, Any]]:
        probabilities = softmax(self.logits([path])[0])
        order = np.argsort(-probabilities)[:k]
        return [{"class": self.classes[i], "index": int(i), "probability": float(probabilities[i])} for i in order]
