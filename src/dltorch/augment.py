"""Augmentation on whole batches of tensors (no per-sample Python): random crop with padding, horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut each image back at its own random offset (torchvision's RandomCrop)."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(height)[None, :]).to(images.device)
    cols = (dx[:, None] + torch.arange(width)[None, :]).to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # (N, H, W, C) from advanced indexing; back to (N, C, H, W)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment_batch(images: torch.Tensor, crop_padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    if crop_padding > 0:
        images = random_crop(images, crop_padding, generator)
    if hflip:
        images = random_hflip(images, generator)
    return images
