"""params.yaml validation: every problem names the file and the key path, and a stage writes nothing."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dltorch.config import load_params, parse_params
from dltorch.errors import ParamsError
from tests.conftest import REPO, tiny_params_dict


def _error_for(mutate) -> str:
    raw = copy.deepcopy(tiny_params_dict())
    mutate(raw)
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    mlp = params.model("mlp")
    assert (mlp.arch, mlp.args["hidden"], mlp.train.epochs, mlp.train.batch_size) == ("mlp", [512, 512], 10, 100)
    assert (mlp.train.optimizer, mlp.train.lr, mlp.export.atol) == ("adam", 1e-3, 1e-4)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["models"]["mlp"]["train"].update(lr=-0.1), "params.yaml: models.mlp.train.lr: "),
        (lambda p: p["models"]["mlp"]["train"].update(batch_size=0), "params.yaml: models.mlp.train.batch_size: "),
        (lambda p: p["models"]["mlp"]["train"].update(epochs="ten"), "params.yaml: models.mlp.train.epochs: "),
        (lambda p: p["models"]["mlp"]["train"].update(optimizer="adamax"), "models.mlp.train.optimizer: "),
        (lambda p: p["models"]["mlp"]["train"].update(scheduler="linear"), "models.mlp.train.scheduler: "),
        (lambda p: p["models"]["mlp"]["train"].update(loss="hinge"), "models.mlp.train.loss: "),
        (lambda p: p["models"]["mlp"]["train"].update(precision="fp16"), "models.mlp.train.precision: "),
        (lambda p: p["models"]["mlp"].update(arch="resnet999"), "unknown architecture 'resnet999'; known: "),
        (lambda p: p["models"]["mlp"]["args"].update(width=3), "models.mlp: args.width: unknown argument"),
        (lambda p: p["models"]["mlp"]["args"].update(hidden="wide"), "models.mlp: args.hidden"),
        (lambda p: p["fetch"].update(dataset="cifar10"), "params.yaml: fetch.dataset: "),
        (lambda p: p["models"]["mlp"].pop("task"), "params.yaml: models.mlp.task: Field required"),
        (lambda p: p["models"]["mlp"].update(task="detection"), "params.yaml: models.mlp.task: "),
        (lambda p: p["models"]["mlp"].update(task="segmentation", arch="unet", args={}),
         "params.yaml: models.mlp: train.loss: 'cross_entropy' is not a segmentation loss"),
        (lambda p: p["models"]["mlp"]["export"].update(atol=0) if "export" in p["models"]["mlp"]
         else p["models"]["mlp"].update(export={"atol": 0}), "models.mlp.export.atol: "),
        (lambda p: p["models"]["mlp"].update(export={"quantize": "int4"}), "models.mlp.export.quantize: "),
        (lambda p: p["models"]["mlp"].update(export={"int8_max_drop": -0.1}), "models.mlp.export.int8_max_drop: "),
        (lambda p: p["models"]["mlp"].update(export={"int8_max_latency_ratio": 1.5}),
         "models.mlp.export.int8_max_latency_ratio: "),
        (lambda p: p.update(registry={"classification": {"metric": "test_accuracy", "direction": "up"}}),
         "params.yaml: registry.classification.direction: "),
        (lambda p: p.update(registry={"classification": {"direction": "max"}}),
         "params.yaml: registry.classification.metric: "),
        (lambda p: p.update(registry={}), "models.mlp.task: no `registry.classification` rule"),
        # a metric the task's evaluate does not produce, or one the INT8 gate cannot score on ONNX outputs
        (lambda p: p.update(registry={"classification": {"metric": "test_mse", "direction": "min"}}),
         "registry.classification.metric: 'test_mse' is not a metric classification versions can be ranked by"),
        (lambda p: p.update(registry={"classification": {"metric": "test_loss", "direction": "min"}}),
         "registry.classification.metric: 'test_loss' is not a metric"),
        (lambda p: p.update(registry={"segmentation": {"metric": "dice", "direction": "min"}}),
         "registry.segmentation.direction: dice is better higher, so `max`"),
        # settings the optimizer, loss, schedule or trainer would silently ignore
        (lambda p: p["models"]["mlp"]["train"].update(momentum=0.9), "models.mlp.train: momentum: optimizer 'adam' "
                                                                     "has none (only sgd, rmsprop)"),
        (lambda p: p["models"]["mlp"]["train"].update(optimizer="adagrad", momentum=0.5),
         "models.mlp.train: momentum: optimizer 'adagrad' has none"),
        (lambda p: p["models"]["mlp"]["train"].update(loss="mse_onehot", label_smoothing=0.1),
         "models.mlp.train: label_smoothing: only loss 'cross_entropy' smooths labels, not 'mse_onehot'"),
        (lambda p: p["models"]["mlp"]["train"].update(scheduler="onecycle", warmup_epochs=1),
         "models.mlp.train: warmup_epochs: scheduler 'onecycle' warms up by itself"),
        (lambda p: p["models"].update(line=_line_model(distributed={"nproc": 2})),
         "models.line.train: distributed.nproc: trainer 'numpy_gd' runs in one process"),
        (lambda p: p["models"].update(line=_line_model(scheduler="cosine")),
         "models.line.train: scheduler: trainer 'numpy_gd' keeps lr constant"),
        # a quality gate on a metric the task does not measure, or bounded on the wrong side
        (lambda p: p["models"]["mlp"].update(gate={"metric": "dice", "min": 0.9}),
         "models.mlp: gate.metric: 'dice' is not a classification metric; known: test_accuracy, test_loss"),
        (lambda p: p["models"]["mlp"].update(gate={"metric": "test_accuracy", "max": 0.9}),
         "models.mlp: gate.max: test_accuracy is better higher; bound it with `min:`"),
        (lambda p: p["models"]["mlp"].update(gate={"metric": "test_loss", "min": 0.1, "max": 0.5}),
         "models.mlp.gate: give exactly one bound"),
        # an architecture that does not serve the task: refused at load, not by a TypeError once training starts
        (lambda p: p["models"]["mlp"].update(task="gan"),
         "models.mlp: arch: mlp is a general network, not task gan; architectures for gan: gan"),
        (lambda p: p["models"]["mlp"].update(arch="unet", args={}),
         "models.mlp: arch: unet serves task segmentation only, not task classification; architectures for "
         "classification: alexnet, densenet, fast_cnn, googlenet, lenet5, mlp, resnet, vgg, vit"),
        (lambda p: p["models"]["mlp"].update(arch="resnet", args={}, task="node_classification"),
         "architectures for node_classification: gcn, node_mlp"),
    ],
)
def test_invalid_values_name_the_key(mutate, expected):
    assert expected in _error_for(mutate)


def _line_model(**train) -> dict:
    return {"arch": "mlp", "task": "regression", "data": "synthetic/line.csv", "args": {"hidden": []},
            "train": {"trainer": "numpy_gd", "optimizer": "sgd", "loss": "mse", "val_size": 0, **train}}


def test_a_study_variant_that_would_be_ignored_names_its_key():
    study = {"data": "parabola", "arch": "mlp", "args": {"hidden": [4]},
             "train": {"optimizer": "sgd", "loss": "mse", "val_size": 0, "momentum": 0.9},
             "variants": {"adam": {"train": {"optimizer": "adam"}}}}
    message = _error_for(lambda p: p.update(optimizers=study))
    assert "variants.adam.train.momentum: optimizer 'adam' has none" in message


def test_gate_bounds_a_score_from_below_and_an_error_from_above():
    raw = tiny_params_dict()
    raw["models"]["mlp"]["gate"] = {"metric": "test_loss", "max": 0.5}
    gate = parse_params(raw).model("mlp").gate
    assert (gate.metric, gate.bound, gate.required) == ("test_loss", "max", 0.5)


def test_recurrent_models_need_the_torch_their_export_was_written_for(monkeypatch):
    """onnx_rnn.py uses private torch APIs: on another torch release an lstm/gru/rnn model is refused at load."""
    import torch

    model = {"arch": "lstm", "task": "sequence", "data": "synthetic/sequences", "args": {"cell": "gru"},
             "train": {"loss": "mse", "val_size": 0}}
    parse_params({"models": {"gru": model}})
    monkeypatch.setattr(torch, "__version__", "2.15.1")
    with pytest.raises(ParamsError, match=r"models\.gru: args\.cell: the recurrent export .* private torch APIs of "
                                          r"torch 2\.14\.x; this is torch 2\.15\.1"):
        parse_params({"models": {"gru": model}})


def test_registry_rule_and_quantization_come_from_params():
    params = load_params(REPO / "params.yaml")
    rule = params.registry_rule("mlp")
    assert (rule.metric, rule.direction) == ("test_accuracy", "max")
    assert params.model("mlp").export.quantize == "dynamic" and params.model("lenet5").export.quantize == "static"
    assert params.model("mlp").export.int8_max_drop == 0.005


def test_unknown_key_suggests_the_nearest():
    message = _error_for(lambda p: p["models"]["mlp"]["train"].update(learning_rate=0.1, epoch=3))
    assert "models.mlp.train.epoch: unknown key; did you mean 'epochs'?" in message
    assert "models.mlp.train.learning_rate: unknown key" in message


def test_unknown_model_name():
    with pytest.raises(ParamsError, match="models.cnn: no such model; known: mlp"):
        parse_params(tiny_params_dict()).model("cnn")


def test_not_yaml(tmp_path: Path):
    bad = tmp_path / "params.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_stage_with_bad_params_exits_nonzero_and_writes_nothing(tmp_path: Path, raw_root: Path):
    raw = tiny_params_dict(lr=-1)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "models" / "mlp"
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py"), "--params", str(params_file), "--model", "mlp",
         "--data", str(raw_root), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert f"{params_file}: models.mlp.train.lr: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_missing_cuda_device_is_a_device_error(monkeypatch):
    """Not a checkpoint problem: the error says what is missing, and a stage exits 2 on it (a DltorchError)."""
    import torch

    from dltorch.engine import select_device
    from dltorch.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="train.device is 'cuda' but no CUDA device is available"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(("task", "outputs", "targets"), [
    ("classification", np.eye(10, dtype=np.float32)[:4], np.arange(4)),
    ("regression", np.ones((4, 1), np.float32), np.zeros((4, 1))),
    ("sequence", np.ones((4, 3), np.float32), np.zeros((4, 3))),
    ("segmentation", np.ones((2, 1, 4, 4), np.float32), np.ones((2, 1, 4, 4), np.float32)),
    ("binary", np.full((4, 1), 0.7, np.float32), np.ones((4, 1))),
])
def test_a_ranked_metric_is_one_the_int8_gate_can_score(task, outputs, targets):
    """Task.rankable lets params name a registry metric before anything runs: it must be what the task scores on
    onnxruntime outputs (evaluate checks Task.metrics against its report in the same way)."""
    from dltorch.tasks import get_task

    found = get_task(task)
    assert set(found.onnx_metrics(outputs, targets)) == set(found.rankable) <= set(found.metrics)
