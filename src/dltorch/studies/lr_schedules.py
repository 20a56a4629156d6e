"""Learning-rate schedules side by side: the same model, data, optimizer and initial weights."""

from __future__ import annotations

from pathlib import Path

from dltorch import plots
from dltorch.data.tensors import TensorData
from dltorch.studies.common import Study, VariantResult
from dltorch.studies.registry import register_study


@register_study
class LrSchedules(Study):
    name = "lr_schedules"
    curve = ("steps", ["loss", "lr"])

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        rates = [s["lr"] for s in result.steps]
        return {"final_loss": result.final("train_loss"), "max_lr": max(rates), "final_lr": rates[-1]}

    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        losses = {name: ([row["epoch"] for row in r.epochs], [row["train_loss"] for row in r.epochs])
                  for name, r in results.items()}
        rates = {name: ([s["step"] for s in r.steps], [s["lr"] for s in r.steps]) for name, r in results.items()}
        return plots.panels([plots.Panel("training loss", "epoch", "loss (MSE)", losses),
                             plots.Panel("learning rate", "step", "lr", rates, log_y=False)],
                            "Learning-rate schedules", path)
