"""Optimizers side by side: the same model, data and initial weights; only the update rule differs."""

from __future__ import annotations

from pathlib import Path

from dltorch import plots
from dltorch.data.images import TensorData
from dltorch.studies.common import Study, VariantResult
from dltorch.studies.registry import register_study


def loss_curves(results: dict[str, VariantResult], title: str, path: Path) -> Path:
    """Each variant's loss over the whole training set after every epoch, its final value in brackets."""
    curves = {f"{name} ({r.final('train_loss'):.3g})": ([row["epoch"] for row in r.epochs],
                                                        [row["train_loss"] for row in r.epochs])
              for name, r in results.items()}
    return plots.panels([plots.Panel("training loss (final in brackets)", "epoch", "loss (MSE)", curves)],
                        title, path)


@register_study
class Optimizers(Study):
    name = "optimizers"
    curve = ("epochs", ["train_loss"])  # the loss over the whole training set after each epoch

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        return {"final_loss": result.final("train_loss")}

    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        return loss_curves(results, "Optimizers: same model, data and initial weights", path)
