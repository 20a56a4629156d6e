"""The real image sets: where torchvision's layout puts them, their files and checksums, their class names.

A light table (no torch): the fetch stage, params validation (`fetch.dataset`) and the classification reader read it.
"""

from __future__ import annotations

from dataclasses import dataclass

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetSpec:
    folder: str  # torchvision's class name, which is also its folder name
    debian_package: str | None
    algorithm: str
    # Checksums of the *decompressed* IDX files: a re-gzipped copy (as Debian ships) verifies too.
    checksums: dict[str, str]


DATASETS: dict[str, DatasetSpec] = {
    # SHA-256 measured on Debian's copy, whose MD5s match the published MD5s of the decompressed files.
    "fashion_mnist": DatasetSpec(
        folder="FashionMNIST",
        debian_package="dataset-fashion-mnist",
        algorithm="sha256",
        checksums={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    # MNIST is download-only here, so its SHA-256 could not be measured; these are its published MD5s.
    "mnist": DatasetSpec(
        folder="MNIST",
        debian_package=None,
        algorithm="md5",
        checksums={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
}

CLASSES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(digit) for digit in range(10)],
}
