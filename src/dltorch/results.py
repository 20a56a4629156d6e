"""Results at a glance: one row per model of params.yaml, read from the files the pipeline leaves.

`dvc metrics show` carries the headline numbers; this table adds what a person checks next (the goal, whether the
ONNX file matched torch, what happened to INT8, how long training took) in under 120 columns. The audit detail
stays in each model's reports (parity.json, deploy.json, eval/) and in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dltorch.config import GateConfig, Params
from dltorch.io import read_json
from dltorch.layout import ModelFiles

MISSING = "-"  # the stage that writes it has not run yet


@dataclass(frozen=True)
class Row:
    model: str
    task: str
    metric: str
    value: str
    goal: str
    parity: str
    int8: str
    training: str


COLUMNS = ("model", "task", "metric", "value", "goal", "parity", "int8", "training")


def collect(params: Params, root: Path) -> list[Row]:
    """A row for every model of params.yaml, from the files under root/models/ (a dash where a stage has not run)."""
    return [_row(params, name, ModelFiles.of(name, root)) for name in params.models]


def _row(params: Params, name: str, files: ModelFiles) -> Row:
    """The headline metric is the model's gate's when it has one (what it promises), else the registry's."""
    cfg = params.model(name)
    metric = cfg.gate.metric if cfg.gate is not None else params.registry_rule(name).metric
    metrics = _read(files.metrics)
    value = metrics.get(metric) if metrics else None
    return Row(model=name, task=cfg.task, metric=metric, value=MISSING if value is None else f"{value:.4f}",
               goal=_goal(cfg.gate), parity=_parity(_read(files.parity)), int8=_int8(_read(files.deploy)),
               training=_training(metrics, _read(files.history)))


def _read(path: Path) -> dict | list | None:
    return read_json(path) if path.is_file() else None


def _goal(gate: GateConfig | None) -> str:
    if gate is None:
        return MISSING
    return f"{'>=' if gate.bound == 'min' else '<='} {gate.required:g}"


def _parity(report: dict | None) -> str:
    if report is None:
        return MISSING
    diff = report["checks"]["max_abs_diff"]["measured"]
    return f"{'ok' if report['passed'] else 'FAILED'} {diff:.1e}"


def _int8(deploy: dict | None) -> str:
    if deploy is None:
        return MISSING
    int8 = deploy["int8"]
    verdict = "kept" if int8["passed"] else ("slower" if int8["accurate"] else "inaccurate")
    return f"{verdict} {-int8['drop']:+.4f}"  # the change in the ranked metric: + better, - worse


def _training(metrics: dict | None, history: list | None) -> str:
    """evaluate's train_seconds (the one sum of the epochs' seconds), and the number of epochs."""
    if not metrics or not history:
        return MISSING
    return f"{metrics['train_seconds']:.0f} s / {len(history)} ep"


def format_table(rows: list[Row]) -> str:
    """Plain aligned columns (a terminal, `less`, a commit message), not Markdown."""
    cells = [COLUMNS, *(tuple(getattr(row, column) for column in COLUMNS) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def accuracy_over_time(history: list[dict]) -> list[tuple[float, float]]:
    """(seconds of training so far, validation accuracy) after each epoch of a classifier's history.json."""
    elapsed, curve = 0.0, []
    for row in history:
        elapsed += row["seconds"]
        if "val_accuracy" in row:
            curve.append((elapsed, row["val_accuracy"]))
    return curve


def time_to_accuracy(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds of training until the validation accuracy first reached `target` (at an epoch's end); None if never."""
    return next((seconds for seconds, accuracy in curve if accuracy >= target), None)
