"""GoogLeNet (Szegedy et al., 2015) at 28x28 grayscale scale, built from torchvision's Inception block.

Kept: Inception blocks, each four parallel branches concatenated on channels (a 1x1 convolution; 1x1 reduction then
3x3; 1x1 reduction then 5x5; 3x3 max pool then 1x1 projection), the original's per-block channel table (3a, 3b /
4a-4e / 5a, 5b), max pooling between stages, global average pooling and dropout before the one classifier layer.
Fixed: torchvision's Inception has a 3x3 convolution in its "5x5" branch (pytorch/vision#906, kept there for its
pretrained weights); here that branch is the paper's 5x5. Scaled down: every channel count times `width` (0.25 by
default), a stem of one 3x3 convolution and a max pool (28 -> 14) instead of the 7x7/3x3 stem for 224 pixels, the
first `blocks[i]` blocks of stage i (by default 3a at 14 pixels, 4a and 4b at 7), and no auxiliary classifiers (they
helped the 22-layer network's gradients; at this depth BatchNorm does).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.googlenet import BasicConv2d, Inception

from dltorch.models.registry import register_model

# The paper's table 1: per block, (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), by stage.
STAGES = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
     (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)
STEM = 192  # the original stem's output channels


class InceptionBlock(Inception):
    """torchvision's Inception with a true 5x5 convolution in its third branch."""

    def __init__(self, inputs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int) -> None:
        super().__init__(inputs, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
        self.branch3[1] = BasicConv2d(ch5x5red, ch5x5, kernel_size=5, padding=2)
        self.outputs = ch1x1 + ch3x3 + ch5x5 + pool_proj


@register_model
def googlenet(in_shape: tuple[int, ...], num_outputs: int, width: float = 0.25,
              blocks: list[int] = [1, 2], dropout: float = 0.4) -> nn.Module:  # noqa: B006
    """stem (3x3 conv, pool) -> stage 3 -> pool -> stage 4 [-> pool -> stage 5] -> global pool -> dropout -> FC."""
    if not 1 <= len(blocks) <= len(STAGES) or any(not 1 <= n <= len(s) for n, s in zip(blocks, STAGES, strict=False)):
        raise ValueError(f"blocks must take 1 to {[len(s) for s in STAGES]} blocks from up to {len(STAGES)} stages, "
                         f"not {blocks}")
    scale = lambda n: max(1, round(n * width))  # noqa: E731
    channels = scale(STEM)
    layers: list[nn.Module] = [BasicConv2d(in_shape[0], channels, kernel_size=3, padding=1),
                               nn.MaxPool2d(3, stride=2, padding=1)]
    for stage, count in enumerate(blocks):
        if stage:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        for row in STAGES[stage][:count]:
            block = InceptionBlock(channels, *map(scale, row))
            layers.append(block)
            channels = block.outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs)]
    return nn.Sequential(*layers)
