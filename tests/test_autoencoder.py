"""The autoencoder task: shapes, the PCA baseline against scikit-learn, the codes' projection, and a tiny run through
train, evaluate and export (two ONNX outputs, each checked against torch) to the served model's answer."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from dltorch.bundle import load_model
from dltorch.config import parse_params
from dltorch.export import check_parity, export_onnx
from dltorch.models import create
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from dltorch.tasks import get_task
from dltorch.tasks.autoencoder import CodeAndReconstruction, code_points, pca_reconstruction
from tests.helpers import export_trained

TASK = get_task("autoencoder")


def _params(epochs: int = 2) -> dict:
    entry = {"arch": "autoencoder", "task": "autoencoder", "data": "raw", "args": {"latent": 4, "channels": [8, 16]},
             "train": {"epochs": epochs, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "loss": "mse",
                       "val_size": 40, "seed": 0}}
    return {"fetch": {"source_dir": None, "download": False}, "mlflow": {"experiment": "tests"},
            "models": {"autoencoder": entry}}


def test_encoder_gives_the_code_and_decoder_an_image_in_the_pixel_range():
    torch.manual_seed(0)
    model = create("autoencoder", {"latent": 5}, in_shape=(1, 28, 28), num_outputs=1)
    pixels = torch.rand(3, 1, 28, 28)
    code = model.encoder(pixels)
    rebuilt = model.decoder(code)
    assert code.shape == (3, 5) and rebuilt.shape == (3, 1, 28, 28)
    assert torch.equal(model(pixels), rebuilt) and 0 <= rebuilt.min() and rebuilt.max() <= 1


def test_pca_baseline_matches_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    train_images = torch.rand(200, 1, 6, 6, generator=generator) * torch.linspace(0.1, 1, 36).view(1, 1, 6, 6)
    test_images = torch.rand(30, 1, 6, 6, generator=generator)
    ours = pca_reconstruction(train_images, test_images, 4)
    oracle = PCA(n_components=4, svd_solver="full").fit(train_images.flatten(1).double().numpy())
    expected = oracle.inverse_transform(oracle.transform(test_images.flatten(1).double().numpy()))
    assert ours.shape == test_images.shape
    np.testing.assert_allclose(ours.flatten(1).numpy(), expected, atol=1e-5)


def test_codes_of_two_numbers_are_drawn_as_they_are_others_on_their_top_principal_directions():
    codes = torch.randn(50, 2)
    assert np.array_equal(code_points(codes)[0], codes.numpy())
    wide = torch.randn(50, 6, generator=torch.Generator().manual_seed(1)) * torch.tensor([1, 5, 2, 0.5, 3, 0.1])
    points, names = code_points(wide)
    oracle = PCA(n_components=2).fit_transform(wide.double().numpy())
    np.testing.assert_allclose(np.abs(points), np.abs(oracle), atol=1e-4)  # a principal axis has no sign
    assert names[0] == "principal component 1"


def test_parity_checks_the_code_output_too(tmp_path: Path):
    torch.manual_seed(0)
    model = create("autoencoder", {"latent": 3, "channels": [4, 8]}, in_shape=(1, 28, 28), num_outputs=1).eval()
    view = CodeAndReconstruction(model)
    path = tmp_path / "autoencoder.onnx"
    export_onnx(view, (1, 28, 28), path, 18, TASK.input_name, (TASK.output_name, *TASK.extra_outputs))
    pixels = torch.rand(20, 1, 28, 28)
    report = check_parity(path, view, pixels, pixels, 1e-4, 8, TASK.parity_checks)
    assert report["passed"] and report["checks"]["max_abs_diff_code"]["measured"] <= 1e-4

    class ShiftedCode(CodeAndReconstruction):  # torch's code moved, its reconstruction left as it was
        def forward(self, pixels):
            rebuilt, code = super().forward(pixels)
            return rebuilt, code + 1e-2

    shifted = check_parity(path, ShiftedCode(model), pixels, pixels, 1e-4, 8, TASK.parity_checks)
    assert not shifted["passed"] and not shifted["checks"]["max_abs_diff_code"]["passed"]
    assert shifted["checks"]["max_abs_diff"]["passed"]


def test_a_tiny_run_trains_evaluates_against_pca_exports_both_outputs_and_serves_them(tmp_path: Path, raw_root: Path,
                                                                                       mlflow_store):
    params = parse_params(_params())
    model_dir = tmp_path / "autoencoder"
    history = train(params, "autoencoder", raw_root, model_dir)
    assert [row["epoch"] for row in history] == [1, 2] and history[1]["val_loss"] < history[0]["val_loss"]

    metrics = evaluate(raw_root, model_dir, model_dir / "eval")
    details = json.loads((model_dir / "eval" / "details.json").read_text())
    test = TASK.load_test(raw_root, "fashion_mnist")
    pca = pca_reconstruction(TASK.load_train_val(raw_root, "fashion_mnist", 0, 0)[0].inputs, test.inputs, 4)
    assert metrics["pca_mse"] == pytest.approx((pca - test.inputs).pow(2).mean().item(), rel=1e-5)
    assert metrics["mse_ratio_pca"] == pytest.approx(metrics["test_mse"] / metrics["pca_mse"])
    assert details["latent"] == 4 and details["goal_met"] == (metrics["mse_ratio_pca"] <= 0.8)
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (model_dir / "eval" / figure).read_bytes()[:4] == b"\x89PNG"
    rows = (model_dir / "eval" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "image,class,actual,predicted" and len(rows) == 1 + len(test)

    deploy, report = export_trained(params, "autoencoder", raw_root, model_dir, tmp_path, batch_size=16)
    assert report["passed"] and {"max_abs_diff", "max_abs_diff_code", "mse_difference"} <= set(report["checks"])
    assert report["onnx_mse"] == pytest.approx(metrics["test_mse"], abs=1e-6)
    served = mlflow.pyfunc.load_model(f"models:/autoencoder/{deploy['registry']['fp32']['version']}")
    answer = served.predict(test.inputs[:3].numpy())
    _, model = load_model(model_dir / "model.pt")
    with torch.no_grad():
        code = model.encoder(test.inputs[:3])
        rebuilt = model.decoder(code)
    assert set(answer) == {"reconstruction", "code"}
    np.testing.assert_allclose(answer["reconstruction"], rebuilt.numpy(), atol=1e-4)
    np.testing.assert_allclose(answer["code"], code.numpy(), atol=1e-4)
