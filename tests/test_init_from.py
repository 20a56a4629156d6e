"""train.init_from: a model starts from a weights file (a state_dict, or one under "model"/"state_dict"); keys
and shapes that do not fit are clear errors naming them; the file's bytes are part of the checkpoint fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dltorch.bundle import load_initial_weights, load_model
from dltorch.config import parse_params
from dltorch.errors import DataError, ParamsError
from dltorch.models import create
from dltorch.pipeline.train import train
from tests.conftest import tiny_params_dict


def _mlp(hidden: list[int]) -> torch.nn.Module:
    return create("mlp", {"hidden": hidden}, in_shape=(1, 28, 28), num_outputs=10)


def _saved(path: Path, state: object) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"model": s, "epoch": 3},
                                  lambda s: {"state_dict": {f"1.{k}": v for k, v in s.items()},
                                             "arch": "mlp"}],  # a dltorch bundle: the wrapper's prefix `1.`
                         ids=["state_dict", "checkpoint", "bundle"])
def test_weights_load_from_each_kind_of_file(tmp_path: Path, wrap):
    torch.manual_seed(1)
    source = _mlp([16])
    path = _saved(tmp_path / "w.pt", wrap(source.state_dict()))
    torch.manual_seed(2)
    target = _mlp([16])
    assert load_initial_weights(target, path) == []
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path: Path):
    path = _saved(tmp_path / "w.pt", _mlp([16]).state_dict())
    with pytest.raises(ParamsError, match=r"shapes differ .*; 1.weight: file \(16, 784\), model \(8, 784\)"):
        load_initial_weights(_mlp([8]), path)
    with pytest.raises(ParamsError, match=r"shapes differ"):  # non-strict loads shared keys, never misshapen ones
        load_initial_weights(_mlp([8]), path, strict=False)


def test_strict_refuses_missing_and_extra_keys_and_non_strict_loads_the_shared_ones(tmp_path: Path):
    state = _mlp([16]).state_dict()
    head = sorted(state)[-1]
    partial = {k: v for k, v in state.items() if k != head} | {"extra.bias": torch.zeros(3)}
    path = _saved(tmp_path / "w.pt", partial)
    with pytest.raises(ParamsError, match=rf"missing from the file: {head}; not in the architecture: extra.bias"):
        load_initial_weights(_mlp([16]), path)
    target = _mlp([16])
    assert load_initial_weights(target, path, strict=False) == [head, "extra.bias"]
    assert all(torch.equal(target.state_dict()[k], v) for k, v in partial.items() if k != "extra.bias")


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"junk", "not a readable weights file"),
                                                  ({"epoch": 3}, "not a state_dict")])
def test_a_missing_or_unreadable_file_is_a_data_error(tmp_path: Path, content, message: str):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DataError, match=message):
        load_initial_weights(_mlp([16]), path)


def test_training_starts_from_the_file_and_a_rewritten_file_trains_afresh(tmp_path: Path, raw_root: Path):
    """With a vanishing learning rate the trained weights are the file's; the normalization stays the data's."""
    torch.manual_seed(5)
    start = _mlp([16]).state_dict()
    path = _saved(tmp_path / "start.pt", start)
    params = parse_params(tiny_params_dict(epochs=1, lr=1e-12, optimizer="sgd", init_from=str(path)))
    out = tmp_path / "model"
    train(params, "mlp", raw_root, out)
    _, model = load_model(out / "model.pt")
    trained = model.state_dict()
    assert all(torch.allclose(trained[f"1.{k}"], v, atol=1e-6) for k, v in start.items())
    assert not torch.equal(trained["0.mean"], torch.zeros_like(trained["0.mean"]))  # the data's mean
    run = (out / "run.json").read_text()
    _saved(path, {k: v + 1 for k, v in start.items()})  # same path, other bytes: the checkpoint must not be reused
    train(params, "mlp", raw_root, out)
    assert (out / "run.json").read_text() != run
    _, model = load_model(out / "model.pt")
    assert torch.allclose(model.state_dict()["1.1.weight"], start["1.weight"] + 1, atol=1e-6)


def test_init_from_errors_in_training_name_the_params_key(tmp_path: Path, raw_root: Path):
    path = _saved(tmp_path / "w.pt", _mlp([8]).state_dict())
    params = parse_params(tiny_params_dict(init_from=str(path)))
    with pytest.raises(ParamsError, match=r"^train.init_from: .*w.pt: shapes differ"):
        train(params, "mlp", raw_root, tmp_path / "model")
    assert not (tmp_path / "model" / "model.pt").exists()


def test_init_from_strict_without_a_file_and_init_from_in_a_study_are_refused():
    with pytest.raises(ParamsError, match=r"models.mlp.train: .*init_from_strict: there is no init_from file"):
        parse_params(tiny_params_dict(init_from_strict=False))
    raw = tiny_params_dict()
    raw["capacity"] = {"data": "parabola", "arch": "mlp", "args": {"hidden": [4]},
                       "train": {"epochs": 1, "loss": "mse", "val_size": 0, "init_from": "w.pt"},
                       "variants": {"small": {}}}
    with pytest.raises(ParamsError, match=r"variants.small.train.init_from: a study's variants start from fresh"):
        parse_params(raw)
