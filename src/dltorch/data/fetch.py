"""Fetch the real image data: a local copy of the IDX files, or torchvision's download, always checksummed.

Output is torchvision's layout (`<root>/<FashionMNIST|MNIST>/raw/<file>`), so torchvision's own dataset
classes read what this writes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from dltorch.data.datasets import DATASETS, IDX_FILES, DatasetSpec
from dltorch.errors import DataError


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def verify(path: Path, name: str, spec: DatasetSpec, origin: Path | str) -> None:
    """origin is what the user knows the file as (the local copy or the download), named in the error."""
    expected = spec.checksums[name]
    actual = file_digest(path, spec.algorithm)
    if actual != expected:
        raise DataError(
            f"{origin}: corrupt or truncated: decompressed {name} has {spec.algorithm} {actual}, "
            f"expected {expected}"
        )


def _find_local(source_dir: Path | None) -> dict[str, Path] | None:
    """The four files in source_dir, gzipped or not; None if any is missing."""
    if source_dir is None or not source_dir.is_dir():
        return None
    found = {}
    for name in IDX_FILES:
        candidates = [source_dir / f"{name}.gz", source_dir / name]
        existing = [path for path in candidates if path.is_file()]
        if not existing:
            return None
        found[name] = existing[0]
    return found


def _decompress_into(source: Path, target: Path) -> None:
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError) as exc:
        raise DataError(f"{source}: cannot be read or decompressed ({exc})") from None


def _download(dataset: str, into: Path) -> Path:
    """torchvision's own download (official mirrors, MD5 of the archives); returns the raw folder."""
    from torchvision import datasets

    cls = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST}[dataset]
    for train in (True, False):
        cls(root=str(into), train=train, download=True)
    return into / DATASETS[dataset].folder / "raw"


def _unavailable(dataset: str, source_dir: Path | None, reason: str) -> DataError:
    spec = DATASETS[dataset]
    local = (
        f"install the Debian package ('apt-get install {spec.debian_package}')"
        if spec.debian_package
        else "copy the four IDX files there"
    )
    return DataError(
        f"{dataset}: no local copy in {source_dir} (fetch.source_dir) and the download failed ({reason}).\n"
        f"  Either {local} so that the files are in fetch.source_dir,\n"
        f"  or connect to the internet and keep fetch.download: true (torchvision's official mirrors)."
    )


def fetch_dataset(dataset: str, source_dir: Path | None, download: bool, out_root: Path) -> Path:
    """Verify and place the four decompressed IDX files under out_root; returns their folder."""
    spec = DATASETS[dataset]
    final = out_root / spec.folder / "raw"
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_root, prefix=".fetch-") as tmp:
        staging = Path(tmp) / "raw"
        staging.mkdir()
        local = _find_local(source_dir)
        origins: dict[str, Path | str] = {}
        if local is not None:
            for name, source in local.items():
                _decompress_into(source, staging / name)
                origins[name] = source
        elif not download:
            raise _unavailable(dataset, source_dir, "fetch.download is false")
        else:
            try:
                downloaded = _download(dataset, Path(tmp) / "download")
            except (OSError, RuntimeError) as exc:
                raise _unavailable(dataset, source_dir, str(exc).splitlines()[0]) from None
            for name in IDX_FILES:
                shutil.move(downloaded / name, staging / name)
                origins[name] = f"download of {name}"
        for name in IDX_FILES:
            verify(staging / name, name, spec, origins[name])
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
    return final
