"""The IDX image sets as in-memory tensors, for the classifiers: the reader itself is data/idx.py, shared with the
generative tasks that read the same images."""

from __future__ import annotations

from dltorch.data.idx import load_split
from dltorch.data.tensors import TensorData

__all__ = ["channel_stats", "load_split"]


def channel_stats(data: TensorData) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training pixels, folded into the model's graph."""
    dims = [0, 2, 3]
    return data.inputs.mean(dim=dims).tolist(), data.inputs.std(dim=dims).tolist()
