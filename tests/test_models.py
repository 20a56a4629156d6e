"""Every registered architecture, and every model of params.yaml, through build, train, export and parity."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from dltorch.config import load_params, parse_params
from dltorch.errors import ParamsError
from dltorch.layout import ModelFiles
from dltorch.models import create, names, register_model
from dltorch.models.registry import get
from dltorch.pipeline.evaluate import evaluate
from dltorch.pipeline.train import train
from tests.conftest import REPO
from tests.helpers import export_trained

REPO_PARAMS = load_params(REPO / "params.yaml")
LATENCY = runpy.run_path(str(REPO / "bench" / "latency.py"))  # bench/ is scripts, not a package


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
        get("inception")


def test_invalid_architecture_arguments_are_params_errors():
    with pytest.raises(ParamsError, match="resnet: widths and blocks"):
        create("resnet", {"widths": [8, 16], "blocks": [1]}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match="vit: patch 5 must divide 28x28"):
        create("vit", {"patch": 5}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match="vit: stem must be 'patch' or 'conv' .then patch a power of 2., not 'conv' "
                                          "with patch 7"):
        create("vit", {"patch": 7, "stem": "conv"}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match="lstm: cell must be one of lstm, gru, rnn, not 'transformer'"):
        create("lstm", {"cell": "transformer"}, in_shape=(16, 1), num_outputs=4)
    with pytest.raises(ParamsError, match="unet: features must list 1 to 4 positive widths"):
        create("unet", {"features": [8, 16, 32, 64, 128]}, in_shape=(3, 32, 32), num_outputs=1)
    with pytest.raises(ParamsError, match="alexnet: widths must list the 5 convolutions' channels, not 3"):
        create("alexnet", {"widths": [8, 16, 32]}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match=r"vgg: convs must list 1 or more convolutions per stage, at most 4 stages"):
        create("vgg", {"convs": [1, 1, 1, 1, 1]}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match=r"googlenet: blocks must take 1 to \[2, 5, 2\] blocks"):
        create("googlenet", {"blocks": [3]}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match=r"fast_cnn: widths must list 1 to 4 positive group widths"):
        create("fast_cnn", {"widths": [8, 8, 8, 8, 8]}, in_shape=(1, 28, 28), num_outputs=10)
    with pytest.raises(ParamsError, match="densenet: layers must list 1 or more dense layers per block"):
        create("densenet", {"layers": [2, 0]}, in_shape=(1, 28, 28), num_outputs=10)


# The classic CNN families at tiny widths: a few channels each.
TINY_CNNS = {
    "alexnet": {"widths": [4, 4, 6, 6, 4], "hidden": 8},
    "vgg": {"width": 4, "convs": [1, 2, 1]},
    "googlenet": {"width": 0.0625, "blocks": [2, 1]},
    "densenet": {"growth_rate": 4, "layers": [2, 2], "bn_size": 2},
}


def _trained_a_little(arch: str) -> torch.nn.Module:
    """A tiny model after a few SGD steps in channels-last (as the engine trains), so BatchNorm's running
    statistics and the weights are not their initial values when it is exported."""
    torch.manual_seed(0)
    model = create(arch, TINY_CNNS[arch], in_shape=(1, 28, 28), num_outputs=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        images = torch.rand(16, 1, 28, 28).to(memory_format=torch.channels_last)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), torch.randint(0, 10, (16,))).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("arch", sorted(TINY_CNNS))
def test_classic_cnns_agree_in_channels_last(arch: str):
    """The engine trains 4-D inputs channels-last; the model answers the same in either layout. (Their ONNX export
    after channels-last training, and its parity: test_every_params_model_trains_exports_and_passes_parity.)"""
    model = _trained_a_little(arch)
    images = torch.rand(40, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(images.to(memory_format=torch.channels_last)), model(images),
                                   atol=1e-5, rtol=1e-4)


def test_googlenet_inception_has_the_papers_four_branches():
    """torchvision's Inception puts a 3x3 in its "5x5" branch (pytorch/vision#906); ours has the paper's 5x5."""
    block = create("googlenet", TINY_CNNS["googlenet"], in_shape=(1, 28, 28), num_outputs=10)[2]
    kernels = [[m.kernel_size for m in branch.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d))]
               for branch in (block.branch1, block.branch2, block.branch3, block.branch4)]
    assert kernels == [[(1, 1)], [(1, 1), (3, 3)], [(1, 1), (5, 5)], [3, (1, 1)]]
    assert block(torch.rand(2, block.branch1.conv.in_channels, 14, 14)).shape[1] == block.outputs


def test_densenet_layers_see_every_earlier_feature_map_and_transitions_compress():
    growth, stem = 4, 8
    model = create("densenet", TINY_CNNS["densenet"], in_shape=(1, 28, 28), num_outputs=10)
    first_block, transition = model[2], model[3]
    assert [layer.conv1.in_channels for layer in first_block.values()] == [stem, stem + growth]
    assert (transition.conv.in_channels, transition.conv.out_channels) == (stem + 2 * growth, (stem + 2 * growth) // 2)


def test_softmax_regression_is_one_linear_layer():
    model = create(**{"name": "mlp", "args": REPO_PARAMS.model("softmax_regression").args},
                   in_shape=(1, 28, 28), num_outputs=10)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and linear[0].weight.shape == (10, 784)


def _shrunk(name: str) -> dict:
    """The repo's params entry for `name`, shrunk to one short epoch on tiny data."""
    entry = REPO_PARAMS.model(name).model_dump(mode="json")
    val_size = {"classification": 40, "sequence": 20, "segmentation": 4, "autoencoder": 40}.get(entry["task"], 0)
    # fp32, not the recipes' `auto`: auto times steps of the model in both precisions before training, a timing loop
    # that was a sixth of this file's CPU time; auto itself is tested in tests/test_precision.py
    entry["train"].update(epochs=1, val_size=val_size, warmup_epochs=0, early_stopping_patience=None, precision="fp32")
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
    # 5 timed calls per latency: which file is faster is not this test's business (tests/test_stages.py times it)
    deploy, report = export_trained(params, name, data, model_dir, model_dir, batch_size=16, calibration_size=64,
                                    latency_runs=5)
    assert report["passed"], report["checks"]
    # INT8 as params says (static QDQ for the CNNs, dynamic otherwise), and a registered champion
    assert deploy["int8"]["mode"] == params.model(name).export.quantize
    assert (model_dir / "model.int8.onnx").stat().st_size > 0
    fp32 = deploy["registry"]["fp32"]
    assert (fp32["registered_model"], fp32["version"], fp32["decision"]) == (name, 1, "promoted")
    # make bench's latency table reads the same folder: torch, the fp32 and the int8 graph on what the graph reads
    rows = LATENCY["with_ratios"](LATENCY["time_model"](name, ModelFiles(model_dir), data,
                                                        [LATENCY["Timing"](runs=1, warmup=0, threads=1)]))
    assert rows and all(row["model"] == name and row["torch_ms"] > 0 and row["ort_int8_ms"] > 0
                        and row["fp32_bound_ratio"] > 0 for row in rows)


def test_a_vit_conv_stem_reaches_the_patch_grid_by_stride_2_convolutions():
    """stem: conv gives the same 7x7 tokens of width dim as 4x4 patches, from two 3x3 stride-2 convolutions."""
    model = create("vit", {"patch": 4, "dim": 64, "stem": "conv"}, in_shape=(1, 28, 28), num_outputs=10)
    convs = [m for m in model.patchify if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((3, 3), (2, 2), 32), ((3, 3), (2, 2), 64),
                                                                         ((1, 1), (1, 1), 64)]
    assert model.patchify(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 7, 7)


def test_fast_cnn_pools_right_after_each_groups_first_convolution():
    """airbench's group: its second convolution runs at half the resolution of its first."""
    model = create("fast_cnn", {"stem": 8, "widths": [16, 32]}, in_shape=(1, 28, 28), num_outputs=10)
    sides, x = [], torch.zeros(1, 1, 28, 28)
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            sides.append((layer.out_channels, x.shape[-1]))
    assert sides == [(8, 28), (16, 28), (16, 14), (32, 14), (32, 7)]
