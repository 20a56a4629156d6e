"""Studies are registered by name, as models are (models/registry.py): `@register_study` on a Study subclass.

No torch here and no concrete study: `dltorch.studies` imports every study module, which registers itself.
"""

from __future__ import annotations

from typing import Any

_STUDIES: dict[str, Any] = {}  # name -> the study's (stateless) instance
SERIES = ("steps", "epochs")  # what a study's curves.csv has a row per


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
    return sorted(_STUDIES)


def get(name: str) -> Any:
    if name not in _STUDIES:
        raise ValueError(f"unknown study '{name}'; known: {', '.join(names())}")
    return _STUDIES[name]
