"""Models are registered by name (as timm's @register_model); params.yaml names the architecture and its args."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from dltorch.errors import ParamsError

# Arguments every task supplies itself; params.yaml may not set them. num_outputs: values per sample the model
# outputs (classes for a classifier, the horizon for a forecaster, mask channels for a segmenter).
TASK_ARGS = frozenset({"in_shape", "num_outputs"})

_BUILDERS: dict[str, Callable[..., Any]] = {}
# The tasks an architecture serves, when it was built for some only (a GAN, a UNet, a graph network). An
# architecture that names none is a general network: it serves every task that no architecture claims.
_TASKS: dict[str, frozenset[str]] = {}


def register_model(builder: Callable[..., Any] | None = None, *, tasks: tuple[str, ...] = ()) -> Any:
    """`@register_model` for a general network, `@register_model(tasks=("gan",))` for one that serves those tasks
    only."""
    def register(builder: Callable[..., Any]) -> Callable[..., Any]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model '{name}' is registered twice")
        _BUILDERS[name] = builder
        if tasks:
            _TASKS[name] = frozenset(tasks)
        return builder

    return register(builder) if builder is not None else register


def serves(name: str, task: str) -> bool:
    if name in _TASKS:
        return task in _TASKS[name]
    return task not in set().union(*_TASKS.values())


def check_task(name: str, task: str) -> None:
    """Raises, naming the architectures that do serve `task`, when `name` does not."""
    if serves(name, task):
        return
    what = f"serves task {' and '.join(sorted(_TASKS[name]))} only" if name in _TASKS else "is a general network"
    fitting = ", ".join(arch for arch in names() if serves(arch, task))
    raise ValueError(f"{name} {what}, not task {task}; architectures for {task}: {fitting}")


def names() -> list[str]:
    return sorted(_BUILDERS)


def get(name: str) -> Callable[..., Any]:
    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture '{name}'; known: {', '.join(names())}")
    return _BUILDERS[name]


def _args_schema(name: str) -> type:
    fields: dict[str, Any] = {}
    for param in inspect.signature(get(name)).parameters.values():
        if param.name in TASK_ARGS:
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (param.annotation, default)
    return create_model(f"{name}_args", __config__=ConfigDict(extra="forbid", strict=False), **fields)


def validate_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Check args against the builder's signature; the message names the offending argument."""
    try:
        validated = _args_schema(name).model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"args.{'.'.join(map(str, e['loc']))}: {'unknown argument' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        )
        raise ValueError(problems) from None
    return validated.model_dump()


def create(name: str, args: dict[str, Any], **task_args: Any) -> Any:
    try:
        return get(name)(**validate_args(name, args), **task_args)
    except ValueError as exc:
        raise ParamsError(f"{name}: {exc}") from None
