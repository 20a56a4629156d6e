"""Architectures, one family per file; importing a family registers it."""

from dltorch.models import lenet, mlp, resnet, vit  # noqa: F401  (registers)
from dltorch.models.registry import create, names, register_model

__all__ = ["create", "names", "register_model"]
