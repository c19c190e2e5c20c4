"""Feature backbone shared by the detector (and later the selector and refiner).

A small VGG-like CNN of our own, trained from scratch (no ImageNet weights exist here):
stages of ``conv3x3 -> norm -> ReLU`` blocks, each stage opened by a stride-2 conv3x3.

Input: ``(B, 3, H, W)`` RGB floats in ``[0, 1]``; normalized inside with fixed (ImageNet-like)
mean/std, so callers never normalize. ``H`` and ``W`` must be multiples of 16 for the feature
grids to line up exactly with the pixels (the detector pads; see :mod:`.detector`).

Output: three feature levels ``(f4, f8, f16)`` at strides 4, 8 and 16 with
``2 * base``, ``4 * base`` and ``8 * base`` channels (32 / 64 / 128 for the default
``base=16``). Spatial sizes are ``ceil(H / s) x ceil(W / s)``.

Grid alignment (used by the detector's decoding): every downsampling is a 3x3 conv with
stride 2 and padding 1, so output cell ``i`` is centred on input pixel ``2 i``; composed,
feature cell ``(i, j)`` at stride ``s`` is centred on pixel ``(v, u) = (s i, s j)`` (pixel
centres at integer coordinates, OpenCV convention).

ONNX: the forward pass has no data-dependent Python control flow (only conv, norm, ReLU and
fixed arithmetic), so it traces/exports with static or dynamic ``H, W``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

__all__ = ["BackboneConfig", "FeatureBackbone", "IMAGE_MEAN", "IMAGE_STD", "make_norm"]

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """Width and depth of :class:`FeatureBackbone`.

    Attributes:
        base: width of the stride-2 stage; stages at strides 4/8/16 have 2/4/8 x ``base``
            channels. 16 trains on 2 CPU cores; 32-64 for GPU training.
        blocks: number of extra (stride-1) conv3x3 blocks in the stages at strides
            2, 4, 8, 16 (after the stride-2 conv that opens each stage).
        norm: ``"gn"`` (GroupNorm: independent of batch size, the default since training
            batches mix a few queries with many references), ``"bn"`` (BatchNorm: folds into
            the convs at export, fastest inference) or ``"none"``.
    """

    base: int = 16
    blocks: Tuple[int, int, int, int] = (1, 1, 1, 2)
    norm: str = "gn"

    def __post_init__(self) -> None:
        if self.base < 1:
            raise ValueError(f"base must be >= 1, got {self.base}")
        if len(self.blocks) != 4 or any(b < 0 for b in self.blocks):
            raise ValueError(f"blocks must be 4 non-negative ints, got {self.blocks}")
        if self.norm not in ("gn", "bn", "none"):
            raise ValueError(f"norm must be 'gn', 'bn' or 'none', got {self.norm!r}")

    @classmethod
    def preset(cls, name: str) -> "BackboneConfig":
        """``"cpu"``: base 16 (~0.4 M parameters); ``"gpu"``: base 48, deeper stages."""
        presets = {
            "cpu": cls(base=16, blocks=(1, 1, 1, 2), norm="gn"),
            "gpu": cls(base=48, blocks=(1, 2, 2, 3), norm="gn"),
        }
        if name not in presets:
            raise ValueError(f"unknown backbone preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    @property
    def channels(self) -> dict:
        """Output channels per stride: ``{4: 2 base, 8: 4 base, 16: 8 base}``."""
        return {4: 2 * self.base, 8: 4 * self.base, 16: 8 * self.base}


def _gn_groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


def make_norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """Normalization layer by name (``"gn"``, ``"bn"``, ``"none"``) for 2D or 3D features."""
    if kind == "gn":
        return nn.GroupNorm(_gn_groups(channels), channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def _conv_block(cin: int, cout: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=(norm == "none")),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class FeatureBackbone(nn.Module):
    """VGG-like CNN: ``(B, 3, H, W)`` in ``[0, 1]`` -> features at strides 4, 8, 16.

    Args:
        cfg: :class:`BackboneConfig` (default: base 16, GroupNorm).

    Attributes:
        channels: ``{4: C4, 8: C8, 16: C16}`` output channels.
        max_stride: 16; inputs should be multiples of it.
    """

    max_stride = 16

    def __init__(self, cfg: BackboneConfig = BackboneConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.base
        widths = (b, 2 * b, 4 * b, 8 * b)
        stages = []
        cin = 3
        for width, n_extra in zip(widths, cfg.blocks):
            layers = [_conv_block(cin, width, 2, cfg.norm)]
            layers += [_conv_block(width, width, 1, cfg.norm) for _ in range(n_extra)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stage2, self.stage4, self.stage8, self.stage16 = stages
        self.channels = dict(cfg.channels)
        # Fixed input normalization; not persistent so checkpoints do not carry it.
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features of a batch of images.

        Args:
            images: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.

        Returns:
            ``(f4, f8, f16)``: ``(B, 2 base, ceil(H/4), ceil(W/4))``,
            ``(B, 4 base, ceil(H/8), ...)``, ``(B, 8 base, ceil(H/16), ...)``.
        """
        x = (images - self.mean) / self.std
        x = self.stage2(x)
        f4 = self.stage4(x)
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        return f4, f8, f16
