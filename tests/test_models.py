"""Every registered architecture, and every model of params.yaml, through build, train, export and parity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dltorch.config import load_params, parse_params
from dltorch.errors import ParamsError
from dltorch.models import create, names, register_model
from dltorch.models.registry import get
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from tests.conftest import REPO
from tests.helpers import export_trained

REPO_PARAMS = load_params(REPO / "params.yaml")


# What each architecture reads and writes: (in_shape, num_outputs, output shape for a batch of 3). The UNet gets
# 28x28, not a multiple of 16, so its up path has to resize to meet the skips.
# A node classifier reads graphs of 10 nodes with 4 features each beside the adjacency: (10, 4 + 10).
SHAPES = {"lstm": ((20, 1), 4, (3, 4)), "unet": ((3, 28, 28), 1, (3, 1, 28, 28)),
          "gcn": ((10, 14), 3, (3, 10, 3)), "node_mlp": ((10, 14), 3, (3, 10, 3)),
          "autoencoder": ((1, 28, 28), 1, (3, 1, 28, 28)), "gan": ((1, 28, 28), 1, (3, 1, 28, 28))}
FORWARD_INPUTS = {"gan": (64,)}  # a generator reads noise, not the images of in_shape
IMAGE_CLASSIFIER = ((1, 28, 28), 10, (3, 10))


@pytest.mark.parametrize("arch", names())
def test_every_architecture_builds_and_runs_forward_and_backward(arch: str):
    torch.manual_seed(0)
    in_shape, classes, out_shape = SHAPES.get(arch, IMAGE_CLASSIFIER)
    model = create(arch, {}, in_shape=in_shape, num_outputs=classes)
    out = model(torch.rand(3, *FORWARD_INPUTS.get(arch, in_shape)))
    assert out.shape == out_shape and torch.isfinite(out).all()
    # a GAN's forward is its generator: its discriminator, which judges the output, is trained through it
    judged = model.discriminator(out).sum() if arch == "gan" else 0
    (out.sum() + judged).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_registry_rejects_duplicates_and_lists_known_names():
    with pytest.raises(ValueError, match="registered twice"):
        register_model(get("mlp"))
    with pytest.raises(ValueError, match=f"known: {', '.join(names())}$"):
        get("alexnet")


def test_invalid_architecture_arguments_are_params_errors():
    with pytest.raises(ParamsError, match="resnet: widths and blocks"):
        create("resnet", {"widths": [8, 16], "blocks": [1]}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match="vit: patch 5 must divide 28x28"):
        create("vit", {"patch": 5}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match="lstm: cell must be one of lstm, gru, rnn, not 'transformer'"):
        create("lstm", {"cell": "transformer"}, in_shape=(16, 1), num_outputs=4)
    with pytest.raises(ParamsError, match="unet: features must list 1 to 4 positive widths"):
        create("unet", {"features": [8, 16, 32, 64, 128]}, in_shape=(3, 32, 32), num_outputs=1)


def test_softmax_regression_is_one_linear_layer():
    model = create(**{"name": "mlp", "args": REPO_PARAMS.model("softmax_regression").args},
                   in_shape=(1, 28, 28), num_outputs=10)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and linear[0].weight.shape == (10, 784)


def _shrunk(name: str) -> dict:
    """The repo's params entry for `name`, shrunk to one short epoch on tiny data."""
    entry = REPO_PARAMS.model(name).model_dump(mode="json")
    val_size = {"classification": 40, "sequence": 20, "segmentation": 4, "autoencoder": 40}.get(entry["task"], 0)
    entry["train"].update(epochs=1, val_size=val_size, warmup_epochs=0, early_stopping_patience=None)
    if entry["task"] == "segmentation":  # the tiny shapes set's 32x32 images
        entry["train"].update(image_size=[32, 32], batch_size=8)
    return {"fetch": {"source_dir": None, "download": False}, "mlflow": {"experiment": "tests"},
            "models": {name: entry}}


@pytest.mark.parametrize("name", sorted(REPO_PARAMS.models))
def test_every_params_model_trains_exports_and_passes_parity(name, tmp_path: Path, raw_root: Path, synthetic_root,
                                                            folders_root, mlflow_store):
    params = parse_params(_shrunk(name))
    assert synthetic_root == folders_root  # both stages' outputs under one data/
    data = raw_root if params.model(name).data == "raw" else synthetic_root / params.model(name).data
    model_dir = tmp_path / name
    history = train(params, name, data, model_dir)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])  # neither NaN nor infinite
    evaluate(data, model_dir, model_dir / "eval")
    deploy, report = export_trained(params, name, data, model_dir, tmp_path, batch_size=16, calibration_size=64)
    assert report["passed"], report["checks"]
    # INT8 as params says (static QDQ for the CNNs, dynamic otherwise), and a registered champion
    assert deploy["int8"]["mode"] == params.model(name).export.quantize
    assert (tmp_path / "model.int8.onnx").stat().st_size > 0
    fp32 = deploy["registry"]["fp32"]
    assert (fp32["registered_model"], fp32["version"], fp32["decision"]) == (name, 1, "promoted")
