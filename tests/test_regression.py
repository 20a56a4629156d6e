"""The course's regressions: each model's numbers against the closed form or the ground truth (w = 2, b = 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dltorch import linreg
from dltorch.config import load_params, parse_params
from dltorch.data.synthetic import read_set
from dltorch.errors import ParamsError
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.export import ExportPaths, export
from dltorch.pipeline.train import train
from tests.conftest import REPO, tiny_params_dict

REPO_PARAMS = load_params(REPO / "params.yaml")


def test_one_gradient_step_from_zero_is_the_mse_gradient():
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])
    w, b = linreg.gradient_step(0.0, 0.0, x, y, lr=0.1)
    # dL/dw = 2 mean((wx + b - y) x) = -2 (0 + 3 + 10) / 3; dL/db = -2 (1 + 3 + 5) / 3
    assert w == pytest.approx(0.1 * 26 / 3) and b == pytest.approx(0.1 * 6)
    assert linreg.mse_loss(2.0, 1.0, x, y) == 0.0


def test_numpy_gd_converges_to_the_closed_form_and_never_increases_the_loss():
    data = read_set_default("line")
    x, y = data.part("train")
    w, b, history = linreg.numpy_gd(x, y, lr=0.3, iterations=3000)  # lr < 1/L: monotone
    w_ls, b_ls = linreg.least_squares(x, y)
    assert (w, b) == pytest.approx((w_ls, b_ls), abs=1e-6)
    assert np.polyfit(x, y, 1) == pytest.approx([w_ls, b_ls])  # an independent closed form
    losses = [row["train_loss"] for row in history]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(losses, losses[1:], strict=False))  # to rounding


def read_set_default(name: str):
    from dltorch.data.synthetic import generate

    return generate(name, REPO_PARAMS.synth)


def _train_evaluate_export(name: str, tmp_path: Path, synthetic_root: Path) -> tuple[dict, dict, Path]:
    data = synthetic_root / REPO_PARAMS.model(name).data
    model_dir = tmp_path / name
    train(REPO_PARAMS, name, data, model_dir)
    metrics = evaluate(data, model_dir, model_dir / "eval")
    spec, rule = REPO_PARAMS.model(name).export, REPO_PARAMS.registry_rule(name)
    export(ExportPaths.beside(data, model_dir, model_dir / "eval" / "metrics.json", tmp_path), spec, rule)
    return metrics, json.loads((tmp_path / "parity.json").read_text()), data


def test_linreg_numpy_reports_its_line_the_closed_form_and_both_mses(tmp_path, synthetic_root, mlflow_store):
    metrics, report, data = _train_evaluate_export("linreg_numpy", tmp_path, synthetic_root)
    x_train, y_train = read_set(data).part("train")
    x_test, y_test = read_set(data).part("test")
    assert len(x_train) == 80 and len(x_test) == 20
    w, b, _ = linreg.numpy_gd(x_train, y_train, lr=0.01, iterations=1000)
    assert (metrics["w"], metrics["b"]) == pytest.approx((w, b), rel=1e-6)  # float32 in the model
    assert (metrics["closed_form_w"], metrics["closed_form_b"]) == pytest.approx(tuple(np.polyfit(x_train, y_train, 1)))
    assert metrics["test_mse"] == pytest.approx(np.mean((w * x_test + b - y_test) ** 2), rel=1e-5)
    assert metrics["train_mse"] == pytest.approx(np.mean((w * x_train + b - y_train) ** 2), rel=1e-5)
    ls_train_mse = np.mean((np.polyval(np.polyfit(x_train, y_train, 1), x_train) - y_train) ** 2)
    assert ls_train_mse <= metrics["train_mse"] < ls_train_mse + 0.05  # close to, never below, the optimum
    assert report["passed"] and report["checks"]["mse_equal"]["passed"]
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (tmp_path / "linreg_numpy" / "eval" / figure).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["linreg_autograd", "linreg_module"])
def test_torch_regressions_recover_the_true_line(name, tmp_path, synthetic_root, mlflow_store):
    metrics, report, _ = _train_evaluate_export(name, tmp_path, synthetic_root)
    assert abs(metrics["w"] - 2) < 0.05 and abs(metrics["b"] - 1) < 0.05  # the ground truth of line_small_noise
    assert (metrics["w"], metrics["b"]) == pytest.approx((metrics["closed_form_w"], metrics["closed_form_b"]),
                                                         abs=1e-3)
    assert report["passed"]


def test_linreg_module_trains_in_the_engine_and_autograd_by_hand(tmp_path, synthetic_root, mlflow_store):
    module = json.loads(json.dumps(REPO_PARAMS.model("linreg_module").model_dump(mode="json")))
    assert module["train"]["trainer"] == "engine" and module["train"]["optimizer"] == "sgd"
    assert REPO_PARAMS.model("linreg_autograd").train.trainer == "manual_autograd"
    x = torch.tensor([[0.0], [1.0]])
    w, b, history = linreg.manual_autograd(x, 2 * x + 1, lr=0.5, epochs=2000, seed=0)
    assert (w, b) == pytest.approx((2.0, 1.0), abs=1e-4) and history[-1]["train_loss"] < 1e-8


def test_hand_written_trainers_need_a_regression_and_a_single_line(tmp_path, synthetic_root):
    raw = tiny_params_dict()
    raw["models"]["mlp"]["train"]["trainer"] = "numpy_gd"
    with pytest.raises(ParamsError, match="trainer: 'numpy_gd' trains a regression only"):
        parse_params(raw)
    raw = tiny_params_dict(loss="mse")
    with pytest.raises(ParamsError, match="train.loss: 'mse' is not a classification loss"):
        parse_params(raw)
    deep = {"arch": "mlp", "task": "regression", "data": "synthetic/line.csv", "args": {"hidden": [4]},
            "train": {"trainer": "numpy_gd", "loss": "mse", "val_size": 0}}
    raw = {"models": {"deep": deep}}
    with pytest.raises(ParamsError, match="must be one Linear layer 1 -> 1"):
        train(parse_params(raw), "deep", synthetic_root / "synthetic/line.csv", tmp_path / "deep")
