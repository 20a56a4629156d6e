"""Full-batch, stochastic (batch 1) and mini-batch gradient descent on the same MLP and data."""

from __future__ import annotations

from pathlib import Path

from dltorch import plots
from dltorch.data.tensors import TensorData
from dltorch.studies.common import Study, VariantResult
from dltorch.studies.registry import register_study


@register_study
class GdVariants(Study):
    name = "gd_variants"
    curve = ("steps", ["loss"])  # the batch loss at every optimizer step

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        return {"steps": len(result.steps), "first_loss": result.steps[0]["loss"],
                "final_loss": result.final("train_loss")}

    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        """One panel per variant, side by side: the loss of the batch each step trained on."""
        items = [plots.Panel(f"{name} (final loss {result.final('train_loss'):.3g})", "step", "batch loss (MSE)",
                             {name: ([s["step"] for s in result.steps], [s["loss"] for s in result.steps])})
                 for name, result in results.items()]
        return plots.panels(items, "Gradient descent variants: loss per step", path)
