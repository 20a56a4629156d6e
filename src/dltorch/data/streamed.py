"""Training data streamed from a Dataset instead of held as tensors: for per-sample transforms (albumentations).

The engine trains on in-memory TensorData by default (batches are slices). A task whose samples need their own
random transform hands the engine a StreamedData instead: the same shuffled batches, drawn by a DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from dltorch.data.tensors import TensorData


class StreamedData:
    """A map-style Dataset of (input, target) tensor pairs, batched by a DataLoader in one process.

    The shuffle, and the dataset's random transforms through `set_seed(seed)`, are drawn from the epoch's
    generator, so an epoch is a function of (seed, epoch) and a resumed run sees the same batches.
    """

    def __init__(self, dataset: Dataset, sample_shape: tuple[int, ...], signature: str) -> None:
        self.dataset = dataset
        self.sample_shape = sample_shape  # one input's shape, e.g. (3, H, W): the engine picks a memory format
        self.signature = signature  # identifies the data, for checkpoint fingerprints

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[TensorData]:
        reseed: Any = getattr(self.dataset, "set_seed", None)
        if reseed is not None:
            reseed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        loader = DataLoader(self.dataset, batch_size=batch_size, num_workers=0,
                            sampler=RandomSampler(self.dataset, generator=generator))
        for inputs, targets in loader:
            yield TensorData(inputs, targets)
