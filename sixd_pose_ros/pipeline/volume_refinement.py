"""The volume refiner as the estimators run it: through the inference backend, from a metric or
a normalized pose, with the references nearest to it.

Why a module of its own: both estimators (known-model and model-free) refine alike, and the
refinement belongs to neither mode.
"""
from __future__ import annotations

import numpy as np
import torch

from sixd_pose_ros.models.refiner import RefinerOutput, iterative_refine
from sixd_pose_ros.pipeline.types import Frame

__all__ = ["BackendRefiner", "refine_metric", "refine_normalized"]


class BackendRefiner(torch.nn.Module):
    """The refiner as iterative_refine expects it (a module with ``config`` whose parameters give
    the device, called like VolumeRefiner), its network running through the backend's runner."""

    def __init__(self, refiner, runner) -> None:
        super().__init__()
        self.refiner = refiner  # holds the parameters (device, dtype) and the config; not run
        self.config = refiner.config
        self.runner = runner

    def forward(self, *inputs: torch.Tensor) -> RefinerOutput:
        quat, offset, log2_scale = self.runner(*inputs)
        return RefinerOutput(quat, offset, log2_scale)


def refine_metric(refiner, refs, ref_feats: torch.Tensor, norm, frame: Frame, R: np.ndarray, t: np.ndarray,
                  iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`refine_normalized` on a metric pose: into the references' normalized frame
    (``norm``) and back. Shared by the known-model and model-free estimators."""
    R_n, t_n = refine_normalized(refiner, refs, ref_feats, frame, *norm.pose_to_normalized(R, t), iterations)
    return norm.pose_to_metric(R_n, t_n)


def refine_normalized(refiner, refs, ref_feats: torch.Tensor, frame: Frame, R_n: np.ndarray, t_n: np.ndarray,
                      iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Volume-refiner iterations from a normalized pose with the references nearest to it; the
    input pose when the crop is degenerate. Shared by the known-model and model-free estimators."""
    def nearest(R_q, t_q):
        idx = refs.nearest(R_q, k=refiner.config.n_refs, t_query=t_q)
        return ref_feats[torch.as_tensor(idx, device=ref_feats.device)], refs.K[idx], refs.R[idx], refs.t[idx]

    try:
        return iterative_refine(refiner, frame.rgb, frame.K, R_n, t_n, nearest, iterations)
    except ValueError:
        return R_n, t_n
