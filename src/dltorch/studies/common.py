"""What every study shares: train one variant, track it, write the outputs."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from dltorch import engine
from dltorch.config import Params, TrainConfig
from dltorch.data.images import TensorData
from dltorch.data.synthetic import read_set
from dltorch.io import atomic_path, write_json
from dltorch.models import create
from dltorch.tasks import regression
from dltorch.tracking import Tracker

FIGURE_FILE = "comparison.png"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.csv"
EVAL_BATCH = 4096


@dataclass
class VariantResult:
    """A trained variant: per-step batch loss and learning rate, per-epoch train/test loss, the final model."""

    model: nn.Module
    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def final(self, key: str) -> float:
        return self.epochs[-1][key]


def load_set(data: Path) -> tuple[TensorData, TensorData | None]:
    """The set's train rows, and its test rows when it has any (parabola trains on every row)."""
    train, _ = regression.load_train_val(data, data.stem, 0, 0)
    has_test = "test" in set(read_set(data).split)
    return train, regression.load_test(data, data.stem) if has_test else None


def train_variant(arch: str, args: dict[str, Any], cfg: TrainConfig, train: TensorData,
                  test: TensorData | None) -> VariantResult:
    """The engine's epoch (train_one_epoch) and evaluation, watched step by step; no checkpoints, as a study
    reruns in seconds. Seeding right before building gives variants of one architecture the same initial weights."""
    torch.manual_seed(cfg.seed)
    model = create(arch, args, in_shape=tuple(train.inputs.shape[1:]), num_classes=1)
    device = engine.select_device(cfg.device)
    model.to(device)
    loss_fn = regression.make_loss(cfg.loss)
    optimizer = engine.make_optimizer(model.parameters(), cfg)
    optimization = engine.Optimization(
        optimizer, engine.make_scheduler(optimizer, cfg, steps_per_epoch=math.ceil(len(train) / cfg.batch_size)))
    objective = engine.Objective(loss_fn, regression.batch_scores)
    result = VariantResult(model)

    def on_step(loss: float, lr: float) -> None:
        result.steps.append({"step": len(result.steps) + 1, "loss": loss, "lr": lr})

    for epoch in range(1, cfg.epochs + 1):
        engine.train_one_epoch(model, objective, optimization, train, cfg, epoch, on_step)
        record = {"epoch": epoch, "train_loss": _loss(model, loss_fn, train, device)}
        if test is not None:
            record["test_loss"] = _loss(model, loss_fn, test, device)
        result.epochs.append(record)
    model.cpu().eval()
    return result


def _loss(model: nn.Module, loss_fn: Any, data: TensorData, device: torch.device) -> float:
    return engine.evaluate(model, loss_fn, regression.batch_scores, data, EVAL_BATCH, device)["loss"]


def run_study(name: str, params: Params, data: Path, out_dir: Path,
              tracker: Tracker | None = None) -> dict[str, Any]:
    """Train every variant of study `name` inside one MLflow parent run; returns the metrics it wrote."""
    study, cfg = _module(name), params.study(name)
    train, test = load_set(data)
    results: dict[str, VariantResult] = {}
    tracker = tracker or Tracker.for_project(params.mlflow.experiment)
    with tracker.study_run(name) as parent:
        parent.log_params({"data": cfg.data, "variants": ",".join(cfg.variants)})
        for variant in cfg.variants:
            arch, args, train_cfg = cfg.variant(variant)
            with parent.variant_run(name, variant) as child:
                child.log_params({"arch": arch, "args": args, **train_cfg.model_dump(mode="json")})
                results[variant] = train_variant(arch, args, train_cfg, train, test)
                child.log_history(results[variant].steps, step_key="step")
                child.log_history(results[variant].epochs, step_key="epoch")
                child.log_metrics(study.summarize_variant(results[variant]))
        metrics = study.summarize(results)
        figure = study.figure(results, train, test, out_dir / FIGURE_FILE)
        write_json(out_dir / METRICS_FILE, metrics)
        write_curves(out_dir / CURVES_FILE, results, study.CURVE)
        parent.log_metrics(metrics)  # the parent holds every variant's summary too, for one-glance comparison
        parent.log_artifacts([figure, out_dir / METRICS_FILE, out_dir / CURVES_FILE], name)
    return metrics


def per_variant(results: dict[str, VariantResult], summarize_variant: Any) -> dict[str, dict[str, float]]:
    return {name: summarize_variant(result) for name, result in results.items()}


def lowest(summaries: dict[str, dict[str, float]], key: str) -> str:
    """The variant with the lowest `key` (e.g. the best final loss)."""
    return min(summaries, key=lambda name: summaries[name][key])


def write_curves(path: Path, results: dict[str, VariantResult], curve: tuple[str, list[str]]) -> None:
    """Long format, one row per (variant, step or epoch): dvc plots colours the lines by `variant`."""
    series, fields = curve
    x = "step" if series == "steps" else "epoch"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["variant", x, *fields])
        for variant, result in results.items():
            writer.writerows([variant, row[x], *(row[f] for f in fields)] for row in getattr(result, series))


def _module(name: str) -> ModuleType:
    from dltorch.studies import capacity, dropout, gd_variants, lr_schedules, optimizers

    studies = {"gd_variants": gd_variants, "capacity": capacity, "dropout": dropout, "optimizers": optimizers,
               "lr_schedules": lr_schedules}
    if name not in studies:
        raise ValueError(f"unknown study '{name}'; known: {', '.join(studies)}")
    return studies[name]
