"""Sequence forecasting: the sequences set, windows and baselines against hand-made series, and an LSTM through
train, evaluate and export with parity at a second window length."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error

from dltorch.bundle import load_model
from dltorch.config import SequencesConfig, parse_params
from dltorch.data import sequence as series_data
from dltorch.errors import DataError, ParamsError
from dltorch.export import onnx_session, run_onnx
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from dltorch.tasks import sequence
from tests.conftest import TINY_SEQUENCES, tiny_params_dict
from tests.helpers import export_trained

TINY = SequencesConfig(**TINY_SEQUENCES)


def test_a_seed_gives_the_same_series_and_bytes_another_seed_others(tmp_path: Path):
    first, again = series_data.generate(TINY), series_data.generate(TINY)
    assert np.array_equal(first.values, again.values) and list(first.split) == list(again.split)
    assert series_data.write(first, tmp_path / "a") == series_data.write(again, tmp_path / "b")
    assert (tmp_path / "a" / "series.csv").read_bytes() == (tmp_path / "b" / "series.csv").read_bytes()
    other = series_data.generate(TINY.model_copy(update={"seed": 1}))
    assert not np.allclose(other.values, first.values)
    read = series_data.read(tmp_path / "a")  # full precision survives the CSV
    assert np.array_equal(read.values, first.values) and read.spec == series_data.Spec(16, 4, 4)


def test_series_are_split_whole_and_noise_is_added_to_the_same_sines():
    data = series_data.generate(TINY)
    assert data.values.shape == (12, 40)
    assert [int((data.split == s).sum()) for s in ("train", "val", "test")] == [8, 2, 2]
    clean = series_data.generate(TINY.model_copy(update={"noise": 0.0})).values
    noisy = series_data.generate(TINY.model_copy(update={"noise": 0.5})).values
    # the sines are drawn before the noise: the difference is the noise alone
    assert abs(float(np.std(noisy - clean)) - 0.5) < 0.05 and abs(float(np.mean(noisy - clean))) < 0.05
    # 3 sines with amplitudes up to 1: never above 3 in size, and not constant
    assert np.abs(clean).max() <= 3.0 and clean.std(axis=1).min() > 0.1


def test_windows_and_baselines_on_a_hand_made_sequence():
    series = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0]])
    inputs, targets = series_data.windows(series, window=4, horizon=2)
    assert inputs.shape == (3, 4, 1) and targets.shape == (3, 2)
    assert inputs[2, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0] and targets[2].tolist() == [7.0, 11.0]
    guesses = sequence.baselines(inputs.numpy(), horizon=2, moving_average=3)
    assert guesses["last_value"].tolist() == [[3, 3], [4, 4], [5, 5]]
    assert guesses["moving_average"].tolist() == [[2, 2], [3, 3], [4, 4]]  # mean of the last 3 inputs
    # MSE of the last-value baseline: window 3 misses (7 - 5, 11 - 5); windows 1 and 2 miss by 1 and 2 steps
    errors = [(4 - 3) ** 2, (5 - 3) ** 2, (5 - 4) ** 2, (7 - 4) ** 2, (7 - 5) ** 2, (11 - 5) ** 2]
    assert sequence._mse(guesses["last_value"], targets.numpy()) == pytest.approx(np.mean(errors))


def test_a_missing_or_corrupt_set_names_the_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"series.csv: missing; run the synth stage first"):
        series_data.read(tmp_path / "nothing")
    folder = tmp_path / "set"
    series_data.write(series_data.generate(TINY), folder)
    lines = (folder / "series.csv").read_text().splitlines()
    lines[3] = lines[3].replace("train", "training", 1)
    (folder / "series.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"series.csv: line 4: expected a split \(train\|val\|test\) and 40 numbers"):
        series_data.read(folder)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"window": 38}, "synth.sequences: window + horizon (38 + 4) exceed length 40"),
        ({"val_count": 6, "test_count": 6}, "synth.sequences: val_count + test_count (6 + 6) leave no training"),
        ({"moving_average": 17}, "synth.sequences: moving_average: 17 is longer than the window (16)"),
    ],
)
def test_inconsistent_sequences_params_are_schema_errors(change: dict, expected: str):
    with pytest.raises(ParamsError) as caught:
        parse_params({**tiny_params_dict(), "synth": {"sequences": {**TINY_SEQUENCES, **change}}})
    assert expected in str(caught.value)


def _lstm_params(cell: str = "lstm", **train) -> dict:
    raw = tiny_params_dict()
    raw["models"] = {cell: {
        "arch": "lstm", "task": "sequence", "data": "synthetic/sequences",
        "args": {"cell": cell, "hidden": 16, "layers": 2},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "loss": "mse", "val_size": 20, "seed": 0, **train},
        "export": {"atol": 1e-4},
    }}
    return raw


def test_a_sequence_model_flips_nothing():
    with pytest.raises(ParamsError, match="models.lstm: train.augment.hflip: a sequence has nothing to flip"):
        parse_params(_lstm_params(augment={"hflip": True}))


def test_lstm_trains_reports_baselines_exports_and_passes_parity_at_a_second_length(
    tmp_path: Path, synthetic_root: Path, mlflow_store
):
    params = parse_params(_lstm_params())
    data = synthetic_root / "synthetic" / "sequences"
    model_dir = tmp_path / "lstm"
    history = train(params, "lstm", data, model_dir)
    assert len(history) == 1 and {"train_loss", "train_mae", "val_loss", "val_mae"} <= set(history[0])
    assert math.isfinite(history[0]["val_loss"])  # neither NaN nor infinite: 20 windows of the validation series

    metrics = evaluate(data, model_dir, model_dir / "eval")
    metrics |= json.loads((model_dir / "eval" / "details.json").read_text())  # the baselines beside the headline
    _, model = load_model(model_dir / "model.pt")
    test = sequence.load_test(data, "sequences")
    assert len(test) == 2 * (40 - 16 - 4 + 1)  # two test series, every window
    truth = test.targets.numpy()
    with torch.no_grad():
        predicted = model(test.inputs).numpy()
    last = np.repeat(test.inputs[:, -1, :].numpy(), 4, axis=1)
    average = np.repeat(test.inputs[:, -4:, 0].mean(1, keepdim=True).numpy(), 4, axis=1)
    # scikit-learn as the oracle for the errors; the baselines as the course states them (repeat the last value; the
    # mean of the last 4), written here with numpy indexing
    mse, baseline = mean_squared_error(truth, predicted), mean_squared_error(truth, last)
    assert metrics["test_mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["test_mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-5)
    assert metrics["baseline_last_value_mse"] == pytest.approx(baseline, rel=1e-6)
    assert metrics["baseline_moving_average_mse"] == pytest.approx(mean_squared_error(truth, average), rel=1e-6)
    assert metrics["mse_ratio_last_value"] == pytest.approx(mse / baseline, rel=1e-5)
    assert metrics["goal_met"] == (metrics["mse_ratio_last_value"] <= 0.2)
    for figure in ("curves.png", "predictions.png", "confusion.png"):
        assert (model_dir / "eval" / figure).read_bytes()[:4] == b"\x89PNG"
    rows = (model_dir / "eval" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "window,step,actual,predicted" and len(rows) == 1 + truth.size

    rule = params.registry_rule("lstm")
    assert (rule.metric, rule.direction) == ("test_mse", "min")
    onnx_path = tmp_path / "model.onnx"
    deploy, report = export_trained(params, "lstm", data, model_dir, tmp_path, batch_size=16, quantize="dynamic",
                                    calibration_size=8)
    assert report["passed"] and report["shapes"] == {"example": [4, 16, 1], "other": [7, 12, 1]}
    assert report["checks"]["max_abs_diff_shape_12x1"]["passed"] and report["checks"]["mse_equal_shape_12x1"]["passed"]
    assert deploy["registry"]["fp32"]["decision"] == "promoted"
    dims = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param and dims[2].dim_value == 1
    longer = torch.randn(3, 25, 1)  # a third length and batch: still torch's numbers
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(onnx_session(onnx_path), longer.numpy(), 3), model(longer).numpy(),
                                   atol=1e-4)
    # the registered model's signature leaves the length open too, so a server takes any window
    served = mlflow.pyfunc.load_model("models:/lstm@champion")
    assert served.predict(longer.numpy())["forecast"].shape == (3, 4)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_rnn_cells_export_with_a_dynamic_length(cell: str, tmp_path: Path):
    """nn.GRU maps to ONNX GRU; nn.RNN needs dltorch's own translation (onnx_rnn.py), or the length is baked in."""
    from dltorch.export import export_onnx
    from dltorch.models import create

    torch.manual_seed(0)
    model = create("lstm", {"cell": cell, "hidden": 8, "layers": 2}, in_shape=(16, 1), num_outputs=4).eval()
    path = tmp_path / f"{cell}.onnx"
    spec = sequence.TASK
    export_onnx(model, (16, 1), path, 18, spec.input_name, spec.output_name, spec.dynamic_axes)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"gru": "GRU", "rnn": "RNN"}[cell] in ops
    session = onnx_session(path)
    for batch, steps in ((7, 9), (2, 40)):
        window = torch.randn(batch, steps, 1)
        with torch.no_grad():
            np.testing.assert_allclose(run_onnx(session, window.numpy(), batch), model(window).numpy(), atol=1e-5)
