"""Logistic regression on the blobs: the set as documented, the loss against sklearn's log loss, the fit against
sklearn's maximum-likelihood logistic regression and the known true boundary, and an exported graph that outputs
probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from dltorch.config import BlobsConfig, load_params, parse_params
from dltorch.data import binary as blobs
from dltorch.errors import DataError, ParamsError
from dltorch.export import onnx_session, run_onnx
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from dltorch.tasks import get_task
from tests.conftest import REPO
from tests.helpers import export_trained

REPO_PARAMS = load_params(REPO / "params.yaml")
TASK = get_task("binary")


def test_blobs_are_the_documented_draw_and_read_back_exactly(tmp_path: Path):
    cfg = BlobsConfig(seed=3, size=50, noise=0.5, train_size=40, center=2.0)
    rng = np.random.RandomState(3)  # the recipe in data/binary.py's words: labels by coin, then the noise
    labels = rng.randint(0, 2, 50)
    points = np.where(labels[:, None] == 1, 2.0, -2.0) + 0.5 * rng.randn(50, 2)
    digest = blobs.write(blobs.generate(cfg), tmp_path / "blobs.csv")
    data = blobs.read(tmp_path / "blobs.csv")
    assert np.array_equal(data.points, points) and np.array_equal(data.labels, labels)
    assert list(data.split) == ["train"] * 40 + ["test"] * 10
    assert blobs.write(blobs.generate(cfg), tmp_path / "again.csv") == digest  # byte-identical for the same params


def test_a_malformed_row_is_a_data_error_naming_its_line(tmp_path: Path):
    path = tmp_path / "blobs.csv"
    path.write_text("x1,x2,label,split\n0.5,1.0,1,train\n0.5,1.0,2,train\n")
    with pytest.raises(DataError, match="line 3: expected x1,x2,label,split"):
        blobs.read(path)


def test_the_loss_is_sklearns_log_loss_even_at_certain_mistakes():
    labels = np.array([0, 1, 1, 0, 1, 0], dtype=np.float32)
    probabilities = np.array([0.1, 0.8, 0.5, 0.7, 0.0, 1.0], dtype=np.float32)  # the last two: certain and wrong
    expected = log_loss(labels, probabilities)
    loss = TASK.make_loss("bce")(torch.from_numpy(probabilities)[:, None], torch.from_numpy(labels)[:, None])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert TASK.onnx_metrics(probabilities[:, None], labels)["test_log_loss"] == pytest.approx(expected, rel=1e-6)


def test_logistic_fits_the_blobs_and_exports_a_graph_of_probabilities(tmp_path, synthetic_root, mlflow_store):
    data = synthetic_root / REPO_PARAMS.model("logistic").data
    model_dir = tmp_path / "logistic"
    train(REPO_PARAMS, "logistic", data, model_dir)
    metrics = evaluate(data, model_dir, model_dir / "eval", REPO_PARAMS.model("logistic").gate)
    details = json.loads((model_dir / "eval" / "details.json").read_text())
    deploy, parity = export_trained(REPO_PARAMS, "logistic", data, model_dir, tmp_path)

    points, labels = blobs.read(data).part("test")
    probabilities = run_onnx(onnx_session(tmp_path / "model.onnx"), points.astype(np.float32), 1000).ravel()
    w, b = np.array(details["w"]), details["b"]
    assert probabilities == pytest.approx(1 / (1 + np.exp(-(points @ w + b))), abs=1e-6)  # sigmoid(w.x + b)
    assert metrics["test_log_loss"] == pytest.approx(log_loss(labels, probabilities), rel=1e-5)
    assert metrics["test_accuracy"] == accuracy_score(labels, probabilities > 0.5)
    assert parity["passed"] and parity["checks"]["class_agreement"]["passed"]
    assert details["gate"]["passed"]

    # Near the maximum-likelihood fit of the rows it trained on (sklearn, unpenalized): its training log loss is
    # close to, never below, the optimum's. Its boundary is the true one of the blobs, x1 + x2 = 0: w along (1, 1)
    # and the line through the origin (b / |w| is its distance from it).
    settings = REPO_PARAMS.model("logistic").train
    rows, _ = TASK.load_train_val(data, "blobs", settings.val_size, settings.seed)
    x_train, y_train = rows.inputs.double().numpy(), rows.targets.squeeze(1).double().numpy()
    oracle = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x_train, y_train)
    optimum = log_loss(y_train, oracle.predict_proba(x_train)[:, 1])
    fitted = log_loss(y_train, 1 / (1 + np.exp(-(x_train @ w + b))))
    assert optimum <= fitted < optimum + 0.01
    assert np.degrees(np.arccos(w.sum() / np.sqrt(2) / np.linalg.norm(w))) < 5 and abs(b) / np.linalg.norm(w) < 0.1
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (model_dir / "eval" / figure).read_bytes()[:4] == b"\x89PNG"


def test_binary_models_have_nothing_to_flip():
    entry = REPO_PARAMS.model("logistic").model_dump(mode="json")
    entry["train"]["augment"] = {"hflip": True}
    with pytest.raises(ParamsError, match="train.augment.hflip: a binary has nothing to flip"):
        parse_params({"models": {"logistic": entry}})
