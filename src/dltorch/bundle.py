"""A trained model as one self-describing file: weights plus everything needed to rebuild them.

As nanoGPT's checkpoints carry `model_args`: evaluate and export rebuild the model from this file alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltorch.config import TrainConfig
from dltorch.errors import CheckpointError, DataError, ParamsError
from dltorch.io import save_torch
from dltorch.models import create
from dltorch.tasks import get_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelBundle:
    name: str
    arch: str
    args: dict[str, Any]
    task: str
    dataset: str
    inputs: dict[str, Any]  # what the task told the builder: in_shape, num_outputs, mean, std
    config: dict[str, Any]  # the model's validated params entry, for the record

    def build(self) -> nn.Module:
        return build_model(self.arch, self.args, self.task, self.inputs)

    def train_config(self) -> TrainConfig:
        """The train settings the model was trained with (what evaluate and export read the test set by)."""
        return TrainConfig.model_validate(self.config["train"])


def build_model(arch: str, args: dict[str, Any], task: str, inputs: dict[str, Any],
                init: InitialWeights | None = None) -> nn.Module:
    """The architecture, started from `init`'s weights if given, inside the task's wrapper (the wrapper's own
    state, e.g. the data's normalization, is never loaded from the file)."""
    net = create(arch, args, in_shape=tuple(inputs["in_shape"]), num_outputs=inputs["num_outputs"])
    if init is not None:
        try:
            load_initial_weights(net, init.path, init.strict)
        except (DataError, ParamsError) as exc:
            raise type(exc)(f"train.init_from: {exc}") from None
    return get_task(task).wrap(net, inputs)


@dataclass(frozen=True)
class InitialWeights:
    """params' train.init_from and train.init_from_strict."""

    path: Path
    strict: bool = True


def load_initial_weights(model: nn.Module, path: Path, strict: bool = True) -> list[str]:
    """Load the weights file `path` into `model`; returns the keys left as they were (model keys the file lacks and
    file keys the model lacks: an error when `strict`). A shared key whose shapes differ is always an error.

    The file holds a state_dict, or a dict with one under "model" or "state_dict" (torchvision's references and
    dltorch's checkpoints; dltorch's bundles). Keys are matched by name. Where one leading prefix makes more of the
    file's keys the model's (a wrapper's: dltorch's `1.` around its architecture, DDP's `module.`), only the keys
    under it are read, without it: a dltorch model's normalization (`0.`) is its data's, not the new model's."""
    state = _aligned(_state_dict(path), set(model.state_dict()))
    own = model.state_dict()
    mismatched = [f"{key}: file {tuple(state[key].shape)}, model {tuple(own[key].shape)}"
                  for key in sorted(own.keys() & state.keys()) if state[key].shape != own[key].shape]
    if mismatched:
        raise ParamsError(f"{path}: shapes differ from the architecture's: " + "; ".join(mismatched))
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if strict and (missing or unexpected):
        raise ParamsError(f"{path}: keys differ from the architecture's (set train.init_from_strict:"
                          f" false to load the shared ones): {_keys('missing from the file', missing)}"
                          f"{'; ' if missing and unexpected else ''}{_keys('not in the architecture', unexpected)}")
    if not own.keys() & state.keys():
        raise ParamsError(f"{path}: no key of the file is one of the architecture's "
                          f"({_keys('the file', sorted(state), 5)}; {_keys('the architecture', sorted(own), 5)})")
    model.load_state_dict(state, strict=False)
    skipped = missing + unexpected
    if skipped:
        logger.info("init_from %s: loaded %d keys; left %s", path, len(own.keys() & state.keys()), ", ".join(skipped))
    return skipped


def _keys(what: str, keys: list[str], shown: int = 8) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{what}: {', '.join(keys[:shown])}{more}"


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch's own errors for a file that is not a torch save
        raise DataError(f"{path}: not a readable weights file ({exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise DataError(f"{path}: not a state_dict (a mapping of names to tensors), nor a dict with "
                        "one under 'model' or 'state_dict'")
    return raw


def _aligned(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """The file's keys with the leading prefix removed that makes the most of them the model's own (none if that
    matches best)."""
    prefixes = {key.split(".", 1)[0] + "." for key in state if "." in key}

    def matches(prefix: str) -> int:
        return sum(key.removeprefix(prefix) in wanted for key in state if key.startswith(prefix))

    best = max(sorted(prefixes), key=matches, default="")
    if matches(best) <= len(wanted & state.keys()):
        return state
    return {key.removeprefix(best): value for key, value in state.items() if key.startswith(best)}


def save_model(path: Path, bundle: ModelBundle, model: nn.Module) -> None:
    save_torch(path, {**bundle.__dict__, "inputs": {**bundle.inputs, "in_shape": list(bundle.inputs["in_shape"])},
                      "state_dict": model.state_dict()})


def load_model(path: Path) -> tuple[ModelBundle, nn.Module]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained model; run the train stage first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        bundle = ModelBundle(**{field: state[field] for field in ModelBundle.__dataclass_fields__})
        model = bundle.build()
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable dltorch model ({exc})") from None
    return bundle, model.eval()
