"""What every study shares: the Study base class, training a variant through engine.fit, tracking, the outputs.

Depends on no concrete study (they import it); studies are found by name in studies/registry.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from dltorch import engine, plots
from dltorch.config import Params, TrainConfig
from dltorch.data.regression import read_set
from dltorch.data.tensors import TensorData
from dltorch.io import write_csv, write_json
from dltorch.models import create
from dltorch.studies import registry
from dltorch.tasks.regression import TASK as regression
from dltorch.tracking import Tracker

FIGURE_FILE = "comparison.png"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.csv"
# A regression study's set (1,000 rows at most) in one batch: its loss summed over the whole set, as the course does.
EVAL_BATCH = 4096


@dataclass
class VariantResult:
    """A trained variant: per-step batch loss and learning rate, per-epoch train/test loss, the final model."""

    model: nn.Module
    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def final(self, key: str) -> float:
        return self.epochs[-1][key]


def lowest(summaries: dict[str, dict[str, float]], key: str) -> str:
    """The variant with the lowest `key` (e.g. the best final loss)."""
    return min(summaries, key=lambda name: summaries[name][key])


class AnyStudy(ABC):
    """What the study stage runs: a named study that writes its figure, metrics and curves. Register with
    @register_study."""

    name: ClassVar[str]  # the params.yaml section and the DVC stage study@<name>
    curve: ClassVar[tuple[str, list[str]]]  # curves.csv: a row per "steps", "epochs" or "budgets", with these fields

    @abstractmethod
    def run(self, params: Params, data: Path, out_dir: Path, tracker: Tracker) -> dict[str, Any]: ...


class Study(AnyStudy):
    """A study of variants on a synthetic set: what to record per variant, how to summarize it, what to draw."""

    headline: ClassVar[str] = "final_loss"  # the summary key whose lowest variant is the verdict `lowest_<key>`

    @abstractmethod
    def summarize_variant(self, result: VariantResult) -> dict[str, float]: ...

    @abstractmethod
    def figure(self, results: dict[str, VariantResult], train: TensorData, test: TensorData | None,
               path: Path) -> Path: ...

    def verdicts(self, variants: dict[str, dict[str, float]]) -> dict[str, str]:
        return {f"lowest_{self.headline}": lowest(variants, self.headline)}

    def run(self, params: Params, data: Path, out_dir: Path, tracker: Tracker) -> dict[str, Any]:
        return run_variants(self, params, data, out_dir, tracker)

    def summarize(self, results: dict[str, VariantResult]) -> dict[str, Any]:
        """metrics.json: the verdicts, then every variant's summary."""
        variants = {name: self.summarize_variant(result) for name, result in results.items()}
        return {**self.verdicts(variants), "variants": variants}


def load_set(data: Path) -> tuple[TensorData, TensorData | None]:
    """The set's train rows, and its test rows when it has any (parabola trains on every row)."""
    train, _ = regression.load_train_val(data, data.stem, 0, 0)
    has_test = "test" in set(read_set(data).split)
    return train, regression.load_test(data, data.stem) if has_test else None


def train_variant(arch: str, args: dict[str, Any], cfg: TrainConfig, train: TensorData,
                  test: TensorData | None) -> VariantResult:
    """engine.fit, watched step by step; after each epoch the whole train (and test) rows' loss in eval mode
    (dropout off), which picks no "best" epoch: the study compares where each variant ends. No checkpoint, as a
    study reruns in seconds. Seeding right before building gives variants of one architecture the same weights."""
    torch.manual_seed(cfg.seed)
    model = create(arch, args, in_shape=tuple(train.inputs.shape[1:]), num_outputs=1)
    loss_fn = regression.make_loss(cfg.loss)
    device = engine.select_device(cfg.device)
    result = VariantResult(model)

    def on_step(loss: float, lr: float) -> None:
        result.steps.append({"step": len(result.steps) + 1, "loss": loss, "lr": lr})

    def on_epoch(record: dict[str, Any]) -> None:
        row = {"epoch": record["epoch"], "train_loss": _loss(model, loss_fn, train, device)}
        if test is not None:
            row["test_loss"] = _loss(model, loss_fn, test, device)
        result.epochs.append(row)

    engine.fit(model, engine.Objective(loss_fn, regression.batch_scores), train, None, cfg, checkpoint=None,
               on_epoch=on_epoch, on_step=on_step)
    model.cpu().eval()
    return result


def _loss(model: nn.Module, loss_fn: Any, data: TensorData, device: torch.device) -> float:
    return engine.evaluate(model, loss_fn, regression.batch_scores, data, EVAL_BATCH, device)["loss"]


def run_study(name: str, params: Params, data: Path, out_dir: Path,
              tracker: Tracker | None = None) -> dict[str, Any]:
    """Run study `name` inside one MLflow parent run; returns the metrics it wrote."""
    return registry.get(name).run(params, data, out_dir, tracker or Tracker.for_project(params.mlflow.experiment))


def run_variants(study: Study, params: Params, data: Path, out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    """A study of variants on a synthetic set: train every variant, each a child run of the study's run."""
    name = study.name
    cfg = params.study(name)
    train, test = load_set(data)
    results: dict[str, VariantResult] = {}
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
        write_curves(out_dir / CURVES_FILE, results, study.curve)
        parent.log_metrics(metrics)  # the parent holds every variant's summary too, for one-glance comparison
        parent.log_artifacts([figure, out_dir / METRICS_FILE, out_dir / CURVES_FILE], name)
    return metrics


def write_curves(path: Path, results: dict[str, VariantResult], curve: tuple[str, list[str]]) -> None:
    """Long format, one row per (variant, step or epoch): dvc plots colours the lines by `variant`."""
    series, fields = curve
    x = "step" if series == "steps" else "epoch"
    rows = ([variant, row[x], *(row[f] for f in fields)] for variant, result in results.items()
            for row in getattr(result, series))
    write_csv(path, ["variant", x, *fields], rows)


def loss_curves(results: dict[str, VariantResult], title: str, path: Path) -> Path:
    """Each variant's loss over the whole training set after every epoch, its final value in brackets."""
    curves = {f"{name} ({r.final('train_loss'):.3g})": ([row["epoch"] for row in r.epochs],
                                                        [row["train_loss"] for row in r.epochs])
              for name, r in results.items()}
    return plots.panels([plots.Panel("training loss (final in brackets)", "epoch", "loss (MSE)", curves)],
                        title, path)
