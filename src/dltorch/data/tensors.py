"""In-memory data of any task: inputs and targets as tensors, batched by slicing (no per-sample DataLoader)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dltorch.errors import DataError


@dataclass(frozen=True)
class TensorData:
    inputs: torch.Tensor  # (N, ...): pixels, a line's x, a window of steps, ...
    targets: torch.Tensor  # (N, ...): class indices, y, the next steps, masks, ...

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> TensorData:
        return TensorData(self.inputs[index], self.targets[index])


def split_validation(data: TensorData, val_size: int, seed: int) -> tuple[TensorData, TensorData | None]:
    """Hold out a fixed random val_size samples; the test set stays untouched for evaluate."""
    if val_size == 0:
        return data, None
    if val_size >= len(data):
        raise DataError(f"val_size {val_size} leaves no training data out of {len(data)} samples")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[val_size:]), data.subset(order[:val_size])


@dataclass(frozen=True)
class LabelledImages(TensorData):
    """Pixels (N, C, H, W) in [0, 1], class indices (N,), and the name of each index."""

    classes: tuple[str, ...] = ()

    def subset(self, index: torch.Tensor) -> LabelledImages:
        return LabelledImages(self.inputs[index], self.targets[index], self.classes)
