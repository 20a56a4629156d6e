"""Studies are registered by name, as models are (models/registry.py): `@register_study` on a Study subclass.

No torch here and no concrete study. A study's module is named as the study: listing the package's modules gives
the names without importing any (params validation needs only those), and `get` imports the one it is asked for,
so a study stage runs, and depends on, its own module alone.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module
from pathlib import Path
from typing import Any

_STUDIES: dict[str, Any] = {}  # name -> the study's (stateless) instance
NOT_STUDIES = ("common", "registry")  # the modules of this package that hold no study
SERIES = ("steps", "epochs", "budgets")  # what a study's curves.csv has a row per (budgets: studies/transfer.py)


def register_study(cls: type) -> type:
    """Register a study class under its `name`; instantiating it here makes a missing method fail at import."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"study {cls.__name__} has no `name`")
    if name in _STUDIES:
        raise ValueError(f"study '{name}' is registered twice")
    series, _ = cls.curve
    if series not in SERIES:
        raise ValueError(f"study '{name}': curve series '{series}' is not one of {', '.join(SERIES)}")
    _STUDIES[name] = cls()
    return cls


def names() -> list[str]:
    folder = str(Path(__file__).parent)
    return sorted(info.name for info in pkgutil.iter_modules([folder]) if info.name not in NOT_STUDIES)


def get(name: str) -> Any:
    if name not in names():
        raise ValueError(f"unknown study '{name}'; known: {', '.join(names())}")
    import_module(f"dltorch.studies.{name}")
    if name not in _STUDIES:
        raise ValueError(f"dltorch/studies/{name}.py registers no study named '{name}' (@register_study)")
    return _STUDIES[name]
