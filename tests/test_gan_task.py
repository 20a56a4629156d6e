"""The gan task end to end: the class shares on a hand-made case, the untrained start rebuilt exactly, the export
example of noise, and a tiny run through train (per-epoch grids in the run), evaluate (Fréchet distance with its
floor and ceiling, class shares) and export (ONNX parity on fixed noise, the served generator's images)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from dltorch.bundle import ModelBundle, load_model
from dltorch.config import TrainConfig, parse_params
from dltorch.data.gan import fixed_noise
from dltorch.errors import ParamsError
from dltorch.models import create
from dltorch.onnx_server import BadRequest, OnnxModel, download
from dltorch.pipeline.evaluate import evaluate, train_judge
from dltorch.pipeline.export import Subject, _calibration_set
from dltorch.pipeline.train import train
from dltorch.tasks import get_task
from dltorch.tasks.gan import NOISE_SEED, class_shares, features, frechet_distance_of, untrained
from tests.helpers import export_trained

TASK = get_task("gan")


def _params(epochs: int = 2) -> dict:
    entry = {"arch": "gan", "task": "gan", "data": "raw", "args": {"noise": 8, "width": 4},
             "train": {"epochs": epochs, "batch_size": 32, "optimizer": "adam", "lr": 2e-4, "loss": "adversarial",
                       "val_size": 0, "seed": 0}}
    return {"fetch": {"source_dir": None, "download": False}, "mlflow": {"experiment": "tests"},
            "models": {"gan": entry}}


def test_class_shares_count_each_label_over_all_samples_and_name_absent_classes_zero():
    shares = class_shares(torch.tensor([0, 0, 0, 2, 2, 3, 0, 2]), 5)
    assert shares.tolist() == [0.5, 0.0, 0.375, 0.125, 0.0]


def test_the_untrained_generator_is_the_one_training_started_from():
    torch.manual_seed(3)
    start = create("gan", {"noise": 8, "width": 4}, in_shape=(1, 28, 28), num_outputs=1)
    trained = create("gan", {"noise": 8, "width": 4}, in_shape=(1, 28, 28), num_outputs=1)  # other weights
    rebuilt = untrained(trained, 3)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), rebuilt.state_dict().values(),
                                                  strict=True))


def test_the_model_is_tested_and_exported_on_noise_of_its_own_width():
    model = create("gan", {"noise": 12, "width": 4}, in_shape=(1, 28, 28), num_outputs=1)
    images = torch.rand(5, 1, 28, 28)
    test = TASK.test_inputs(type("Loaded", (), {"inputs": images, "__len__": lambda self: 5})(), model)
    assert test.inputs.shape == (5, 12) and torch.equal(test.targets, images)
    assert torch.equal(test.inputs, fixed_noise(5, 12, NOISE_SEED))
    assert TASK.export_shape(None, model) == (12,)


def test_static_quantization_calibrates_the_generator_on_noise(raw_root: Path):
    model = create("gan", {"noise": 12, "width": 4}, in_shape=(1, 28, 28), num_outputs=1).eval()
    bundle = ModelBundle("gan", "gan", {"noise": 12, "width": 4}, "gan", "fashion_mnist", {}, {})
    subject = Subject(bundle, model, TASK, TrainConfig(val_size=0, seed=0), TASK.load_test(raw_root, "fashion_mnist"),
                      0.0)
    calibration = _calibration_set(subject, raw_root, 20)
    assert calibration.shape == (20, 12)


def test_a_validation_split_is_refused(raw_root: Path):
    with pytest.raises(ParamsError, match="val_size"):
        TASK.load_train_val(raw_root, "fashion_mnist", 10, 0)


def test_a_tiny_run_trains_evaluates_exports_and_serves_the_generator(tmp_path: Path, raw_root: Path, mlflow_store):
    params = parse_params(_params())
    model_dir = tmp_path / "gan"
    history = train(params, "gan", raw_root, model_dir)
    assert [row["epoch"] for row in history] == [1, 2] and {"train_d_loss", "train_g_loss"} <= set(history[0])
    run_id = json.loads((model_dir / "run.json").read_text())["run_id"]
    grids = [item.path for item in mlflow.MlflowClient().list_artifacts(run_id, "train/epochs")]
    assert grids == ["train/epochs/samples_epoch_001.png", "train/epochs/samples_epoch_002.png"]

    metrics = evaluate(raw_root, model_dir, model_dir / "eval")
    details = json.loads((model_dir / "eval" / "details.json").read_text())
    classifier = train_judge(TASK, raw_root, "fashion_mnist")
    _, model = load_model(model_dir / "model.pt")
    test = TASK.test_inputs(TASK.load_test(raw_root, "fashion_mnist"), model)
    with torch.no_grad():
        generated = model(test.inputs)
    expected = frechet_distance_of(features(classifier, generated), features(classifier, test.targets))
    assert metrics["frechet_distance"] == pytest.approx(expected, rel=1e-6)
    assert metrics["frechet_ratio"] == pytest.approx(metrics["frechet_distance"] / metrics["frechet_ceiling"])
    assert metrics["min_class_share"] == pytest.approx(min(details["class_shares"].values()))
    assert sum(details["class_shares"].values()) == pytest.approx(1.0)
    assert details["judge"] == "lenet5" and 0 <= details["judge_accuracy"] <= 1
    assert details["goal_ratio_met"] == (metrics["frechet_ratio"] <= 0.1)
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (model_dir / "eval" / figure).read_bytes()[:4] == b"\x89PNG"
    rows = (model_dir / "eval" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "class,actual,predicted" and len(rows) == 11

    deploy, report = export_trained(params, "gan", raw_root, model_dir, tmp_path, batch_size=16)
    assert report["passed"] and report["shapes"]["example"][1:] == [8] and report["samples"] == len(test)
    assert deploy["int8"]["fp32"]["frechet_distance"] == pytest.approx(metrics["frechet_distance"], rel=1e-3)
    served = mlflow.pyfunc.load_model(f"models:/gan/{deploy['registry']['fp32']['version']}")
    answer = served.predict(test.inputs[:3].numpy())
    np.testing.assert_allclose(answer["images"], generated[:3].numpy(), atol=1e-4)
    onnx_backend = OnnxModel.load(download(f"models:/gan/{deploy['registry']['fp32']['version']}", tmp_path / "served"))
    answer = onnx_backend.predict({"inputs": test.inputs[:3].tolist()})  # `dltorch serve --backend onnx`'s model
    np.testing.assert_allclose(answer["images"], generated[:3].numpy(), atol=1e-4)
    with pytest.raises(BadRequest, match="does not match expected shape"):
        onnx_backend.predict({"inputs": torch.rand(2, 1, 28, 28).tolist()})  # images are not noise
