"""The course's synthetic sets, drawn exactly as its own code draws them, and their CSV files.

Each generator uses its own RNG seeded from params (numpy's RandomState and a torch Generator give the same
streams as the course's global `np.random.seed` / `torch.manual_seed`), and draws in the course's order,
so a set equals the course's for the same seed. Files are `x,y,split` rows with floats at full precision
(repr round-trips), hence byte-identical for the same params.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dltorch.config import HeldOutSetConfig, SetConfig, ShuffledSplitSetConfig, SplitSetConfig, SynthConfig
from dltorch.errors import DataError
from dltorch.io import read_csv_rows, write_csv

HEADER = ["x", "y", "split"]
SPLITS = ("train", "test")


@dataclass(frozen=True)
class SetData:
    x: np.ndarray  # float64, (N,)
    y: np.ndarray  # float64, (N,)
    split: np.ndarray  # "train" or "test", (N,)

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.split == split
        return self.x[rows], self.y[rows]


def _labels(size: int, train_rows: np.ndarray) -> np.ndarray:
    split = np.full(size, "test", dtype=object)
    split[train_rows] = "train"
    return split


def line(cfg: SplitSetConfig) -> SetData:
    """np.random.seed(0); x = rand(100); y = 2x + 3 + randn(100); the first 80 rows train, the last 20 test."""
    rng = np.random.RandomState(cfg.seed)
    x = rng.rand(cfg.size)
    y = 2 * x + 3 + cfg.noise * rng.randn(cfg.size)
    return SetData(x, y, _labels(cfg.size, np.arange(cfg.train_size)))


def line_small_noise(cfg: HeldOutSetConfig) -> SetData:
    """np.random.seed(42); x = rand(100, 1); y = 1 + 2x + 0.1 randn(100, 1): the course trains on all 100 rows.
    The test rows are an extra the course does not have: test_size more points drawn after, from the same RNG,
    so they leave the course's training rows untouched."""
    rng = np.random.RandomState(cfg.seed)
    x = rng.rand(cfg.size, 1)
    y = 1 + 2 * x + cfg.noise * rng.randn(cfg.size, 1)
    x_test = rng.rand(cfg.test_size, 1)
    y_test = 1 + 2 * x_test + cfg.noise * rng.randn(cfg.test_size, 1)
    xs, ys = np.concatenate([x, x_test]).ravel(), np.concatenate([y, y_test]).ravel()
    return SetData(xs, ys, _labels(cfg.size + cfg.test_size, np.arange(cfg.size)))


def quadratic(cfg: ShuffledSplitSetConfig) -> SetData:
    """np.random.seed(32); x ~ uniform(-5, 5, 100); y = x^2 + 1 + 5 normal(0, 1, 100); then the course's
    train_test_split(X, Y, test_size=0.3, random_state=split_seed), reproduced without sklearn: its ShuffleSplit
    draws RandomState(random_state).permutation(n); the first n_test indices test, the next n_train train.
    Rows are written in that order (train rows, then test rows), so each part equals the course's X_train / X_test."""
    rng = np.random.RandomState(cfg.seed)
    x = rng.uniform(-5, 5, cfg.size)
    y = x**2 + 1 + cfg.noise * rng.normal(0, 1, cfg.size)
    test_size = cfg.size - cfg.train_size
    order = np.random.RandomState(cfg.split_seed).permutation(cfg.size)
    rows = np.concatenate([order[test_size:], order[:test_size]])  # train rows first, each part in permutation order
    return SetData(x[rows], y[rows], _labels(cfg.size, np.arange(cfg.train_size)))


def parabola(cfg: SetConfig) -> SetData:
    """np.random.seed(0); x = linspace(-5, 5, 1000); y = 0.3 x^2 + randn(1000); every row trains."""
    rng = np.random.RandomState(cfg.seed)
    x = np.linspace(-5, 5, cfg.size)
    y = 0.3 * x**2 + cfg.noise * rng.randn(cfg.size)
    return SetData(x, y, _labels(cfg.size, np.arange(cfg.size)))


def dropout_points(cfg: SetConfig) -> SetData:
    """torch.manual_seed(2333); 20 points on linspace(-1, 1); y = x + 0.3 normal, then a test y drawn
    independently on the same x (float32, as the course)."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed)
    x = torch.unsqueeze(torch.linspace(-1, 1, cfg.size), 1)
    noise = [torch.normal(torch.zeros(cfg.size, 1), torch.ones(cfg.size, 1), generator=generator) for _ in SPLITS]
    y_train, y_test = (x + cfg.noise * draw for draw in noise)
    xs = np.concatenate([x.numpy().ravel()] * 2).astype(np.float64)
    ys = np.concatenate([y_train.numpy().ravel(), y_test.numpy().ravel()]).astype(np.float64)
    return SetData(xs, ys, _labels(2 * cfg.size, np.arange(cfg.size)))


def adagrad_line(cfg: SetConfig) -> SetData:
    """The AdaGrad lesson's data: X = torch.randn(100, 1); y = 2X + 3 + torch.randn(100, 1); every row trains.
    The course's randn is unseeded; torch.manual_seed(seed) precedes it here (float32, as the course)."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.size, 1, generator=generator)
    y = 2 * x + 3 + cfg.noise * torch.randn(cfg.size, 1, generator=generator)
    return SetData(x.numpy().ravel().astype(np.float64), y.numpy().ravel().astype(np.float64),
                   _labels(cfg.size, np.arange(cfg.size)))


GENERATORS = {"line": line, "line_small_noise": line_small_noise, "quadratic": quadratic, "parabola": parabola,
              "dropout_points": dropout_points, "adagrad_line": adagrad_line}


def generate(name: str, cfg: SynthConfig) -> SetData:
    if name not in GENERATORS:
        raise ValueError(f"unknown synthetic set '{name}'; known: {', '.join(GENERATORS)}")
    return GENERATORS[name](getattr(cfg, name))


def write_set(data: SetData, path: Path) -> str:
    """Write the CSV atomically; returns its SHA-256."""
    write_csv(path, HEADER, ((float(x), float(y), s) for x, y, s in zip(data.x, data.y, data.split, strict=True)))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_set(path: Path) -> SetData:
    """Read a set written by write_set; a missing or malformed file is a DataError naming file and line."""
    rows = read_csv_rows(path, HEADER, "a synthetic set")
    parsed = [_parse_row(row, path, line) for line, row in enumerate(rows, start=2)]
    x, y, split = zip(*parsed, strict=True)
    return SetData(np.array(x), np.array(y), np.array(split, dtype=object))


def _parse_row(row: list[str], path: Path, line: int) -> tuple[float, float, str]:
    try:
        if len(row) != 3 or row[2] not in SPLITS:
            raise ValueError
        return float(row[0]), float(row[1]), row[2]
    except ValueError:
        raise DataError(f"{path}: line {line}: expected x,y,split with two numbers and split train|test") from None
