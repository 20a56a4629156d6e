"""Optimizers side by side: the same model, data and initial weights; only the update rule differs."""

from __future__ import annotations

from pathlib import Path

from dltorch import plots
from dltorch.data.images import TensorData
from dltorch.studies.common import VariantResult, lowest, per_variant

CURVE = ("epochs", ["train_loss"])  # the loss over the whole training set after each epoch


def summarize_variant(result: VariantResult) -> dict[str, float]:
    return {"final_loss": result.final("train_loss")}


def summarize(results: dict[str, VariantResult]) -> dict:
    variants = per_variant(results, summarize_variant)
    return {"lowest_final_loss": lowest(variants, "final_loss"), "variants": variants}


def figure(results: dict[str, VariantResult], train: TensorData, test: TensorData | None, path: Path) -> Path:
    curves = {f"{name} ({r.final('train_loss'):.3g})": ([row["epoch"] for row in r.epochs],
                                                        [row["train_loss"] for row in r.epochs])
              for name, r in results.items()}
    return plots.panels([plots.Panel("training loss (final in brackets)", "epoch", "loss (MSE)", curves)],
                        "Optimizers: same model, data and initial weights", path)
