"""Architectures, one family per file; importing a family registers it."""

from dltorch.models import lenet, lstm, mlp, resnet, unet, vit  # noqa: F401  (registers)
from dltorch.models.registry import create, names, register_model

__all__ = ["create", "names", "register_model"]
