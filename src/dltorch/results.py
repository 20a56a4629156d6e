"""Results at a glance: one row per model of params.yaml, read from the files the pipeline leaves.

`dvc metrics show` carries the headline numbers; this table adds what a person checks next (the goal, whether the
ONNX file matched torch, what happened to INT8, how long training took) in under 120 columns. The audit detail
stays in each model's reports (parity.json, deploy.json, eval/) and in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dltorch.config import Params
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


def collect(params: Params, models_dir: Path) -> list[Row]:
    return [_row(params, name, ModelFiles(models_dir / name)) for name in params.models]


def _row(params: Params, name: str, files: ModelFiles) -> Row:
    cfg, rule = params.model(name), params.registry_rule(name)
    metrics = _read(files.metrics)
    value = metrics.get(rule.metric) if metrics else None
    return Row(model=name, task=cfg.task, metric=rule.metric, value=MISSING if value is None else f"{value:.4f}",
               goal=_goal(cfg.gate), parity=_parity(_read(files.parity)), int8=_int8(_read(files.deploy)),
               training=_training(_read(files.history)))


def _read(path: Path) -> dict | list | None:
    return read_json(path) if path.is_file() else None


def _goal(gate) -> str:
    if gate is None:
        return MISSING
    return f">= {gate.min:g}" if gate.min is not None else f"<= {gate.max:g}"


def _parity(report: dict | None) -> str:
    if report is None:
        return MISSING
    diff = report["checks"]["max_abs_diff"]["measured"]
    return f"{'ok' if report['passed'] else 'FAILED'} {diff:.1e}"


def _int8(deploy: dict | None) -> str:
    if deploy is None:
        return MISSING
    int8 = deploy["int8"]
    registered = deploy["registry"]["int8"]["decision"] != "not registered"
    return f"{'kept' if registered else 'dropped'} {int8['drop']:+.4f}"


def _training(history: list | None) -> str:
    if not history:
        return MISSING
    seconds = sum(row.get("seconds", 0.0) for row in history)
    return f"{seconds:.0f} s / {len(history)} ep"


def format_table(rows: list[Row]) -> str:
    """Plain aligned columns (a terminal, `less`, a commit message), not Markdown."""
    cells = [COLUMNS, *((getattr(row, column) for column in COLUMNS) for row in rows)]
    cells = [tuple(line) for line in cells]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in cells)
