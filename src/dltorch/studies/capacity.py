"""Under- and over-fitting: models of growing capacity on the same noisy quadratic."""

from __future__ import annotations

from pathlib import Path

from dltorch import plots
from dltorch.data.tensors import TensorData
from dltorch.studies.common import Study, VariantResult
from dltorch.studies.registry import register_study


@register_study
class Capacity(Study):
    name = "capacity"
    curve = ("epochs", ["train_loss", "test_loss"])

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        train, test = result.final("train_loss"), result.final("test_loss")
        return {"train_loss": train, "test_loss": test, "test_train_ratio": test / train}

    def verdicts(self, variants: dict[str, dict[str, float]]) -> dict[str, str]:
        """The under-fitter fits even its training data worst (highest train loss); the over-fitter generalizes
        worst relative to how well it fits (highest test/train loss ratio)."""
        return {"underfits": max(variants, key=lambda n: variants[n]["train_loss"]),
                "overfits": max(variants, key=lambda n: variants[n]["test_train_ratio"])}

    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        items = []
        for name, result in results.items():
            epochs = [row["epoch"] for row in result.epochs]
            curves = {split: (epochs, [row[f"{split}_loss"] for row in result.epochs]) for split in ("train", "test")}
            ratio = result.final("test_loss") / result.final("train_loss")
            items.append(plots.Panel(f"{name} (test/train {ratio:.2f})", "epoch", "loss (MSE)", curves))
        return plots.panels(items, "Capacity: train and test loss per model", path)
