"""fetch: checksummed local copies, the download fallback, and clear errors that leave nothing behind."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from dltorch.data import fetch
from dltorch.data.classification import load_split
from dltorch.data.fetch import IDX_FILES, fetch_dataset
from dltorch.errors import DataError
from tests.conftest import TINY_TEST, TINY_TRAIN, tiny_idx_files


@pytest.fixture
def tiny_checksums(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make the tiny files the 'known' Fashion-MNIST, as if their sums were the published ones."""
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in tiny_idx_files().items()}
    spec = dataclasses.replace(fetch.DATASETS["fashion_mnist"], checksums=sums)
    monkeypatch.setitem(fetch.DATASETS, "fashion_mnist", spec)
    return sums


def test_real_checksums_are_sha256_of_all_four_files():
    spec = fetch.DATASETS["fashion_mnist"]
    assert spec.algorithm == "sha256" and set(spec.checksums) == set(IDX_FILES)
    assert all(len(digest) == 64 for digest in spec.checksums.values())


def test_local_copy_is_verified_and_laid_out_for_torchvision(tmp_path, tiny_source, tiny_checksums):
    folder = fetch_dataset("fashion_mnist", tiny_source, download=False, out_root=tmp_path / "raw")
    assert folder == tmp_path / "raw" / "FashionMNIST" / "raw"
    for name in IDX_FILES:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == tiny_checksums[name]
    train = load_split(tmp_path / "raw", "fashion_mnist", train=True)
    assert train.inputs.shape == (TINY_TRAIN, 1, 28, 28) and train.inputs.dtype == torch.float32
    assert float(train.inputs.max()) <= 1.0 and len(load_split(tmp_path / "raw", "fashion_mnist", False)) == TINY_TEST


def test_uncompressed_local_copy_works_too(tmp_path, tiny_source, tiny_checksums):
    for gz in tiny_source.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    folder = fetch_dataset("fashion_mnist", tiny_source, download=False, out_root=tmp_path / "raw")
    for name, data in tiny_idx_files().items():
        assert (folder / name).read_bytes() == data  # copied as they are, not decompressed again


def test_corrupt_file_names_the_file_and_the_expected_sum(tmp_path, tiny_source, tiny_checksums):
    bad = tiny_source / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(bad.read_bytes()))
    data[20] ^= 0xFF
    bad.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError) as caught:
        fetch_dataset("fashion_mnist", tiny_source, download=False, out_root=tmp_path / "raw")
    assert str(bad) in str(caught.value)
    assert tiny_checksums["train-labels-idx1-ubyte"] in str(caught.value)
    assert not (tmp_path / "raw" / "FashionMNIST").exists()


def test_truncated_gzip_is_a_clear_error(tmp_path, tiny_source, tiny_checksums):
    bad = tiny_source / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot be read or decompressed"):
        fetch_dataset("fashion_mnist", tiny_source, download=False, out_root=tmp_path / "raw")
    assert not (tmp_path / "raw" / "FashionMNIST").exists()


def test_offline_without_local_copy_names_both_ways(tmp_path, monkeypatch):
    def no_network(dataset, into):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(fetch, "_download", no_network)
    with pytest.raises(DataError) as caught:
        fetch_dataset("fashion_mnist", tmp_path / "nowhere", download=True, out_root=tmp_path / "raw")
    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message and "fetch.source_dir" in message
    assert "internet" in message and "Error downloading" in message
    assert not (tmp_path / "raw" / "FashionMNIST").exists()


def test_download_disabled_and_no_local_copy(tmp_path):
    with pytest.raises(DataError, match="fetch.download is false"):
        fetch_dataset("mnist", None, download=False, out_root=tmp_path / "raw")


def test_download_is_checksummed(tmp_path, monkeypatch, tiny_checksums):
    def fake_download(dataset, into):
        folder = into / "FashionMNIST" / "raw"
        folder.mkdir(parents=True)
        for name, data in tiny_idx_files(seed=5).items():  # other content than the known sums
            (folder / name).write_bytes(data)
        return folder

    monkeypatch.setattr(fetch, "_download", fake_download)
    with pytest.raises(DataError, match="download of train-images-idx3-ubyte: corrupt"):
        fetch_dataset("fashion_mnist", None, download=True, out_root=tmp_path / "raw")


def test_refetch_replaces_the_old_copy(tmp_path, tiny_source, tiny_checksums):
    out = tmp_path / "raw"
    folder = fetch_dataset("fashion_mnist", tiny_source, download=False, out_root=out)
    (folder / "stale").write_text("x")
    fetch_dataset("fashion_mnist", tiny_source, download=False, out_root=out)
    assert not (folder / "stale").exists()


def test_missing_raw_file_names_the_stage_to_run(tmp_path: Path):
    with pytest.raises(DataError, match="missing; run the fetch stage"):
        load_split(tmp_path, "fashion_mnist", train=True)
