"""The same wide MLP with and without dropout on 20 noisy points: dropout should fit the noise less."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dltorch import plots
from dltorch.data.tensors import TensorData
from dltorch.studies.common import Study, VariantResult
from dltorch.studies.registry import register_study


@register_study
class Dropout(Study):
    name = "dropout"
    curve = ("epochs", ["train_loss", "test_loss"])
    headline = "test_loss"

    def summarize_variant(self, result: VariantResult) -> dict[str, float]:
        return {"train_loss": result.final("train_loss"), "test_loss": result.final("test_loss")}

    @torch.no_grad()
    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path:
        """Left: both fits (eval mode, dropout off) over the train and test points. Right: test loss per epoch."""
        grid = torch.linspace(float(train.inputs.min()), float(train.inputs.max()), 200).unsqueeze(1)
        fits = {name: (grid.squeeze(1).tolist(), r.model(grid).squeeze(1).tolist()) for name, r in results.items()}
        points = {"train points": (train.inputs.squeeze(1).numpy(), train.targets.squeeze(1).numpy())}
        if test is not None:
            points["test points"] = (test.inputs.squeeze(1).numpy(), test.targets.squeeze(1).numpy())
        losses = {name: ([row["epoch"] for row in r.epochs], [row.get("test_loss", np.nan) for row in r.epochs])
                  for name, r in results.items()}
        return plots.panels([plots.Panel("fits over the points", "x", "y", fits, points, log_y=False),
                             plots.Panel("test loss", "epoch", "loss (MSE)", losses)],
                            "Dropout: with and without", path)
