"""Tasks differ in data, loss, metrics and export spec; the training loop is shared (engine.py)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

TASKS = ("classification", "regression", "sequence", "segmentation")


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    return import_module(f"dltorch.tasks.{name}")
