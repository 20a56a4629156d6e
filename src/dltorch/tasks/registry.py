"""Tasks are registered by name, as models are: a task is one typed `Task` object (data, loss, metrics, export
spec). This module imports no torch: the implementations register themselves when `dltorch.tasks` loads them."""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from dltorch.bundle import ModelBundle
    from dltorch.config import TrainConfig
    from dltorch.data.tensors import TensorData
    from dltorch.engine import OptimizersFn, StepFn

Scorer = Callable[["np.ndarray", "np.ndarray"], dict[str, float]]  # (onnxruntime outputs, targets) -> test metrics



@dataclass(frozen=True)
class Evaluation:
    """What a task's report reads: the trained model, its test outputs and loss, and where figures go."""

    model: nn.Module
    outputs: torch.Tensor
    test: TensorData
    loss: float
    data: Path  # the data the model read (data/<its data:>)
    dataset: str
    name: str
    history: list[dict[str, Any]]
    out_dir: Path
    baseline: torch.Tensor | None = None  # the test outputs of the task's baseline model, if it has one
    seed: int = 0  # the model's train.seed (a GAN's report rebuilds its untrained start from it)
    judge: nn.Module | None = None  # the task's judge classifier (Task.judge), trained on the data


def _data_stem(data: Path, fetched: str) -> str:
    return data.stem  # a synthetic set's name: line for line.csv, sequences for the sequences/ folder


def _unchanged(net: nn.Module, inputs: dict[str, Any]) -> nn.Module:
    return net


def _whole(model: nn.Module) -> nn.Module:
    return model


def _as_loaded(test: TensorData, model: nn.Module) -> TensorData:
    return test


def _in_shape(bundle: ModelBundle, model: nn.Module) -> tuple[int, ...]:
    return tuple(bundle.inputs["in_shape"])  # the model reads samples of the data's shape


@dataclass(frozen=True)
class Task:
    """Everything the pipeline asks of a task. Fields without a default are what every task must supply."""

    name: str
    input_name: str  # the ONNX graph's input and output names
    output_name: str
    monitor: tuple[str, Literal["max", "min"]]  # the validation score that picks the best epoch, and its direction
    ranking: tuple[str, Literal["max", "min"]]  # the metrics.json key the model registry ranks versions by
    # evaluate's numeric test metrics (metrics.json) and which way is better: params may gate a model on any of them
    metrics: dict[str, Literal["max", "min"]]
    # Of those, what onnx_metrics also scores on onnxruntime outputs: what a registry rule may rank versions by, as
    # the INT8 gate compares the int8 and fp32 files by that same metric.
    rankable: tuple[str, ...]
    dynamic_axes: dict[int, tuple[str, int]]  # axis -> (name, the multiple its size must be)
    losses: dict[str, Callable[[float], Callable[..., Any]]]  # params' train.loss -> factory(label_smoothing)
    load_train_val: Callable[..., tuple[Any, TensorData | None]]  # (data, dataset, val_size, seed, settings)
    load_test: Callable[..., TensorData]  # (data, dataset, settings)
    model_inputs: Callable[[Any, str], dict[str, Any]]  # what the architecture builder is told: in_shape, ...
    batch_scores: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    parity_checks: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[dict, dict]]
    onnx_metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    report: Callable[[Evaluation], tuple[dict[str, Any], list[Path]]]
    dataset_name: Callable[[Path, str], str] = _data_stem
    wrap: Callable[[nn.Module, dict[str, Any]], nn.Module] = _unchanged  # e.g. normalization in the graph
    # Samples (inputs, targets) at a size other than the export example's, where more than the batch axis is dynamic.
    other_shape: Callable[[TensorData], tuple[torch.Tensor, torch.Tensor]] | None = None
    # The course's hand-written training loops, by params' train.trainer (only regression has them).
    trainers: dict[str, Callable[[nn.Module, Path, TrainConfig], list[dict[str, Any]]]] = field(default_factory=dict)
    # An architecture evaluate trains beside the model, with the model's args and train settings on the same data,
    # as the reference the report compares against (Evaluation.baseline): e.g. a node classifier without the edges.
    baseline: str | None = None
    # What the ONNX file holds: the trained model itself, or a view of it (an autoencoder's encoder and decoder as
    # two outputs). A view whose forward returns a tuple names the outputs after output_name in extra_outputs.
    export_view: Callable[[nn.Module], nn.Module] = _whole
    extra_outputs: tuple[str, ...] = ()
    # A task that trains by its own step (a GAN's two players): the step and the named optimizers it steps (see
    # engine.Objective); None: the supervised step, one optimizer from the train settings.
    step: StepFn | None = None
    optimizers: OptimizersFn | None = None
    # What the model reads, from loaded data (the test set; export's calibration sample) and the model: the data
    # itself, or a generator's fixed noise as inputs with the images as targets. Evaluate and export both use it.
    test_inputs: Callable[[TensorData, nn.Module], TensorData] = _as_loaded
    # The sample shape of the ONNX export's example input (bundle, export view): the data's, or a generator's noise.
    export_shape: Callable[[ModelBundle, nn.Module], tuple[int, ...]] = _in_shape
    # A classifier evaluate and export train on the task's training data (its targets the class labels), seeded, as
    # a judge of the model's outputs: (architecture, its train settings); e.g. a GAN's Fréchet distance is measured
    # in its features. It reaches the report as Evaluation.judge, and export's scores through onnx_scorer.
    judge: tuple[str, TrainConfig] | None = None
    # With a judge: judge -> what scores onnxruntime's outputs in place of onnx_metrics.
    onnx_scorer: Callable[[nn.Module], Scorer] | None = None
    # After each trained epoch, figures of the model for its MLflow run (model, epoch, folder) -> the files, e.g. a
    # GAN's samples on fixed noise.
    epoch_figures: Callable[[nn.Module, int, Path], list[Path]] | None = None

    def scorer(self, judge: nn.Module | None) -> Scorer:
        """What scores onnxruntime's outputs (export's INT8 gate and the registry's metric)."""
        return self.onnx_scorer(judge) if self.onnx_scorer is not None and judge is not None else self.onnx_metrics

    def make_loss(self, name: str, label_smoothing: float = 0.0) -> Callable[..., Any]:
        if name not in self.losses:
            raise ValueError(f"unknown {self.name} loss '{name}'; known: {', '.join(self.losses)}")
        return self.losses[name](label_smoothing)


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"task '{task.name}' is registered twice")
    _TASKS[task.name] = task
    return task


@cache
def task_modules() -> tuple[str, ...]:
    """The implementations: every module of dltorch/tasks/ but this one, each named as the task it registers, so
    adding a task is adding its file."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules([str(Path(__file__).parent)])
                        if info.name != __name__.rpartition(".")[2]))


def _load_all() -> None:
    for module in task_modules():
        import_module(f"dltorch.tasks.{module}")


def names() -> list[str]:
    _load_all()
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """Loads only the named task's module (a stage runs its own task's code, as dvc.yaml's deps say)."""
    if name not in _TASKS and name in task_modules():
        import_module(f"dltorch.tasks.{name}")
    if name not in _TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(names())}")
    return _TASKS[name]
