"""evaluate@<model>: held-out test metrics, figures and dvc plots data, logged to the model's run, and the
model's optional quality gate.

A model that fails its gate still gets every output, whole (details.json records the verdict under `gate`), so
a person can see what it measured; the stage then exits non-zero, so DVC records nothing in dvc.lock, reruns it
next time and `dvc repro` stops before export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dltorch import engine
from dltorch.bundle import ModelBundle, build_model, load_model
from dltorch.config import GateConfig
from dltorch.errors import QualityGateError
from dltorch.io import read_json, write_json
from dltorch.layout import DETAILS_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, RUN_FILE
from dltorch.models import create
from dltorch.tasks import Evaluation, Task, get_task
from dltorch.tracking import Tracker


def evaluate(data: Path, model_dir: Path, out_dir: Path, gate: GateConfig | None = None,
             tracker: Tracker | None = None) -> dict:
    """Test metrics and figures, logged to the model's run in `tracker`'s store (by default the project's); then
    the model's gate, if params set one."""
    bundle, model = load_model(model_dir / MODEL_FILE)
    task = get_task(bundle.task)
    settings = bundle.train_config()
    test = task.test_inputs(task.load_test(data, bundle.dataset, settings=settings), model)
    outputs = engine.predict(model, test.inputs, engine.select_device("cpu"))
    loss = task.make_loss(settings.loss, settings.label_smoothing)(outputs, test.targets).item()
    history = read_json(model_dir / HISTORY_FILE)
    baseline = None
    if task.baseline is not None:
        baseline = engine.predict(train_baseline(task, data, bundle), test.inputs, engine.select_device("cpu"))
    report, figures = task.report(Evaluation(model, outputs, test, loss, data, bundle.dataset, bundle.name,
                                             history, out_dir, baseline, settings.seed,
                                             train_judge(task, data, bundle.dataset)))
    metrics, details = split_report(report, task, history)
    if gate is not None:
        details["gate"] = judge(metrics, gate)
    write_json(out_dir / METRICS_FILE, metrics)
    write_json(out_dir / DETAILS_FILE, details)
    run = read_json(model_dir / RUN_FILE)
    tracker = tracker or Tracker.for_project(run["experiment"])
    with tracker.model_run(bundle.name, f"evaluate@{bundle.name}", run_id=run["run_id"]) as tracked:
        tracked.log_metrics({**metrics, **details})
        tracked.log_artifacts([*figures, out_dir / METRICS_FILE, out_dir / DETAILS_FILE], "evaluate")
        if gate is not None:
            tracked.set_tags({"gate": details["gate"]["reason"]})
            if not details["gate"]["passed"]:  # inside the run, so MLflow marks it FAILED
                raise QualityGateError(f"{bundle.name}: {details['gate']['reason']}")
    return metrics


def train_baseline(task: Task, data: Path, bundle: ModelBundle) -> torch.nn.Module:
    """The task's baseline architecture with the model's args, trained as the model was (same data, settings and
    seed) by the engine, without a checkpoint: it reruns in seconds."""
    settings = bundle.train_config()
    train, val = task.load_train_val(data, bundle.dataset, settings.val_size, settings.seed, settings=settings)
    torch.manual_seed(settings.seed)
    baseline = build_model(task.baseline, bundle.args, task.name, task.model_inputs(train, bundle.dataset))
    engine.fit(baseline, engine.Objective.for_task(task, settings), train, val, settings, None)
    return baseline.cpu().eval()


def train_judge(task: Task, data: Path, dataset: str) -> torch.nn.Module | None:
    """The task's judge (Task.judge), if it has one: its architecture trained by the engine with cross-entropy on
    the task's training data and labels, with its own settings and seed (the same judge in evaluate and export),
    without a checkpoint."""
    if task.judge is None:
        return None
    arch, settings = task.judge
    train, _ = task.load_train_val(data, dataset, 0, settings.seed, settings=settings)
    torch.manual_seed(settings.seed)
    judge = create(arch, {}, in_shape=tuple(train.inputs.shape[1:]), num_outputs=int(train.targets.max()) + 1)
    engine.fit(judge, engine.Objective(torch.nn.CrossEntropyLoss(), lambda outputs, targets: {}), train, None,
               settings, None)
    return judge.cpu().eval()


def split_report(report: dict[str, Any], task: Task, history: list[dict]) -> tuple[dict, dict]:
    """metrics.json holds what a person compares across models and experiments (`dvc metrics show`, `dvc exp
    show`): the task's declared metrics and the training time. Everything else of the report is audit detail."""
    _require_declared(report, task)
    metrics = {key: report[key] for key in task.metrics}
    metrics["train_seconds"] = round(sum(row.get("seconds", 0.0) for row in history), 3)
    return metrics, {key: value for key, value in report.items() if key not in metrics}


def judge(metrics: dict[str, Any], gate: GateConfig) -> dict[str, Any]:
    """The gate's verdict: measured against required, on the side the gate's bound says."""
    measured = float(metrics[gate.metric])
    passed = measured >= gate.required if gate.bound == "min" else measured <= gate.required
    relation = ">=" if gate.bound == "min" else "<="
    reason = (f"{gate.metric}: measured {measured:.4f} vs required {relation} {gate.required:.4f}: "
              f"{'passed' if passed else 'failed'}")
    return {"metric": gate.metric, "measured": measured, "bound": gate.bound, "required": gate.required,
            "passed": passed, "reason": reason}


def _require_declared(metrics: dict[str, Any], task: Task) -> None:
    """Task.metrics lets params name a task's metrics before anything runs; it must match the report."""
    missing = sorted(set(task.metrics) - set(metrics))
    if missing:
        raise AssertionError(f"task {task.name}'s report lacks the metrics its Task.metrics declares: {missing}")
