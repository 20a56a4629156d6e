"""evaluate@<model>: held-out test metrics, figures and dvc plots data, logged to the model's run."""

from __future__ import annotations

import csv
from pathlib import Path

from dltorch import engine, plots, tracking
from dltorch.bundle import load_model
from dltorch.data.images import CLASSES
from dltorch.io import atomic_path, read_json, write_json
from dltorch.pipeline.train import HISTORY_FILE, MODEL_FILE, RUN_FILE
from dltorch.tasks import get_task

GRID_SIZE = 32


def _write_predictions(path: Path, targets: list[int], predicted: list[int], classes: list[str]) -> None:
    """One row per test image, for `dvc plots show`'s confusion template."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows((classes[t], classes[p]) for t, p in zip(targets, predicted, strict=True))


def evaluate(raw_root: Path, model_dir: Path, out_dir: Path) -> dict:
    bundle, model = load_model(model_dir / MODEL_FILE)
    task = get_task(bundle.task)
    test = task.load_test(raw_root, bundle.dataset)
    train_cfg = bundle.config["train"]
    logits = engine.predict(model, test.inputs, 1000, engine.select_device("cpu"))
    loss = task.make_loss(train_cfg["loss"], train_cfg["label_smoothing"])(logits, test.targets).item()
    summary = task.summarize(logits, test.targets, loss, bundle.dataset)
    classes = CLASSES[bundle.dataset]
    metrics = {"test_accuracy": summary["accuracy"], "test_loss": summary["loss"],
               "per_class_accuracy": summary["per_class_accuracy"]}
    history = read_json(model_dir / HISTORY_FILE)
    predicted = logits.argmax(1)
    figures = [
        plots.training_curves(history, bundle.name, out_dir / "curves.png"),
        plots.confusion_matrix(summary["confusion"], classes, f"{bundle.name}: test confusion",
                               out_dir / "confusion.png"),
        plots.prediction_grid(test.inputs[:GRID_SIZE].numpy(), predicted[:GRID_SIZE].numpy(),
                              test.targets[:GRID_SIZE].numpy(), classes, bundle.name, out_dir / "predictions.png"),
    ]
    _write_predictions(out_dir / "predictions.csv", test.targets.tolist(), predicted.tolist(), classes)
    write_json(out_dir / "metrics.json", metrics)
    run = read_json(model_dir / RUN_FILE)
    with tracking.model_run(run["experiment"], bundle.name, f"evaluate@{bundle.name}", run_id=run["run_id"]):
        tracking.log_metrics(metrics)
        tracking.log_artifacts([*figures, out_dir / "metrics.json"], "evaluate")
    return metrics
