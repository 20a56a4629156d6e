"""evaluate@<model>: held-out test metrics, figures and dvc plots data, logged to the model's run."""

from __future__ import annotations

from pathlib import Path

from dltorch import engine
from dltorch.bundle import load_model
from dltorch.config import TrainConfig
from dltorch.io import read_json, write_json
from dltorch.layout import HISTORY_FILE, MODEL_FILE, RUN_FILE
from dltorch.tasks import get_task
from dltorch.tracking import Tracker


def evaluate(raw_root: Path, model_dir: Path, out_dir: Path, tracker: Tracker | None = None) -> dict:
    """Test metrics and figures, logged to the model's run in `tracker`'s store (by default the project's)."""
    bundle, model = load_model(model_dir / MODEL_FILE)
    task = get_task(bundle.task)
    train_cfg = bundle.config["train"]
    test = task.load_test(raw_root, bundle.dataset, settings=TrainConfig.model_validate(train_cfg))
    outputs = engine.predict(model, test.inputs, 1000, engine.select_device("cpu"))
    loss = task.make_loss(train_cfg["loss"], train_cfg["label_smoothing"])(outputs, test.targets).item()
    metrics, figures = task.report(model, outputs, test, loss, raw_root, bundle.dataset, bundle.name,
                                   read_json(model_dir / HISTORY_FILE), out_dir)
    write_json(out_dir / "metrics.json", metrics)
    run = read_json(model_dir / RUN_FILE)
    tracker = tracker or Tracker.for_project(run["experiment"])
    with tracker.model_run(bundle.name, f"evaluate@{bundle.name}", run_id=run["run_id"]) as tracked:
        tracked.log_metrics(metrics)
        tracked.log_artifacts([*figures, out_dir / "metrics.json"], "evaluate")
    return metrics
