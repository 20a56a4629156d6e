"""Fixtures: tiny IDX data the tests write themselves, a shrunken params profile, a private MLflow store for
every test."""

from __future__ import annotations

import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from dltorch import precision
from dltorch.config import Params, parse_params
from dltorch.data.fetch import IDX_FILES

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN, TINY_TEST = 300, 60


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x08 = ubyte, then big-endian dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: class k lights up rows 2k+4..2k+5, over noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for index, label in enumerate(labels):
        images[index, 2 * label + 4 : 2 * label + 6, 4:24] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


def tiny_idx_files(seed: int = 0) -> dict[str, bytes]:
    train_images, train_labels = tiny_split(TINY_TRAIN, seed)
    test_images, test_labels = tiny_split(TINY_TEST, seed + 1)
    arrays = (train_images, train_labels, test_images, test_labels)
    return {name: idx_bytes(array) for name, array in zip(IDX_FILES, arrays, strict=True)}


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    """A folder laid out like Debian's dataset package: four IDX .gz files."""
    folder = tmp_path / "source"
    folder.mkdir()
    for name, data in tiny_idx_files().items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return folder


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    """Decompressed tiny files in torchvision's layout, as the fetch stage leaves them."""
    root = tmp_path / "raw"
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    for name, data in tiny_idx_files().items():
        (folder / name).write_bytes(data)
    return root


def tiny_params_dict(**train_overrides) -> dict:
    train = {"epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "val_size": 40, "seed": 0}
    train.update(train_overrides)
    return {
        "fetch": {"dataset": "fashion_mnist", "source_dir": None, "download": False},
        "mlflow": {"experiment": "tests"},
        "models": {"mlp": {"arch": "mlp", "task": "classification", "data": "raw", "args": {"hidden": [16]},
                           "train": train}},
    }


# Tiny versions of the sequences and shapes sets: tests train on them in seconds.
TINY_SEQUENCES = {"seed": 0, "count": 12, "length": 40, "noise": 0.05, "window": 16, "horizon": 4, "val_count": 2,
                  "test_count": 2, "moving_average": 4}
TINY_SHAPES = {"seed": 0, "count": 24, "size": 32, "val_count": 8}
TINY_SBM = {"seed": 0, "classes": 3, "nodes_per_class": 20, "p_in": 0.3, "p_out": 0.02, "features": 8, "signal": 1.0,
            "noise": 1.5, "train_per_class": 3, "val_size": 10}


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    """data/ as after the synth stage with the course's default sets (<root>/synthetic/<set>.csv), tiny
    sequences and shapes sets (<root>/synthetic/sequences/, <root>/synthetic/shapes/), a tiny SBM graph and the
    karate club (<root>/synthetic/sbm.npz, karate.npz)."""
    from dltorch.config import SynthConfig
    from dltorch.data.synth import write_sets

    write_sets(SynthConfig(sequences=TINY_SEQUENCES, shapes=TINY_SHAPES, sbm=TINY_SBM),
               tmp_path / "data" / "synthetic")
    return tmp_path / "data"


@pytest.fixture
def folders_root(tmp_path: Path, raw_root: Path) -> Path:
    """data/ as after the folders stage on the tiny IDX set (<root>/folders/fashion_mnist/{train,test}/<class>/),
    8 training and 1 test image per class."""
    from dltorch.config import FoldersConfig
    from dltorch.data.folders import write_image_folders

    config = FoldersConfig(train_per_class=8, test_per_class=1)
    write_image_folders(raw_root, "fashion_mnist", config, tmp_path / "data" / "folders" / "fashion_mnist")
    return tmp_path / "data"


@pytest.fixture
def tiny_params() -> Params:
    return parse_params(tiny_params_dict())


@pytest.fixture(autouse=True, scope="session")
def precision_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`precision: auto` verdicts go to the session's own cache, never the user's ~/.cache (subprocesses inherit)."""
    folder = tmp_path_factory.mktemp("precision-cache")
    os.environ[precision.CACHE_ENV] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test tracks into its own temporary store, never the repository's mlflow.db. Subprocesses inherit
    it; a test that wants another store (a tracking server, a repo copy's) sets MLFLOW_TRACKING_URI itself."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if "mlflow" in sys.modules:  # an earlier test may have set MLflow's process-wide URI, which beats the environment
        sys.modules["mlflow"].set_tracking_uri(uri)
    return uri
