"""Each stage's library function on tiny data, with what it must leave in files and in MLflow."""

from __future__ import annotations

import copy
import importlib.metadata
import json
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
from mlflow.tracking import MlflowClient
from onnx import numpy_helper

import dltorch.pipeline.export as export_stage
from dltorch.bundle import load_model
from dltorch.config import ExportConfig, GateConfig, default_registry, parse_params
from dltorch.errors import CheckpointError, ParityError, QualityGateError
from dltorch.export import export_onnx
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.export import ExportPaths, export
from dltorch.pipeline.train import train
from tests.conftest import tiny_params_dict


@pytest.fixture
def trained(tmp_path: Path, raw_root: Path, tiny_params, mlflow_store) -> Path:
    out = tmp_path / "models" / "mlp"
    train(tiny_params, "mlp", raw_root, out)
    return out


def _export(raw_root: Path, model_dir: Path, out: Path, eval_dir: Path, **overrides) -> dict:
    """The export stage as dvc.yaml runs it, with the default registry rule and export settings."""
    spec = ExportConfig(**{"batch_size": 16, "calibration_size": 100, **overrides})
    return export(ExportPaths.beside(raw_root, model_dir, eval_dir / "metrics.json", out), spec,
                  default_registry()["classification"])


@pytest.fixture
def evaluated(tmp_path: Path, raw_root: Path, trained: Path) -> Path:
    out = tmp_path / "eval"
    evaluate(raw_root, trained, out)
    return out


def _set_metric(eval_dir: Path, value: float) -> None:
    """Pretend evaluate measured `value`, so a test can order versions without training several models."""
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    (eval_dir / "metrics.json").write_text(json.dumps({**metrics, "test_accuracy": value}))


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
    assert run.data.tags["train.precision"] == history[0]["precision"] == "fp32"  # the precision it trained in
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


def test_changing_only_the_targets_trains_afresh(raw_root, trained):
    first_run = _run(trained).info.run_id
    first = torch.load(trained / "model.pt", weights_only=True)["state_dict"]
    labels = raw_root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    idx = bytearray(labels.read_bytes())
    idx[8:] = bytes((label + 1) % 10 for label in idx[8:])  # past the 8-byte header: every label moves, no image
    labels.write_bytes(bytes(idx))
    train(parse_params(tiny_params_dict()), "mlp", raw_root, trained)  # the same params as `trained`
    assert _run(trained).info.run_id != first_run  # the old checkpoint was refused: a fresh run
    retrained = torch.load(trained / "model.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(first[name], retrained[name]) for name in first)


def test_evaluate_writes_metrics_figures_and_plots_data(tmp_path, raw_root, trained):
    out = tmp_path / "eval"
    metrics = evaluate(raw_root, trained, out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics and 0.0 <= saved["test_accuracy"] <= 1.0
    # the headline only (dvc metrics show): the task's metrics and the training time; the rest in details.json
    history = json.loads((trained / "history.json").read_text())
    assert set(saved) == {"test_accuracy", "test_loss", "train_seconds"} and saved["train_seconds"] > 0
    assert saved["train_seconds"] <= sum(row["seconds"] for row in history) + 0.05
    assert len(json.loads((out / "details.json").read_text())["per_class_accuracy"]) == 10
    for figure in ("curves.png", "confusion.png", "predictions.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 1 + 60
    run = _run(trained)
    assert run.data.metrics["test_accuracy"] == pytest.approx(saved["test_accuracy"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/confusion.png", "evaluate/curves.png", "evaluate/predictions.png"} <= artifacts


def test_a_model_below_its_gate_fails_evaluate_with_whole_outputs(tmp_path, raw_root, trained):
    """The loss is above 0, so `max: 0` fails: a clear error with both numbers, every output written whole with
    the verdict, the run FAILED; a gate it meets passes and is recorded too."""
    out = tmp_path / "eval"
    with pytest.raises(QualityGateError, match=r"mlp: test_loss: measured 0\.\d{4} vs required <= 0\.0000: failed"):
        evaluate(raw_root, trained, out, GateConfig(metric="test_loss", max=0.0))
    saved = json.loads((out / "details.json").read_text())
    measured = json.loads((out / "metrics.json").read_text())["test_loss"]
    assert saved["gate"]["passed"] is False and saved["gate"]["measured"] == measured > 0
    assert (out / "predictions.csv").read_text().count("\n") == 1 + 60
    assert _run(trained).info.status == "FAILED"
    evaluate(raw_root, trained, out, GateConfig(metric="test_accuracy", min=0.0))
    verdict = json.loads((out / "details.json").read_text())["gate"]
    assert verdict["passed"] is True and verdict["required"] == 0.0
    assert _run(trained).data.tags["gate"].endswith("passed")


def test_export_passes_parity_and_logs_an_onnx_model_with_signature(tmp_path, raw_root, trained, evaluated):
    out = tmp_path / "export"
    _export(raw_root, trained, out, evaluated)
    assert json.loads((out / "parity.json").read_text())["passed"]
    assert (out / "model.onnx").is_file()
    run = _run(trained)
    assert run.data.metrics["parity_passed"] == 1.0
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    fp32 = [m for m in models if m.name == "model"]
    assert len(fp32) == 1 and fp32[0].source_run_id == run.info.run_id
    info = mlflow.models.get_model_info(fp32[0].model_uri)
    assert info.signature.inputs.inputs[0].shape == (-1, 1, 28, 28)
    served = mlflow.pyfunc.load_model(fp32[0].model_uri)
    assert served.predict(torch.rand(3, 1, 28, 28).numpy())["logits"].shape == (3, 10)
    # what a server that builds the model's own environment installs: the packages the pyfunc imports, pinned to ours
    listed = Path(mlflow.pyfunc.get_model_dependencies(fp32[0].model_uri)).read_text().split()
    assert sorted(listed) == [f"{package}=={importlib.metadata.version(package)}"
                      for package in ("mlflow", "numpy", "onnx", "onnxruntime")]


def test_parity_breach_fails_the_stage_leaves_no_onnx_registers_nothing_and_marks_the_run_failed(
    tmp_path, raw_root, trained, evaluated, monkeypatch
):
    def broken_exporter(model, *args):
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            next(perturbed.parameters()).add_(0.5)
        export_onnx(perturbed, *args)

    monkeypatch.setattr(export_stage, "export_onnx", broken_exporter)
    out = tmp_path / "export"
    with pytest.raises(ParityError, match="max_abs_diff"):
        _export(raw_root, trained, out, evaluated)
    assert not (out / "model.onnx").exists() and not list(out.glob(".model.onnx*"))
    assert not (out / "model.int8.onnx").exists() and not (out / "deploy.json").exists()
    assert json.loads((out / "parity.json").read_text())["passed"] is False
    assert _run(trained).info.status == "FAILED"
    assert MlflowClient().search_registered_models() == []
    assert mlflow.search_logged_models(experiment_ids=[_run(trained).info.experiment_id], output_format="list") == []


def test_evaluate_without_a_trained_model_is_a_clear_error(tmp_path, raw_root):
    with pytest.raises(CheckpointError, match="no trained model; run the train stage first"):
        evaluate(raw_root, tmp_path / "nothing", tmp_path / "eval")


def test_every_version_is_candidate_and_champion_moves_only_on_a_better_metric(
    tmp_path, raw_root, trained, evaluated
):
    client = MlflowClient()

    def export_with(accuracy: float, folder: str) -> dict:
        _set_metric(evaluated, accuracy)
        return _export(raw_root, trained, tmp_path / folder, evaluated)["registry"]["fp32"]

    first = export_with(0.80, "v1")
    assert (first["version"], first["decision"], first["champion"]) == (1, "promoted", None)
    worse = export_with(0.79, "v2")
    assert (worse["version"], worse["decision"], worse["candidate"], worse["champion"]) == (2, "kept", 0.79, 0.80)
    tie = export_with(0.80, "v3")
    assert tie["decision"] == "kept"  # a tie keeps the champion
    better = export_with(0.85, "v4")
    assert (better["decision"], better["champion"], better["champion_version"]) == ("promoted", 0.80, 1)

    aliases = client.get_registered_model("mlp").aliases
    assert {alias: int(version) for alias, version in aliases.items()} == {"candidate": 4, "champion": 4}
    assert client.get_model_version("mlp", "2").tags == {"precision": "fp32", "test_accuracy": "0.79"}
    run = _run(trained)  # the run records the last decision and both numbers
    assert run.data.tags["registry.fp32.decision"] == "promoted"
    assert run.data.metrics["registry.fp32.candidate"] == pytest.approx(0.85)
    assert run.data.metrics["registry.fp32.champion"] == pytest.approx(0.80)
    deploy = json.loads((tmp_path / "v2" / "deploy.json").read_text())
    assert deploy["registry"]["fp32"]["reason"] == "test_accuracy 0.79 vs champion 0.8 (max): not better"
    champion = mlflow.pyfunc.load_model("models:/mlp@champion")
    assert champion.predict(torch.rand(2, 1, 28, 28).numpy())["logits"].shape == (2, 10)


def _timed(monkeypatch, int8_ms: dict[str, float]) -> None:
    """Fixed latencies instead of measured ones, so which file is faster does not depend on the machine:
    fp32 takes 1 ms at every batch size, int8 what `int8_ms` says."""
    def fake_time(paths: dict[str, Path], inputs: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
        assert paths["int8"].name.endswith(".int8.onnx") and not paths["fp32"].name.endswith(".int8.onnx")
        return {"fp32": dict.fromkeys(int8_ms, 1.0), "int8": int8_ms}

    monkeypatch.setattr(export_stage, "time_onnx", fake_time)


def test_latency_is_measured_at_each_batch_size(tmp_path, raw_root, trained, evaluated):
    deploy = _export(raw_root, trained, tmp_path / "export", evaluated, latency_runs=7)
    assert deploy["int8"]["runs"] == 7
    for precision in ("fp32", "int8"):
        assert set(deploy["int8"][precision]["latency_ms"]) == {"batch_1", "batch_64"}
        assert all(ms > 0 for ms in deploy["int8"][precision]["latency_ms"].values())


def test_int8_is_kept_and_registered_when_it_passes_the_gate(tmp_path, raw_root, trained, evaluated, monkeypatch):
    _timed(monkeypatch, {"batch_1": 0.5, "batch_64": 0.9})
    deploy = _export(raw_root, trained, tmp_path / "export", evaluated)
    int8 = deploy["int8"]
    assert int8["passed"] and int8["drop"] <= 0.005 and (tmp_path / "export" / "model.int8.onnx").is_file()
    assert int8["reason"].endswith("batch_64 0.9 vs 1 ms: at most 0.9x fp32's at every batch size")
    assert int8["int8"]["size_bytes"] < int8["fp32"]["size_bytes"]
    record = deploy["registry"]["int8"]
    assert (record["registered_model"], record["decision"]) == ("mlp-int8", "promoted")
    version = MlflowClient().get_model_version_by_alias("mlp-int8", "champion")
    assert version.tags["precision"] == "int8"
    assert float(version.tags["test_accuracy"]) == pytest.approx(int8["int8"]["test_accuracy"])


def test_int8_that_loses_accuracy_is_kept_but_not_registered_and_the_report_says_why(
    tmp_path, raw_root, trained, evaluated, monkeypatch
):
    def zeroing_quantizer(src, dst, *args):  # stands in for a quantization that ruins the model
        model = onnx.load(str(src))
        for weight in model.graph.initializer:
            array = numpy_helper.to_array(weight)
            if array.dtype == np.float32 and array.ndim == 2:  # the Gemm weights; shapes and biases stay
                weight.CopyFrom(numpy_helper.from_array(np.zeros_like(array), weight.name))
        onnx.save(model, str(dst))

    monkeypatch.setattr(export_stage, "quantize_onnx", zeroing_quantizer)
    deploy = _export(raw_root, trained, tmp_path / "export", evaluated)
    int8 = deploy["int8"]
    assert not int8["passed"] and int8["drop"] > 0.005
    assert int8["reason"].startswith("test_accuracy ") and "exceeds the limit 0.0050" in int8["reason"]
    assert (tmp_path / "export" / "model.int8.onnx").is_file()
    assert deploy["registry"]["int8"] == {"registered_model": "mlp-int8", "decision": "not registered",
                                          "reason": int8["reason"]}
    assert [m.name for m in MlflowClient().search_registered_models()] == ["mlp"]
    assert _run(trained).data.metrics["int8.passed"] == 0.0


@pytest.mark.parametrize("batch_64_ms", [2.0, 0.95])
def test_int8_that_is_accurate_but_not_faster_is_not_registered_and_the_reason_says_so(
    batch_64_ms, tmp_path, raw_root, trained, evaluated, monkeypatch
):
    """A static-QDQ LeNet-5 once measured twice as slow as fp32 and still became a champion: speed is a gate too.
    A near tie (0.95x) fails it as well: which of two equally fast graphs times faster is the machine's noise."""
    _timed(monkeypatch, {"batch_1": 0.5, "batch_64": batch_64_ms})
    deploy = _export(raw_root, trained, tmp_path / "export", evaluated)
    int8 = deploy["int8"]
    assert int8["accurate"] and not int8["faster"] and not int8["passed"]
    assert int8["reason"].endswith(f"latency int8 vs fp32: batch_1 0.5 vs 1 ms; batch_64 {batch_64_ms:g} vs 1 ms: "
                                   "above 0.9x fp32's at batch_64")
    assert deploy["registry"]["int8"] == {"registered_model": "mlp-int8", "decision": "not registered",
                                          "reason": int8["reason"]}
    assert [m.name for m in MlflowClient().search_registered_models()] == ["mlp"]
    run = _run(trained)
    assert run.data.metrics["int8.faster"] == 0.0 and run.data.tags["int8.reason"] == int8["reason"]


def test_export_without_evaluate_metrics_is_a_clear_error(tmp_path, raw_root, trained):
    with pytest.raises(CheckpointError, match="no test metrics; run the evaluate stage first"):
        _export(raw_root, trained, tmp_path / "export", tmp_path / "no-eval")


def test_static_quantization_calibrates_on_training_images(tmp_path, raw_root, mlflow_store):
    params = parse_params({**tiny_params_dict(), "models": {"lenet5": {
        "arch": "lenet5", "task": "classification", "data": "raw", "args": {},
        "train": tiny_params_dict()["models"]["mlp"]["train"]}}})
    model_dir = tmp_path / "models" / "lenet5"
    train(params, "lenet5", raw_root, model_dir)
    evaluate(raw_root, model_dir, tmp_path / "eval")
    deploy = _export(raw_root, model_dir, tmp_path / "export", tmp_path / "eval", quantize="static",
                     calibration_size=64)
    assert (deploy["int8"]["mode"], deploy["int8"]["calibration_size"]) == ("static", 64)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "export" / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert deploy["registry"]["fp32"]["registered_model"] == "lenet5"
