"""A tiny Vision Transformer (Dosovitskiy et al., 2021): patch embedding, class token, pre-norm encoder blocks.

The patch embedding is the paper's one patch x patch convolution of stride patch (`stem: patch`), or a convolutional
stem (`stem: conv`, Xiao et al., 2021, "Early convolutions help transformers see better"): stride-2 3x3
convolutions with BatchNorm and ReLU down to the same patch grid, then a 1x1 projection to the token width. The
encoder is the same either way; the convolutional stem trains faster and more stably from scratch on small data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dltorch.models.registry import register_model


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def conv_stem(channels: int, dim: int, patch: int) -> nn.Sequential:
    """log2(patch) stride-2 3x3 conv-BN-ReLU layers, widths doubling up to dim, then a 1x1 convolution to dim."""
    layers: list[nn.Module] = []
    steps = patch.bit_length() - 1
    for step in range(steps):
        width = dim >> (steps - 1 - step)
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers, nn.Conv2d(channels, dim, 1))


class VisionTransformer(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_outputs: int, patch: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float, dropout: float, stem: str = "patch") -> None:
        super().__init__()
        channels, height, width = in_shape
        if height % patch or width % patch or dim % heads:
            raise ValueError(f"patch {patch} must divide {height}x{width} and heads {heads} must divide dim {dim}")
        if stem not in ("patch", "conv") or (stem == "conv" and patch & (patch - 1)):
            raise ValueError(f"stem must be 'patch' or 'conv' (then patch a power of 2), not {stem!r} with patch "
                             f"{patch}")
        if stem == "conv":
            self.patchify = conv_stem(channels, dim, patch)
        else:
            self.patchify = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, 1 + (height // patch) * (width // patch), dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patchify(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.position
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@register_model
def vit(in_shape: tuple[int, ...], num_outputs: int, patch: int = 4, dim: int = 64, depth: int = 4, heads: int = 4,
        mlp_ratio: float = 2.0, dropout: float = 0.0, stem: str = "patch") -> nn.Module:
    return VisionTransformer(in_shape, num_outputs, patch, dim, depth, heads, mlp_ratio, dropout, stem)
