"""The course's regressions: each model's numbers against the closed form or the ground truth (w = 2, b = 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dltorch.config import load_params, parse_params
from dltorch.data.regression import read_set
from dltorch.errors import ParamsError
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from dltorch.tasks import regression as lessons
from tests.conftest import REPO, tiny_params_dict
from tests.helpers import export_trained

REPO_PARAMS = load_params(REPO / "params.yaml")


def test_one_gradient_step_from_zero_is_the_mse_gradient():
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])
    w, b = lessons.gradient_step(0.0, 0.0, x, y, lr=0.1)
    # dL/dw = 2 mean((wx + b - y) x) = -2 (0 + 3 + 10) / 3; dL/db = -2 (1 + 3 + 5) / 3
    assert w == pytest.approx(0.1 * 26 / 3) and b == pytest.approx(0.1 * 6)
    assert lessons.mse_loss(2.0, 1.0, x, y) == 0.0


def test_numpy_gd_converges_to_the_closed_form_and_never_increases_the_loss():
    data = read_set_default("line")
    x, y = data.part("train")
    w, b, history = lessons.numpy_gd(x, y, lr=0.3, iterations=3000)  # lr < 1/L: monotone
    w_ls, b_ls = lessons.least_squares(x, y)
    assert (w, b) == pytest.approx((w_ls, b_ls), abs=1e-6)
    assert np.polyfit(x, y, 1) == pytest.approx([w_ls, b_ls])  # an independent closed form
    losses = [row["train_loss"] for row in history]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(losses, losses[1:], strict=False))  # to rounding


def read_set_default(name: str):
    from dltorch.data.regression import generate

    return generate(name, REPO_PARAMS.synth)


def _train_evaluate_export(name: str, tmp_path: Path, synthetic_root: Path) -> tuple[dict, dict, Path]:
    data = synthetic_root / REPO_PARAMS.model(name).data
    model_dir = tmp_path / name
    train(REPO_PARAMS, name, data, model_dir)
    metrics = evaluate(data, model_dir, model_dir / "eval")
    details = json.loads((model_dir / "eval" / "details.json").read_text())  # w, b and the closed form
    _, parity = export_trained(REPO_PARAMS, name, data, model_dir, tmp_path)
    return {**metrics, **details}, parity, data


def course_numpy_gd(x: np.ndarray, y: np.ndarray, lr: float, iterations: int) -> tuple[float, float]:
    """The course's numpy lesson, as it writes it: float64, from w = b = 0."""
    w, b = 0.0, 0.0
    for _ in range(iterations):
        y_hat = w * x + b
        dw = -2 * np.mean(x * (y - y_hat))
        db = -2 * np.mean(y - y_hat)
        w, b = w - lr * dw, b - lr * db
    return w, b


def course_line_small_noise() -> tuple[torch.Tensor, torch.Tensor]:
    np.random.seed(42)
    x = np.random.rand(100, 1)
    y = 1 + 2 * x + 0.1 * np.random.randn(100, 1)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def course_manual_autograd(seed: int) -> tuple[float, float, list[float]]:
    """The course's autograd lesson on all 100 points; its unseeded randn seeded here as params.yaml says."""
    x, y = course_line_small_noise()
    torch.manual_seed(seed)
    w = torch.randn(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lr = 0.1
    losses = []
    for _ in range(1000):
        yhat = w * x + b
        loss = ((y - yhat) ** 2).mean()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
    return w.item(), b.item(), losses


def course_linear_module(seed: int) -> tuple[float, float, list[float]]:
    """The course's nn.Linear lesson: SGD lr 0.1, full batch of all 100 points, 1000 epochs."""
    x, y = course_line_small_noise()
    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.MSELoss()
    losses = []
    for _ in range(1000):
        model.train()
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.weight.item(), model.bias.item(), losses


def test_linreg_numpy_reports_the_course_float64_line_the_closed_form_and_both_mses(tmp_path, synthetic_root,
                                                                                   mlflow_store):
    metrics, report, data = _train_evaluate_export("linreg_numpy", tmp_path, synthetic_root)
    x_train, y_train = read_set(data).part("train")
    x_test, y_test = read_set(data).part("test")
    assert len(x_train) == 80 and len(x_test) == 20
    w, b = course_numpy_gd(x_train, y_train, lr=0.01, iterations=1000)
    assert (metrics["w"], metrics["b"]) == (w, b)  # float64, as the course prints them: not the float32 Linear's
    assert metrics["train_seconds"] > 0  # the hand-written loop times its iterations as the engine times epochs
    assert metrics["train_mse"] == np.mean((w * x_train + b - y_train) ** 2)
    assert (metrics["closed_form_w"], metrics["closed_form_b"]) == pytest.approx(tuple(np.polyfit(x_train, y_train, 1)))
    assert metrics["test_mse"] == pytest.approx(np.mean((w * x_test + b - y_test) ** 2), rel=1e-5)  # exported Linear
    ls_train_mse = np.mean((np.polyval(np.polyfit(x_train, y_train, 1), x_train) - y_train) ** 2)
    assert ls_train_mse <= metrics["train_mse"] < ls_train_mse + 0.05  # close to, never below, the optimum
    assert report["passed"] and report["checks"]["mse_equal"]["passed"]
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (tmp_path / "linreg_numpy" / "eval" / figure).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("name", "course"), [("linreg_autograd", course_manual_autograd),
                                              ("linreg_module", course_linear_module)])
def test_torch_regressions_equal_the_course_lessons(name, course, tmp_path, synthetic_root, mlflow_store):
    metrics, report, data = _train_evaluate_export(name, tmp_path, synthetic_root)
    assert len(read_set(data).part("train")[0]) == 100  # the course's every point; the test rows are extra
    w, b, losses = course(REPO_PARAMS.model(name).train.seed)
    assert (metrics["w"], metrics["b"]) == (w, b)
    # Every epoch's loss, not only the end: 1000 epochs reach the same float32 w, b from other starts (or orders).
    # The engine's epoch loss is a mean over batches (loss x rows / rows): equal to a few ulps of float64.
    history = json.loads((tmp_path / name / "history.json").read_text())
    assert [row["train_loss"] for row in history] == pytest.approx(losses, rel=1e-12, abs=0)
    assert abs(metrics["w"] - 2) < 0.05 and abs(metrics["b"] - 1) < 0.05  # the ground truth of line_small_noise
    assert report["passed"]


def test_linreg_module_trains_through_the_engine(tmp_path, synthetic_root, mlflow_store, monkeypatch):
    """The engine's fit, not a hand-written loop, produces linreg_module's history and weights."""
    from dltorch import engine

    fitted = []
    real_fit = engine.fit
    monkeypatch.setattr(engine, "fit", lambda *args, **kwargs: fitted.append(args[0]) or real_fit(*args, **kwargs))
    data = synthetic_root / REPO_PARAMS.model("linreg_module").data
    history = train(REPO_PARAMS, "linreg_module", data, tmp_path / "linreg_module")
    assert len(fitted) == 1 and len(history) == REPO_PARAMS.model("linreg_module").train.epochs
    assert {"seconds", "samples_per_second", "train_loss"} <= set(history[-1])  # the engine's epoch record
    checkpoint = torch.load(tmp_path / "linreg_module" / "checkpoint.pt", weights_only=True)
    assert {"optimizer", "lr_scheduler"} <= set(checkpoint)  # the engine's resumable checkpoint


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
