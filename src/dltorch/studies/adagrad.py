"""The course's AdaGrad lesson: a line fitted from w = b = 0 by Adagrad (lr 0.01, 100 full-batch epochs) on its
own set (adagrad_line: X = randn(100, 1), y = 2X + 3 + randn), beside plain SGD from the same start."""

from __future__ import annotations

from pathlib import Path

from dltorch.data.tensors import TensorData
from dltorch.studies.common import Study, VariantResult, loss_curves
from dltorch.studies.registry import register_study
from dltorch.tasks.regression import single_linear


@register_study
class Adagrad(Study):
    name = "adagrad"
    curve = ("epochs", ["train_loss"])

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        """The final loss and, as the lesson prints them, the fitted w and b (the true line: w = 2, b = 3)."""
        summary = {"final_loss": result.final("train_loss")}
        linear = single_linear(result.model)
        if linear is not None:
            summary.update(w=linear.weight.item(), b=linear.bias.item())
        return summary

    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        return loss_curves(results, "AdaGrad lesson: a line from w = b = 0", path)
