"""Fixtures: tiny IDX data the tests write themselves, a shrunken params profile, a private MLflow store for
every test."""

from __future__ import annotations

import gzip
import os
import shutil
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


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs `-n auto`), each worker gets its share of the cores: torch's threads and
    OMP_NUM_THREADS for the stage processes it starts, so N workers do not run N x cores threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under `--dist loadgroup` an xdist_group test must carry its group in its node id: that is how pytest-xdist
    sends a group to one worker. With pytest 9.2 it does not (pytest-xdist issue 1386), and the group's servers and
    repos would be built once per worker, silently. Fail the group's tests instead."""
    if (os.environ.get("PYTEST_XDIST_WORKER") and item.config.getoption("loadgroup", False)
            and item.get_closest_marker("xdist_group") and "@" not in item.nodeid):
        pytest.fail(f"--dist loadgroup does not group {item.nodeid} under pytest {pytest.__version__}: install "
                    "requirements.txt's pytest", pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end tests first, so that pytest-xdist's workers start on them and the many short tests fill
    in around them (longest first), instead of one worker finishing on a long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    """A folder laid out like Debian's dataset package: four IDX .gz files."""
    folder = tmp_path / "source"
    folder.mkdir()
    for name, data in tiny_idx_files().items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return folder


def write_tiny_raw(root: Path) -> Path:
    """The tiny IDX files decompressed in torchvision's layout under `root`, as the fetch stage leaves them."""
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    for name, data in tiny_idx_files().items():
        (folder / name).write_bytes(data)
    return root


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    """Decompressed tiny files in torchvision's layout, as the fetch stage leaves them."""
    return write_tiny_raw(tmp_path / "raw")


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


@pytest.fixture(scope="session")
def synthetic_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synth stage's output, written once a session: params.yaml's CSV sets, tiny sequences and shapes sets,
    a tiny SBM graph and the karate club. Tests get copies (synthetic_root), or read it in place."""
    from dltorch.config import SynthConfig, load_params
    from dltorch.data.synth import write_sets

    folder = tmp_path_factory.mktemp("synthetic") / "synthetic"
    repo = load_params(REPO / "params.yaml").synth.model_dump()
    write_sets(SynthConfig.model_validate({**repo, "sequences": TINY_SEQUENCES, "shapes": TINY_SHAPES,
                                           "sbm": TINY_SBM}), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_image_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folders stage's output on the tiny IDX set, written once a session: 8 training and 1 test image per
    class. Tests get copies (folders_root)."""
    from dltorch.config import FoldersConfig
    from dltorch.data.folders import write_image_folders

    root = tmp_path_factory.mktemp("folders")
    write_image_folders(write_tiny_raw(root / "raw"), "fashion_mnist",
                        FoldersConfig(train_per_class=8, test_per_class=1), root / "fashion_mnist")
    return root / "fashion_mnist"


@pytest.fixture
def synthetic_root(tmp_path: Path, synthetic_sets: Path) -> Path:
    """data/ as after the synth stage (<root>/synthetic/<set>.csv, <root>/synthetic/sequences/,
    <root>/synthetic/shapes/, <root>/synthetic/sbm.npz, karate.npz): a copy this test may change."""
    shutil.copytree(synthetic_sets, tmp_path / "data" / "synthetic")
    return tmp_path / "data"


@pytest.fixture
def folders_root(tmp_path: Path, tiny_image_folders: Path) -> Path:
    """data/ as after the folders stage on the tiny IDX set (<root>/folders/fashion_mnist/{train,test}/<class>/),
    8 training and 1 test image per class: a copy this test may change."""
    shutil.copytree(tiny_image_folders, tmp_path / "data" / "folders" / "fashion_mnist")
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


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow database with its tables made, built once: making them runs MLflow's migrations, over a second a
    store, and every test gets a fresh store (a copy of this file)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"))
    store.engine.dispose()  # closed, so the file is complete before it is copied
    return folder / "mlflow.db"


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path) -> str:
    """Every test tracks into its own temporary store, never the repository's mlflow.db. Subprocesses inherit
    it; a test that wants another store (a tracking server, a repo copy's) sets MLFLOW_TRACKING_URI itself."""
    shutil.copyfile(empty_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if "mlflow" in sys.modules:  # an earlier test may have set MLflow's process-wide URI, which beats the environment
        sys.modules["mlflow"].set_tracking_uri(uri)
    return uri
