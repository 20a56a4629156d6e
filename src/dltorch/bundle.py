"""A trained model as one self-describing file: weights plus everything needed to rebuild them.

As nanoGPT's checkpoints carry `model_args`: evaluate and export rebuild the model from this file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltorch.errors import CheckpointError
from dltorch.io import save_torch
from dltorch.models import create
from dltorch.tasks import get_task


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


def build_model(arch: str, args: dict[str, Any], task: str, inputs: dict[str, Any]) -> nn.Module:
    net = create(arch, args, in_shape=tuple(inputs["in_shape"]), num_outputs=inputs["num_outputs"])
    return get_task(task).wrap(net, inputs)


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
