"""Architectures, one family per file; importing a family registers it. Every module of this package but the
registry is a family, found by listing the folder: adding an architecture is adding its file."""

import pkgutil
from importlib import import_module

from dltorch.models.registry import create, names, register_model

for _family in pkgutil.iter_modules(__path__):
    if _family.name != "registry":
        import_module(f"{__name__}.{_family.name}")

__all__ = ["create", "names", "register_model"]
