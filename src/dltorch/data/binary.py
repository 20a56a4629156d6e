"""The `blobs` set of the logistic-regression lesson: two classes of 2-D points, each a Gaussian blob, as a CSV.

Both blobs share one spherical covariance (std `noise`), centred at +-(center, center). For such classes the
posterior is exactly logistic, p(class 1 | x) = sigmoid(w . x + b) with w = 2 (center, center) / noise^2 and b = 0,
so logistic regression is the right model, and the true boundary (the line x1 + x2 = 0) is known. Files are
`x1,x2,label,split` rows at full precision (repr round-trips): byte-identical for the same params.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dltorch.config import BlobsConfig
from dltorch.errors import DataError
from dltorch.io import read_csv_rows, write_csv

HEADER = ["x1", "x2", "label", "split"]
SPLITS = ("train", "test")


@dataclass(frozen=True)
class PointSet:
    points: np.ndarray  # float64, (N, 2)
    labels: np.ndarray  # 0 or 1, (N,)
    split: np.ndarray  # "train" or "test", (N,)

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.split == split
        return self.points[rows], self.labels[rows]


def generate(cfg: BlobsConfig) -> PointSet:
    """Labels by fair coin, then each point's noise: class 1 around (center, center), class 0 around its
    mirror; the first train_size rows train, the rest test."""
    rng = np.random.RandomState(cfg.seed)
    labels = rng.randint(0, 2, cfg.size)
    centres = np.where(labels[:, None] == 1, cfg.center, -cfg.center)
    points = centres + cfg.noise * rng.randn(cfg.size, 2)
    split = np.where(np.arange(cfg.size) < cfg.train_size, "train", "test").astype(object)
    return PointSet(points, labels, split)


def write(data: PointSet, path: Path) -> str:
    """Write the CSV atomically; returns its SHA-256."""
    rows = ((float(x1), float(x2), int(label), split)
            for (x1, x2), label, split in zip(data.points, data.labels, data.split, strict=True))
    write_csv(path, HEADER, rows)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> PointSet:
    """Read a set written by `write`; a missing or malformed file is a DataError naming file and line."""
    rows = read_csv_rows(path, HEADER, "a two-class point set")
    parsed = [_parse_row(row, path, line) for line, row in enumerate(rows, start=2)]
    x1, x2, labels, split = zip(*parsed, strict=True)
    return PointSet(np.stack([x1, x2], axis=1), np.array(labels), np.array(split, dtype=object))


def _parse_row(row: list[str], path: Path, line: int) -> tuple[float, float, int, str]:
    try:
        if len(row) != 4 or row[2] not in ("0", "1") or row[3] not in SPLITS:
            raise ValueError
        return float(row[0]), float(row[1]), int(row[2]), row[3]
    except ValueError:
        raise DataError(f"{path}: line {line}: expected x1,x2,label,split with two numbers, label 0|1 and "
                        "split train|test") from None
