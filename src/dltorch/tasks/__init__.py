"""Tasks differ in data, loss, metrics and export spec; the training loop is shared (engine.py)."""

from __future__ import annotations

from types import ModuleType


def get_task(name: str) -> ModuleType:
    if name == "classification":
        from dltorch.tasks import classification

        return classification
    if name == "regression":
        from dltorch.tasks import regression

        return regression
    raise ValueError(f"unknown task '{name}'; known: classification, regression")
