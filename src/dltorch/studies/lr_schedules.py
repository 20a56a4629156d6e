"""Learning-rate schedules side by side: the same model, data, optimizer and initial weights."""

from __future__ import annotations

from pathlib import Path

from dltorch import plots
from dltorch.data.images import TensorData
from dltorch.studies.common import VariantResult, lowest, per_variant

CURVE = ("steps", ["loss", "lr"])


def summarize_variant(result: VariantResult) -> dict[str, float]:
    rates = [s["lr"] for s in result.steps]
    return {"final_loss": result.final("train_loss"), "max_lr": max(rates), "final_lr": rates[-1]}


def summarize(results: dict[str, VariantResult]) -> dict:
    variants = per_variant(results, summarize_variant)
    return {"lowest_final_loss": lowest(variants, "final_loss"), "variants": variants}


def figure(results: dict[str, VariantResult], train: TensorData, test: TensorData | None, path: Path) -> Path:
    losses = {name: ([row["epoch"] for row in r.epochs], [row["train_loss"] for row in r.epochs])
              for name, r in results.items()}
    rates = {name: ([s["step"] for s in r.steps], [s["lr"] for s in r.steps]) for name, r in results.items()}
    return plots.panels([plots.Panel("training loss", "epoch", "loss (MSE)", losses),
                         plots.Panel("learning rate", "step", "lr", rates, log_y=False)],
                        "Learning-rate schedules", path)
