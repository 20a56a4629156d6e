"""The `shapes` set: RGB images of ellipses, rectangles and car-like blobs over textured, noisy backgrounds, with
binary masks of the foreground, laid out as the course's Carvana data: `<split>/images/<id>.jpg` and
`<split>/masks/<id>_mask.gif` for the splits train/ and val/. One seeded generator draws every image in order,
so the same params give the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dltorch.config import ShapesConfig
from dltorch.data.segmentation import IMAGES, MASKS
from dltorch.io import atomic_dir, folder_digest

JPEG_QUALITY = 90
KINDS = ("ellipse", "rectangle", "car")
MIN_CONTRAST = 90.0  # least RGB distance between an object's colour and the background's mean colour


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A base colour, a smooth blotchy texture, a grating of random direction and pitch, and pixel noise."""
    base = rng.uniform(40, 215, 3)
    coarse = rng.normal(0, 1, (size // 8 + 2, size // 8 + 2, 3))
    blotches = np.kron(coarse, np.ones((8, 8, 1)))[:size, :size] * 25  # nearest upsampling, then a box blur
    blotches = (blotches + np.roll(blotches, 4, 0) + np.roll(blotches, 4, 1) + np.roll(blotches, (4, 4), (0, 1))) / 2
    y, x = np.mgrid[0:size, 0:size]
    angle, pitch, phase = rng.uniform(0, np.pi), rng.uniform(5, 16), rng.uniform(0, 2 * np.pi)
    grating = 20 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / pitch + phase)[..., None]
    noise = rng.normal(0, 12, (size, size, 3))
    return base + blotches + grating + noise


def _polygon(rng: np.random.Generator, kind: str, size: int) -> list[list[tuple[float, float]]]:
    """One object as polygons (x, y): a rotated ellipse or rectangle, or a car (body, cabin, two wheels)."""
    cx, cy = rng.uniform(0.25 * size, 0.75 * size, 2)
    angle = rng.uniform(0, np.pi)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if kind == "ellipse":
        a, b = rng.uniform(0.1 * size, 0.25 * size, 2)
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        points = np.stack([a * np.cos(t), b * np.sin(t)], 1)
        return [[tuple(p) for p in points @ rotate.T + (cx, cy)]]
    if kind == "rectangle":
        w, h = rng.uniform(0.1 * size, 0.25 * size, 2)
        points = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
        return [[tuple(p) for p in points @ rotate.T + (cx, cy)]]
    if kind == "car":  # side view, tilted a little: a long body, a cabin on top, two wheels below
        length = rng.uniform(0.35 * size, 0.55 * size)
        height = length * rng.uniform(0.25, 0.35)
        tilt = np.array([[np.cos(angle / 6), -np.sin(angle / 6)], [np.sin(angle / 6), np.cos(angle / 6)]])
        body = np.array([[-0.5, 0.0], [0.5, 0.0], [0.5, -0.6], [0.4, -0.75], [-0.45, -0.75], [-0.5, -0.6]])
        cabin = np.array([[-0.25, -0.7], [0.2, -0.7], [0.1, -1.2], [-0.15, -1.2]])
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        wheel = np.stack([0.11 * np.cos(t), 0.11 * length / height * np.sin(t)], 1)  # round once scaled
        wheels = [wheel + (x, 0.0) for x in (-0.3, 0.3)]
        flip = rng.choice([-1.0, 1.0])
        shapes = []
        for part in (body, cabin, *wheels):
            scaled = part * (length * flip, height) + (0, height / 2)
            shapes.append([tuple(p) for p in scaled @ tilt.T + (cx, cy)])
        return shapes
    raise ValueError(f"unknown shape kind '{kind}'; known: {', '.join(KINDS)}")


def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8 and its mask (size, size) bool: 1 to 3 objects over a background."""
    from PIL import Image, ImageDraw

    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=bool)
    base = image.mean(axis=(0, 1))
    for _ in range(rng.integers(1, 4)):
        kind = KINDS[rng.integers(len(KINDS))]
        layer = Image.new("L", (size, size))
        for polygon in _polygon(rng, kind, size):
            ImageDraw.Draw(layer).polygon(polygon, fill=255)
        inside = np.asarray(layer) > 0
        colour = rng.uniform(0, 255, 3)
        while np.linalg.norm(colour - base) < MIN_CONTRAST:  # redraw until the object stands out
            colour = rng.uniform(0, 255, 3)
        shading = np.linspace(-15, 15, size)[None, :, None] * rng.choice([-1, 1])
        fill = colour + shading + rng.normal(0, 6, (size, size, 3))
        image[inside] = fill[inside]
        mask |= inside
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write(cfg: ShapesConfig, folder: Path) -> str:
    """Every image and mask under <folder>/{train,val}/{images,masks}/, replacing the folder atomically.
    Returns the SHA-256 over every file's relative path and bytes."""
    from PIL import Image

    rng = np.random.default_rng(cfg.seed)
    train_count = cfg.count - cfg.val_count
    with atomic_dir(folder) as tmp:
        for index in range(cfg.count):
            split = "train" if index < train_count else "val"
            image, mask = draw(rng, cfg.size)
            for sub in (IMAGES, MASKS):
                (tmp / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "RGB").save(tmp / split / IMAGES / f"{index:04d}.jpg", quality=JPEG_QUALITY)
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp / split / MASKS / f"{index:04d}_mask.gif")
    return folder_digest(folder)
