"""A DCGAN (Radford et al., 2016) for 28x28 images: generator and discriminator in one module, so a bundle or a
checkpoint holds both; and how it trains: two Adam optimizers and one adversarial step for the engine's loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from dltorch.models.registry import register_model

if TYPE_CHECKING:
    from dltorch.config import TrainConfig
    from dltorch.engine import Batch, Objective, Optimization

# DCGAN's Adam: a lower beta1 than the default 0.9 keeps the two players' updates from overshooting each other
BETAS = (0.5, 0.999)


class GAN(nn.Module):
    """forward: noise (N, noise) -> images (N, C, H, W) in [0, 1], what is exported and served."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, noise: int) -> None:
        super().__init__()
        self.generator, self.discriminator, self.noise = generator, discriminator, noise

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise)


@register_model(tasks=("gan",))
def gan(in_shape: tuple[int, ...], num_outputs: int, noise: int = 64, width: int = 32) -> nn.Module:
    """Generator: noise -> 2*width x 7 x 7 -> width x 14 x 14 -> image 28 x 28 (sigmoid: the pixels' range [0, 1]);
    discriminator the mirror, with strided convolutions and leaky ReLUs, to one logit (real against generated).
    in_shape: the images' (channels, height, width); num_outputs: the generated images' channels."""
    channels, height, width_px = in_shape
    if height % 4 or width_px % 4:
        raise ValueError(f"in_shape: height and width must be multiples of 4 (two doublings), not {height}x{width_px}")
    if noise < 1 or width < 1:
        raise ValueError(f"noise and width must be at least 1, not {noise} and {width}")
    small = (2 * width, height // 4, width_px // 4)
    flat = small[0] * small[1] * small[2]
    generator = nn.Sequential(
        nn.Linear(noise, flat), nn.BatchNorm1d(flat), nn.ReLU(), nn.Unflatten(1, small),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.ConvTranspose2d(width, num_outputs, 4, stride=2, padding=1), nn.Sigmoid(),
    )
    discriminator = nn.Sequential(
        nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(flat, 1),
    )
    return GAN(generator, discriminator, noise)


def optimizers(model: nn.Module, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One Adam per player, at the train settings' learning rate (DCGAN's: 2e-4) with DCGAN's betas. The generator
    comes first: its learning rate is the one the history reports."""
    gan_model = _unwrapped(model)
    return {"generator": torch.optim.Adam(gan_model.generator.parameters(), lr=cfg.lr, betas=BETAS),
            "discriminator": torch.optim.Adam(gan_model.discriminator.parameters(), lr=cfg.lr, betas=BETAS)}


def adversarial_step(objective: Objective, model: nn.Module, batch: Batch, optimization: Optimization,
                     cfg: TrainConfig) -> tuple[float, dict[str, float]]:
    """The discriminator learns real (1) from generated (0) on the batch's images and as many generated ones; then
    the generator learns to make the discriminator say 1 (the non-saturating loss). The noise comes from torch's
    global CPU generator, which the checkpoint saves, so a resumed run draws the same noise. Returns the generator's
    loss, and both losses summed over the batch."""
    gan_model = _unwrapped(model)
    real = batch.inputs
    count = len(real)
    # drawn on the CPU, whose generator state the checkpoint saves (a CUDA generator's it does not), then moved
    fake = gan_model.generator(torch.randn(count, gan_model.noise).to(real.device))
    ones, zeros = torch.ones(count, 1, device=real.device), torch.zeros(count, 1, device=real.device)
    real_loss = F.binary_cross_entropy_with_logits(gan_model.discriminator(real), ones)
    fake_loss = F.binary_cross_entropy_with_logits(gan_model.discriminator(fake.detach()), zeros)
    d_loss = real_loss + fake_loss
    discriminator, generator = optimization.optimizers["discriminator"], optimization.optimizers["generator"]
    discriminator.zero_grad(set_to_none=True)
    d_loss.backward()
    discriminator.step()
    g_loss = F.binary_cross_entropy_with_logits(gan_model.discriminator(fake), ones)
    generator.zero_grad(set_to_none=True)
    g_loss.backward()  # also leaves gradients on the discriminator: its zero_grad clears them before its next step
    generator.step()
    return g_loss.item(), {"d_loss": d_loss.item() * count, "g_loss": g_loss.item() * count}


def _unwrapped(model: nn.Module) -> GAN:
    """The GAN itself: the engine refuses DDP for a task's own step, but a wrapper (channels-last, a task's wrap)
    may still sit around it."""
    while not isinstance(model, GAN):
        if not hasattr(model, "module"):
            raise TypeError(f"not a GAN: {type(model).__name__}")
        model = model.module
    return model
