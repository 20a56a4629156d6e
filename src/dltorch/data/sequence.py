"""The `sequences` set: sums of sines with random frequencies and phases plus noise, cut into forecasting windows.

A set is a folder: `series.csv` (header `split,v0,...`; one series a row, floats at full precision, so the same
params give the same bytes) and `spec.json` (window, horizon, moving-average span), so the folder describes its
own forecasting problem. Whole series go to one split: no window of a validation or test series was trained on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dltorch.config import SequencesConfig
from dltorch.errors import DataError
from dltorch.io import atomic_dir, folder_digest, write_csv

SERIES_FILE, SPEC_FILE = "series.csv", "spec.json"
SPLITS = ("train", "val", "test")
COMPONENTS = 3  # sines per series
PERIODS = (8.0, 64.0)  # steps per cycle, drawn uniformly
AMPLITUDES = (0.3, 1.0)


@dataclass(frozen=True)
class Spec:
    window: int  # steps the model reads
    horizon: int  # steps it predicts
    moving_average: int  # the moving-average baseline's span


@dataclass(frozen=True)
class SeriesSet:
    values: np.ndarray  # float64, (series, length)
    split: np.ndarray  # "train", "val" or "test" per series
    spec: Spec

    def part(self, split: str) -> np.ndarray:
        return self.values[self.split == split]


def generate(cfg: SequencesConfig) -> SeriesSet:
    """Each series: COMPONENTS sines with periods, phases and amplitudes of its own, plus Gaussian noise.
    The first series train, the next val_count validate, the last test_count test."""
    rng = np.random.default_rng(cfg.seed)
    shape = (cfg.count, COMPONENTS, 1)
    periods = rng.uniform(*PERIODS, size=shape)
    phases = rng.uniform(0, 2 * np.pi, size=shape)
    amplitudes = rng.uniform(*AMPLITUDES, size=shape)
    steps = np.arange(cfg.length)
    clean = (amplitudes * np.sin(2 * np.pi * steps / periods + phases)).sum(axis=1)
    values = clean + cfg.noise * rng.standard_normal((cfg.count, cfg.length))
    train = cfg.count - cfg.val_count - cfg.test_count
    split = np.array(["train"] * train + ["val"] * cfg.val_count + ["test"] * cfg.test_count, dtype=object)
    return SeriesSet(values, split, Spec(cfg.window, cfg.horizon, cfg.moving_average))


def write(data: SeriesSet, folder: Path) -> str:
    """The set as <folder>/series.csv and spec.json, replacing the folder atomically; returns its SHA-256."""
    with atomic_dir(folder) as tmp:
        write_csv(tmp / SERIES_FILE, ["split", *(f"v{i}" for i in range(data.values.shape[1]))],
                  ([s, *map(float, row)] for s, row in zip(data.split, data.values, strict=True)))
        (tmp / SPEC_FILE).write_text(json.dumps(data.spec.__dict__, indent=2) + "\n")
    return folder_digest(folder)


def read(folder: Path) -> SeriesSet:
    """Read a set written by `write`; a missing or malformed file is a DataError naming the file (and line)."""
    series, spec_file = folder / SERIES_FILE, folder / SPEC_FILE
    for path in (series, spec_file):
        if not path.is_file():
            raise DataError(f"{path}: missing; run the synth stage first (dvc repro synth)")
    try:
        spec = Spec(**json.loads(spec_file.read_text()))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{spec_file}: not a sequences spec (window, horizon, moving_average): {exc}") from None
    with open(series, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:1] != ["split"] or len(rows) < 2:
        raise DataError(f"{series}: not a sequences file (a header split,v0,... and one series a row)")
    length = len(rows[0]) - 1
    splits, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != length + 1 or row[0] not in SPLITS:
                raise ValueError
            values.append([float(v) for v in row[1:]])
        except ValueError:
            raise DataError(f"{series}: line {line}: expected a split ({'|'.join(SPLITS)}) and {length} numbers") \
                from None
        splits.append(row[0])
    if spec.window + spec.horizon > length:
        raise DataError(f"{spec_file}: window + horizon ({spec.window} + {spec.horizon}) exceed the series' length "
                        f"{length}")
    return SeriesSet(np.array(values), np.array(splits, dtype=object), spec)


def windows(series: np.ndarray, window: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of each series, stride 1: inputs (N, window, 1) and the next `horizon` values (N, horizon)."""
    if len(series) == 0:
        return torch.zeros(0, window, 1), torch.zeros(0, horizon)
    cut = np.lib.stride_tricks.sliding_window_view(series, window + horizon, axis=1).reshape(-1, window + horizon)
    cut = torch.from_numpy(np.ascontiguousarray(cut)).float()
    return cut[:, :window].unsqueeze(-1), cut[:, window:]


def last_value_forecast(inputs: np.ndarray, horizon: int) -> np.ndarray:
    """The naive baseline: every future step repeats the window's last value. inputs (N, window[, 1])."""
    last = inputs.reshape(len(inputs), -1)[:, -1:]
    return np.repeat(last, horizon, axis=1)


def moving_average_forecast(inputs: np.ndarray, horizon: int, span: int) -> np.ndarray:
    """Every future step is the mean of the window's last `span` values."""
    mean = inputs.reshape(len(inputs), -1)[:, -span:].mean(axis=1, keepdims=True)
    return np.repeat(mean, horizon, axis=1)
