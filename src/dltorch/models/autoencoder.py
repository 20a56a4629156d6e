"""A convolutional autoencoder: an encoder to a small code and a decoder back to the image, as two submodules so
each can be run (and exported) on its own."""

from __future__ import annotations

import torch
from torch import nn

from dltorch.models.registry import register_model


class AutoEncoder(nn.Module):
    """forward: the reconstruction (what the loss compares with the input); `encode`/`decoder` give the code."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(pixels))


@register_model(tasks=("autoencoder",))
def autoencoder(in_shape: tuple[int, ...], num_outputs: int, latent: int = 8,
                     channels: tuple[int, int] = (32, 64)) -> nn.Module:
    """Two stride-2 convolutions (28 -> 14 -> 7 pixels), a linear layer to `latent` numbers, and the mirror image
    with transposed convolutions; a sigmoid keeps the reconstruction in the pixels' range [0, 1]. num_outputs: the
    reconstruction's channels (the input's)."""
    image_channels, height, width = in_shape
    if height % 4 or width % 4:
        raise ValueError(f"in_shape: height and width must be multiples of 4 (two halvings), not {height}x{width}")
    if latent < 1:
        raise ValueError(f"latent must be at least 1, not {latent}")
    first, second = channels
    small = (second, height // 4, width // 4)
    flat = second * small[1] * small[2]
    encoder = nn.Sequential(
        nn.Conv2d(image_channels, first, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(first, second, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(flat, latent),
    )
    decoder = nn.Sequential(
        nn.Linear(latent, flat), nn.ReLU(), nn.Unflatten(1, small),
        nn.ConvTranspose2d(second, first, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(first, num_outputs, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid(),
    )
    return AutoEncoder(encoder, decoder)
