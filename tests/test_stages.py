"""Each stage's library function on tiny data, with what it must leave in files and in MLflow."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

import dltorch.pipeline.export as export_stage
from dltorch.bundle import load_model
from dltorch.config import parse_params
from dltorch.errors import CheckpointError, ParityError
from dltorch.export import export_onnx
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.export import export
from dltorch.pipeline.train import train
from tests.conftest import tiny_params_dict


@pytest.fixture
def trained(tmp_path: Path, raw_root: Path, tiny_params, mlflow_store) -> Path:
    out = tmp_path / "models" / "mlp"
    train(tiny_params, "mlp", raw_root, out)
    return out


def _run(model_dir: Path):
    run_id = json.loads((model_dir / "run.json").read_text())["run_id"]
    return MlflowClient().get_run(run_id)


def test_train_writes_a_self_describing_model_and_tracks_the_run(trained: Path):
    bundle, model = load_model(trained / "model.pt")
    assert (bundle.name, bundle.arch, bundle.args, bundle.dataset) == ("mlp", "mlp", {"hidden": [16]}, "fashion_mnist")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    history = json.loads((trained / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(history[0])
    run = _run(trained)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.003" and run.data.params["arch"] == "mlp"
    assert run.data.tags["dvc_stage"] == "train@mlp" and "git_commit" in run.data.tags
    losses = MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in losses] == [1, 2]


def test_retraining_with_the_checkpoint_resumes_the_same_run(tmp_path, raw_root, trained, mlflow_store):
    first = _run(trained).info.run_id
    longer = parse_params(tiny_params_dict())  # same params: the finished checkpoint is reused
    train(longer, "mlp", raw_root, trained)
    assert _run(trained).info.run_id == first
    changed = parse_params(tiny_params_dict(lr=0.001))  # other params: a fresh run
    train(changed, "mlp", raw_root, trained)
    assert _run(trained).info.run_id != first


def test_evaluate_writes_metrics_figures_and_plots_data(tmp_path, raw_root, trained):
    out = tmp_path / "eval"
    metrics = evaluate(raw_root, trained, out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics and 0.0 <= saved["test_accuracy"] <= 1.0
    assert len(saved["per_class_accuracy"]) == 10
    for figure in ("curves.png", "confusion.png", "predictions.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 1 + 60
    run = _run(trained)
    assert run.data.metrics["test_accuracy"] == pytest.approx(saved["test_accuracy"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/confusion.png", "evaluate/curves.png", "evaluate/predictions.png"} <= artifacts


def test_export_passes_parity_and_logs_an_onnx_model_with_signature(tmp_path, raw_root, trained):
    onnx_path, report_path = tmp_path / "model.onnx", tmp_path / "parity.json"
    report = export(raw_root, trained, onnx_path, report_path, opset=18, atol=1e-4, batch_size=16)
    assert report["passed"] and json.loads(report_path.read_text())["passed"]
    assert onnx_path.is_file()
    run = _run(trained)
    assert run.data.metrics["parity_passed"] == 1.0
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert len(models) == 1 and models[0].source_run_id == run.info.run_id
    info = mlflow.models.get_model_info(models[0].model_uri)
    assert info.signature.inputs.inputs[0].shape == (-1, 1, 28, 28)
    served = mlflow.pyfunc.load_model(models[0].model_uri)
    assert served.predict(torch.rand(3, 1, 28, 28).numpy())["logits"].shape == (3, 10)


def test_parity_breach_fails_the_stage_leaves_no_onnx_and_marks_the_run_failed(
    tmp_path, raw_root, trained, monkeypatch
):
    def broken_exporter(model, *args):
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            next(perturbed.parameters()).add_(0.5)
        export_onnx(perturbed, *args)

    monkeypatch.setattr(export_stage, "export_onnx", broken_exporter)
    onnx_path, report_path = tmp_path / "model.onnx", tmp_path / "parity.json"
    with pytest.raises(ParityError, match="max_abs_diff"):
        export(raw_root, trained, onnx_path, report_path, opset=18, atol=1e-4, batch_size=16)
    assert not onnx_path.exists() and not list(tmp_path.glob(".model.onnx*"))
    assert json.loads(report_path.read_text())["passed"] is False
    assert _run(trained).info.status == "FAILED"


def test_evaluate_without_a_trained_model_is_a_clear_error(tmp_path, raw_root):
    with pytest.raises(CheckpointError, match="no trained model; run the train stage first"):
        evaluate(raw_root, tmp_path / "nothing", tmp_path / "eval")
