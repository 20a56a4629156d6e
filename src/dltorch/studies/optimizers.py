"""Optimizers side by side: the same model, data and initial weights; only the update rule differs."""

from __future__ import annotations

from pathlib import Path

from dltorch.data.tensors import TensorData
from dltorch.studies.common import Study, VariantResult, loss_curves
from dltorch.studies.registry import register_study


@register_study
class Optimizers(Study):
    name = "optimizers"
    curve = ("epochs", ["train_loss"])  # the loss over the whole training set after each epoch

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        return {"final_loss": result.final("train_loss")}

    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        return loss_curves(results, "Optimizers: same model, data and initial weights", path)
