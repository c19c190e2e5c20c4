"""Volume refiner (after Gen6D, Liu et al., ECCV 2022; the paper's ideas, our own code).

One refinement step looks at a *query crop* centred on the current pose estimate and at the
``Nr`` reference views nearest to it, and predicts a similarity transform in the image
(in-plane shift, zoom, 3D rotation about the object centre) that moves the estimate toward the
truth. :func:`apply_similarity` turns it into a rigid pose; three steps are usual
(:func:`iterative_refine`).

Everything here works in the **normalized object frame** (``X_n = (X - center) / scale``, the
object inside the unit sphere, see :class:`~sixd_pose_ros.geometry.ObjectNormalization`), so
translations and depths are unitless (multiples of the bounding-sphere radius). Poses are
object-to-camera, ``X_cam = R X_obj + t``, camera = OpenCV optical frame (x right, y down,
z forward), pixel centres at integer coordinates (an image of width ``W`` spans
``[-0.5, W - 0.5]``), quaternions ``(x, y, z, w)``.

The crop camera (shared by reference views and query crops)
-----------------------------------------------------------
For an object centre at ``t`` (camera frame, ``t_z > 0``) at distance ``d = |t| > 1``,
:func:`crop_camera` builds a *virtual camera* with the same centre as the real one, rotated by
the minimal rotation ``R_v`` that brings the optical axis onto the ray through the object
centre (``R_v @ t / d = (0, 0, 1)``), with square pixels, focal length
``f' = (S/2) / tan(asin(1/d)) = (S/2) sqrt(d^2 - 1)`` and principal point at the crop centre
``((S-1)/2, (S-1)/2)``. The unit sphere then projects to the disk of radius ``S/2`` about the
crop centre, i.e. it exactly fills the ``S x S`` crop ``[-0.5, S-0.5]^2``. The crop is the
real image warped by the homography ``H = K_crop R_v K^-1`` (real pixels -> crop pixels), and
the pose in the crop camera is ``R_crop = R_v R``, ``t_crop = R_v t = (0, 0, d)``.

The similarity (what the network predicts), exactly
----------------------------------------------------
Given the input pose ``(R_in, t_in)`` in the crop camera with intrinsics ``K_query`` and crop
side ``S``, and a prediction ``(quat, offset, log2_scale)``:

- rotation about the object centre, in the camera frame: ``R_new = dR @ R_in`` with
  ``dR = matrix(quat)``;
- shift of the projected object centre: ``c_new = c_in + offset * (S / 2)`` where
  ``c = project(K_query, t)``; ``offset = (1, 0)`` moves it by half a crop (one bounding-sphere
  radius on screen when the input pose is centred) to the right, ``(0, 1)`` down;
- zoom: ``z_new = t_in_z / 2 ** log2_scale`` (depth along the optical axis, not ray length);
  ``log2_scale > 0`` brings the object closer, so it appears larger;
- ``t_new = z_new * K_query^-1 [c_new, 1]`` (back-projection of the new centre pixel).

:func:`similarity_targets` is the exact inverse (the prediction that maps the input pose onto
a ground-truth pose), and :func:`grid_alignment_loss` compares two similarities by how they move
the points of the feature volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry.crop_camera import object_centred_camera
from ..geometry.rotations import matrix_from_quat_xyzw_torch, quat_xyzw_from_matrix_torch

__all__ = [
    "RefinerConfig",
    "RefinerOutput",
    "VolumeRefiner",
    "volume_grid",
    "apply_similarity",
    "similarity_targets",
    "grid_alignment_loss",
    "crop_camera",
    "crop_around_pose",
    "pose_from_crop",
    "iterative_refine",
]


# --------------------------------------------------------------------------------------------
# config and output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefinerConfig:
    """Sizes of the volume refiner.

    Attributes:
        feat_channels: channels ``C`` of the 2D feature maps (the volume has ``3 C``).
        base_width: width of the first layers; the 2D net uses ``w, 2w``, the 3D net
            ``w, 2w, 4w, 8w`` (16 keeps training possible on 2 CPU cores).
        grid_size: volume side ``G`` (``G^3`` points on ``[-1, 1]^3``); a power of two >= 4.
        n_refs: number of reference views the refiner is trained with (any ``Nr >= 1`` works at
            run time: the references are pooled by mean and variance).
        crop_size: side ``S`` of query crops and reference views (pixels), divisible by 4.
        head_hidden: hidden width of the regression head.
    """

    feat_channels: int = 32
    base_width: int = 16
    grid_size: int = 32
    n_refs: int = 6
    crop_size: int = 128
    head_hidden: int = 256

    def __post_init__(self) -> None:
        g = self.grid_size
        if g < 4 or g & (g - 1):
            raise ValueError(f"grid_size must be a power of two >= 4, got {g}")
        if self.crop_size <= 0 or self.crop_size % 4:
            raise ValueError(f"crop_size must be a positive multiple of 4, got {self.crop_size}")
        for name in ("feat_channels", "base_width", "n_refs", "head_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class RefinerOutput(NamedTuple):
    """A similarity transform in the query crop (see the module docstring).

    Attributes:
        quat: rotation ``dR`` about the object centre in the crop camera frame, ``(x, y, z, w)``,
            unit norm, shape ``(B, 4)``.
        offset: shift of the projected object centre in units of the crop half-size ``S/2``,
            ``(du, dv)`` (right, down), shape ``(B, 2)``.
        log2_scale: zoom, ``log2(old depth / new depth)``, shape ``(B, 1)``.
    """

    quat: torch.Tensor
    offset: torch.Tensor
    log2_scale: torch.Tensor


# --------------------------------------------------------------------------------------------
# small torch geometry helpers (batched, differentiable)
# --------------------------------------------------------------------------------------------


def _project_t(p: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> Tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """Pixels ``(..., 2)`` of camera points ``(..., 3)`` and a validity mask ``z > eps``.

    ``K`` has shape ``(..., 3, 3)`` broadcast against the points' leading dimensions (insert
    singleton dimensions yourself). Points with ``z <= eps`` get their depth clamped (finite
    output) and ``valid = False``.
    """
    h = (K @ p.unsqueeze(-1)).squeeze(-1)
    z = p[..., 2]
    valid = z > eps
    hz = torch.where(valid, h[..., 2], torch.full_like(h[..., 2], eps))
    return h[..., :2] / hz.unsqueeze(-1), valid


def _backproject_t(uv: torch.Tensor, z: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera points ``(..., 3)`` of pixels ``(..., 2)`` at depths ``z`` ``(...)`` (skew kept)."""
    fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    y_n = (uv[..., 1] - cy) / fy
    x_n = (uv[..., 0] - cx - s * y_n) / fx
    return torch.stack([x_n * z, y_n * z, z], dim=-1)


def volume_grid(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of an ``n^3`` grid of cells tiling the cube ``[-1, 1]^3``.

    Ordered so that ``grid.view(n, n, n, 3)[k, j, i] = (x_i, y_j, z_k)``: a volume tensor
    ``(..., n, n, n)`` built from it has dimensions (z, y, x) = (D, H, W), as conv3d expects.

    Returns:
        Points, shape ``(n^3, 3)``.
    """
    c = (torch.arange(n, device=device, dtype=dtype) + 0.5) * (2.0 / n) - 1.0
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


def _sample(feats: torch.Tensor, uv: torch.Tensor, valid: torch.Tensor,
            img_hw: Tuple[int, int]) -> torch.Tensor:
    """Bilinear features at pixels ``uv``.

    Args:
        feats: ``(N, C, h, w)`` feature maps of images of size ``img_hw = (H, W)`` pixels.
        uv: ``(N, P, 2)`` pixel coordinates in the image (integer pixel centres).
        valid: ``(N, P)``; invalid points (behind the camera) get zero features.

    Returns:
        ``(N, C, P)``.

    With ``align_corners=False`` the normalized coordinate ``-1`` is the left edge of the first
    pixel and ``+1`` the right edge of the last one whatever the resolution, so image pixel
    ``u`` maps to ``(2 u + 1) / W - 1`` both in the image and in its stride-4 feature map (whose
    cells are aligned with 4x4 pixel blocks, see :class:`_FeatureNet`). Outside: zeros.
    """
    H, W = img_hw
    gx = (2.0 * uv[..., 0] + 1.0) / W - 1.0
    gy = (2.0 * uv[..., 1] + 1.0) / H - 1.0
    g = torch.stack([gx, gy], dim=-1)
    g = torch.where(valid.unsqueeze(-1), g, torch.full_like(g, 4.0))
    # NaN -> outside (zeros); +-inf clamped outside too. (where/clamp rather than nan_to_num:
    # both export to ONNX.)
    g = torch.where(g == g, g, torch.full_like(g, 4.0)).clamp(-4.0, 4.0)
    out = F.grid_sample(feats, g.unsqueeze(1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # (N, C, 1, P)
    return out.squeeze(2)


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if c % 8 == 0 else 1, c)


def _conv2d(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    # k=4, s=2, p=1: output cell j covers input 2j-1..2j+2, centred on 2j+0.5, so each
    # feature cell is centred on the block of pixels it summarizes (no half-pixel drift).
    p = 1 if (k, s) in ((3, 1), (4, 2)) else k // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=False), _gn(cout),
                         nn.ReLU(inplace=True))


def _conv3d(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, k, s, k // 2, bias=False), _gn(cout),
                         nn.ReLU(inplace=True))


class _FeatureNet(nn.Module):
    """Small stride-4 CNN shared by the query and the references: ``(N,3,S,S) -> (N,C,S/4,S/4)``."""

    stride = 4

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _conv2d(3, w, 4, 2),
            _conv2d(w, w),
            _conv2d(w, 2 * w, 4, 2),
            _conv2d(2 * w, 2 * w),
            _conv2d(2 * w, 2 * w),
            nn.Conv2d(2 * w, out_channels, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # NaN -> 0, +inf -> 1, -inf -> 0 (where/clamp: ONNX-exportable, unlike nan_to_num).
        x = torch.where(images == images, images, torch.zeros_like(images)).clamp(0.0, 1.0)
        return self.body((x - 0.5) * 4.0)


class VolumeRefiner(nn.Module):
    """Gen6D-style volume refiner: feature volume around the object -> 3D CNN -> similarity.

    Use :meth:`encode_references` once per object (or per set of reference views), then call the
    module once per refinement step. See the module docstring for the conventions.
    """

    def __init__(self, config: Optional[RefinerConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config or RefinerConfig()
        C, w, G = cfg.feat_channels, cfg.base_width, cfg.grid_size
        self.features = _FeatureNet(w, C)
        layers = [_conv3d(3 * C, w, k=1)]
        cin = w
        n_down = int(round(math.log2(G))) - 1  # G -> 2
        for i in range(n_down):
            cout = w * 2 ** min(i + 1, 3)
            layers.append(_conv3d(cin, cout, 3, 2))
            if i == 1:  # one extra conv at G/4 (8^3 for G=32) for capacity
                layers.append(_conv3d(cout, cout))
            cin = cout
        self.volume_net = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 8, cfg.head_hidden),
                                  nn.ReLU(inplace=True), nn.Linear(cfg.head_hidden, 7))
        # Start near the identity similarity: a small last layer (not zero, so that gradients
        # reach the rest of the network from the first step).
        last = self.head[-1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()
        self.register_buffer("grid", volume_grid(G), persistent=False)
        self.register_buffer("quat_identity", torch.tensor([0.0, 0.0, 0.0, 1.0]),
                             persistent=False)

    # ---------------------------------------------------------------------------------------
    def encode_references(self, ref_images: torch.Tensor) -> torch.Tensor:
        """Features of reference views (compute once per object).

        Args:
            ref_images: ``(N, 3, S, S)`` RGB in ``[0, 1]`` (NaN -> 0).

        Returns:
            ``(N, C, S/4, S/4)``.
        """
        if ref_images.dim() != 4 or ref_images.shape[1] != 3:
            raise ValueError(f"ref_images must be (N, 3, S, S), got {tuple(ref_images.shape)}")
        return self.features(ref_images)

    # ---------------------------------------------------------------------------------------
    def build_volume(self, query_feats: torch.Tensor, query_hw: Tuple[int, int],
                     K_query: torch.Tensor, R_in: torch.Tensor, t_in: torch.Tensor,
                     ref_feats: torch.Tensor, K_ref: torch.Tensor, R_ref: torch.Tensor,
                     t_ref: torch.Tensor) -> torch.Tensor:
        """Feature volume ``(B, 3C, G, G, G)``: [mean over refs, variance over refs, query].

        The volume is the cube ``t_in + [-1, 1]^3`` in the query (crop) camera frame, i.e.
        axis-aligned with the query camera and centred on the estimated object centre. Its
        points ``g`` are ``X_obj = R_in^T g`` in normalized object coordinates, projected into
        each reference with ``K_ref (R_ref X_obj + t_ref)`` and into the query with
        ``K_query (t_in + g)``.
        """
        B, Nr, C, h, w = ref_feats.shape
        dt = query_feats.dtype
        G = self.config.grid_size
        K_query, R_in, t_in = K_query.to(dt), R_in.to(dt), t_in.to(dt)
        K_ref, R_ref, t_ref = K_ref.to(dt), R_ref.to(dt), t_ref.to(dt)
        g = self.grid.to(dt)  # (P, 3)
        P = g.shape[0]
        # Query: camera points t_in + g.
        X_cam = t_in.unsqueeze(1) + g.unsqueeze(0)  # (B, P, 3)
        uv_q, val_q = _project_t(X_cam, K_query.unsqueeze(1))
        f_q = _sample(query_feats, uv_q, val_q, query_hw)  # (B, C, P)
        # References: object points R_in^T g (row vectors: g @ R_in).
        X_obj = g.unsqueeze(0) @ R_in  # (B, P, 3)
        X_ref = X_obj.unsqueeze(1) @ R_ref.transpose(-1, -2) + t_ref.unsqueeze(2)  # (B,Nr,P,3)
        uv_r, val_r = _project_t(X_ref, K_ref.unsqueeze(2))
        f_r = _sample(ref_feats.reshape(B * Nr, C, h, w), uv_r.reshape(B * Nr, P, 2),
                      val_r.reshape(B * Nr, P), (h * self.features.stride,
                                                 w * self.features.stride))
        f_r = f_r.view(B, Nr, C, P)
        # Sums over Nr as plain adds (torch.var over a middle dimension is ~20x slower on CPU).
        mean = f_r.mean(dim=1)
        dev = f_r - mean.unsqueeze(1)
        var = (dev * dev).mean(dim=1)
        vol = torch.cat([mean, var, f_q], dim=1)  # (B, 3C, P)
        return vol.view(B, 3 * C, G, G, G)

    def forward(self, query_crop: torch.Tensor, K_query: torch.Tensor, R_in: torch.Tensor,
                t_in: torch.Tensor, ref_feats: torch.Tensor, K_ref: torch.Tensor,
                R_ref: torch.Tensor, t_ref: torch.Tensor) -> RefinerOutput:
        """One refinement step.

        Args:
            query_crop: ``(B, 3, S, S)`` RGB in ``[0, 1]`` (NaN -> 0), the crop of the query
                image around the current pose (:func:`crop_around_pose`).
            K_query: ``(B, 3, 3)`` intrinsics of the crop camera.
            R_in, t_in: ``(B, 3, 3)``, ``(B, 3)`` current pose of the normalized object in the
                crop camera.
            ref_feats: ``(B, Nr, C, h, w)`` from :meth:`encode_references`.
            K_ref, R_ref, t_ref: ``(B, Nr, 3, 3)``, ``(B, Nr, 3, 3)``, ``(B, Nr, 3)``: the
                reference cameras, poses of the normalized object.

        Returns:
            :class:`RefinerOutput` (unit, finite quaternion; finite offset and scale).
        """
        if query_crop.dim() != 4 or query_crop.shape[1] != 3:
            raise ValueError(f"query_crop must be (B, 3, S, S), got {tuple(query_crop.shape)}")
        if ref_feats.dim() != 5:
            raise ValueError(f"ref_feats must be (B, Nr, C, h, w), got {tuple(ref_feats.shape)}")
        B = query_crop.shape[0]
        q_feats = self.features(query_crop)
        vol = self.build_volume(q_feats, tuple(query_crop.shape[-2:]), K_query, R_in, t_in,
                                ref_feats.to(q_feats.dtype), K_ref, R_ref, t_ref)
        raw = self.head(self.volume_net(vol))
        # Guaranteed finite: NaN -> 0 (identity), and a generous clamp (|offset| <= 10 half
        # crops, zoom within 2^+-10) that real predictions never reach.
        raw = torch.where(raw == raw, raw, torch.zeros_like(raw)).clamp(-10.0, 10.0)
        q = self.quat_identity.to(raw.dtype).expand(B, 4) + raw[:, :4]
        norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        # A (measure-zero) zero vector falls back to the identity.
        q = torch.where(norm > 1e-6, q / norm.clamp_min(1e-6),
                        self.quat_identity.to(raw.dtype).expand(B, 4))
        return RefinerOutput(quat=q, offset=raw[:, 4:6], log2_scale=raw[:, 6:7])


# --------------------------------------------------------------------------------------------
# similarity <-> rigid pose, targets and loss
# --------------------------------------------------------------------------------------------


def apply_similarity(R_in: torch.Tensor, t_in: torch.Tensor, K_query: torch.Tensor,
                     quat: torch.Tensor, offset: torch.Tensor, log2_scale: torch.Tensor,
                     crop_size: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rigid pose after a predicted image similarity (batched, differentiable).

    ``R_new = matrix(quat) @ R_in``; the projected centre moves by ``offset * crop_size / 2``
    pixels; the depth becomes ``t_in_z / 2 ** log2_scale``; ``t_new`` is the back-projection
    of the new centre pixel at the new depth with ``K_query``.

    Args:
        R_in, t_in: ``(..., 3, 3)``, ``(..., 3)`` input pose in the crop camera.
        K_query: ``(..., 3, 3)`` crop intrinsics.
        quat: ``(..., 4)`` ``(x, y, z, w)`` (normalized here).
        offset: ``(..., 2)`` in units of the crop half-size.
        log2_scale: ``(..., 1)`` or ``(...)``.
        crop_size: crop side ``S`` in pixels.

    Returns:
        ``(R_new, t_new)``, shapes ``(..., 3, 3)`` and ``(..., 3)``.
    """
    if log2_scale.dim() == t_in.dim():
        log2_scale = log2_scale[..., 0]
    dR = matrix_from_quat_xyzw_torch(quat)
    R_new = dR @ R_in
    c_in, _ = _project_t(t_in, K_query)
    c_new = c_in + offset * (0.5 * crop_size)
    z_new = t_in[..., 2] * torch.exp2(-log2_scale)
    return R_new, _backproject_t(c_new, z_new, K_query)


def similarity_targets(R_in: torch.Tensor, t_in: torch.Tensor, R_gt: torch.Tensor,
                       t_gt: torch.Tensor, K_query: torch.Tensor,
                       crop_size: float) -> RefinerOutput:
    """The similarity that :func:`apply_similarity` turns into exactly ``(R_gt, t_gt)``.

    ``quat = quat(R_gt R_in^T)`` (``w >= 0``), ``offset = (c_gt - c_in) / (S/2)`` with ``c`` the
    projected centres, ``log2_scale = log2(t_in_z / t_gt_z)``. All poses in the crop camera;
    both centres must be in front of it.

    Returns:
        :class:`RefinerOutput` with shapes ``(..., 4)``, ``(..., 2)``, ``(..., 1)``.
    """
    dR = R_gt @ R_in.transpose(-1, -2)
    quat = quat_xyzw_from_matrix_torch(dR)
    quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    c_in, _ = _project_t(t_in, K_query)
    c_gt, _ = _project_t(t_gt, K_query)
    offset = (c_gt - c_in) / (0.5 * crop_size)
    log2_scale = torch.log2(t_in[..., 2] / t_gt[..., 2]).unsqueeze(-1)
    return RefinerOutput(quat=quat, offset=offset, log2_scale=log2_scale)


def _as_similarity(x) -> RefinerOutput:
    if isinstance(x, RefinerOutput):
        return x
    if isinstance(x, dict):
        return RefinerOutput(x["quat"], x["offset"], x["log2_scale"])
    return RefinerOutput(*x)


def grid_alignment_loss(pred: Union[RefinerOutput, Sequence[torch.Tensor], dict],
                        target: Union[RefinerOutput, Sequence[torch.Tensor], dict],
                        n_side: int = 8, squared: bool = False) -> torch.Tensor:
    """Gen6D's refiner loss: distance between volume points moved by two similarities.

    A similarity moves a point ``g`` of the volume cube ``[-1, 1]^3`` (units of the bounding
    sphere radius, i.e. of the crop half-size at the object's depth) to
    ``2 ** log2_scale * dR g + (offset_u, offset_v, 0)``. The loss is the mean over ``n_side^3``
    cell centres of the cube (the refiner's 32^3 grid subsampled; the loss is a quadratic form
    of the grid's second moments, so 8^3 is practically the same) and over the batch of the
    Euclidean distance (``squared=True``: squared distance) between the two moved points.
    Rotation, shift and zoom errors are thus weighed by what they do to the object on screen.
    The target is detached.

    Args:
        pred, target: :class:`RefinerOutput` (or ``(quat, offset, log2_scale)``), batch ``(B,)``.
        n_side: grid points per side.
        squared: mean squared distance instead of mean distance.

    Returns:
        Scalar loss (0 when the two similarities are equal).
    """
    pred, target = _as_similarity(pred), _as_similarity(target)
    g = volume_grid(n_side, device=pred.quat.device, dtype=pred.quat.dtype)

    def move(sim: RefinerOutput) -> torch.Tensor:
        R = matrix_from_quat_xyzw_torch(sim.quat.to(g.dtype))
        s = torch.exp2(sim.log2_scale.to(g.dtype).reshape(-1, 1, 1))
        o = F.pad(sim.offset.to(g.dtype), (0, 1)).unsqueeze(-2)  # (B, 1, 3)
        return s * (g @ R.transpose(-1, -2)) + o

    diff = move(pred) - move(RefinerOutput(*(x.detach() for x in target)))
    d2 = (diff * diff).sum(-1)
    if squared:
        return d2.mean()
    return torch.sqrt(d2 + 1e-12).mean()


# --------------------------------------------------------------------------------------------
# crops on real images (numpy / OpenCV)
# --------------------------------------------------------------------------------------------


def crop_camera(K: np.ndarray, t: np.ndarray, crop_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Virtual crop camera looking at the object centre with the unit sphere filling the crop.

    Args:
        K: ``(3, 3)`` intrinsics of the real image.
        t: ``(3,)`` object centre in the real camera (normalized units: the object is inside the
            unit sphere around it).
        crop_size: crop side ``S``.
        The camera is geometry.crop_camera.object_centred_camera with radius 1: the same
        convention (upright look-at, no roll) as the reference views.

    Returns:
        ``(K_crop, R_v, H)``: crop intrinsics ``[[f', 0, (S-1)/2], [0, f', (S-1)/2], [0, 0, 1]]``
        with ``f' = (S/2) sqrt(d^2 - 1)``, ``d = |t|``; the rotation real camera -> crop camera
        (``R_v t = (0, 0, d)``); and the homography ``H = K_crop R_v K^-1`` from real pixels to
        crop pixels.

    Raises:
        ValueError: non-finite input, object centre behind the camera (``t_z <= 0``), or camera
            inside the unit sphere (``|t| <= 1``).
    """
    K = np.asarray(K, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K must be a finite (3, 3) matrix, got {K!r}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"translation must be finite, got {t}")
    if t[2] <= 0:
        raise ValueError(f"object centre is behind the camera (t_z = {t[2]:.4g} <= 0): "
                         "the pose is invalid for this camera; re-initialize it")
    d = float(np.linalg.norm(t))
    if d <= 1.0 + 1e-9:
        raise ValueError(f"camera is inside the object's bounding sphere (|t| = {d:.4g} <= 1 in "
                         "normalized units): the pose is too close to crop the object")
    vc = object_centred_camera(K, t, 1.0, int(crop_size))
    return vc.K, vc.R_v, vc.H


def crop_around_pose(image: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                     crop_size: int
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Warp the image into the crop camera of :func:`crop_camera` (the references' convention).

    Args:
        image: ``(H, W, 3)`` (uint8 or float; channel order kept, use the references' order).
        K: ``(3, 3)`` intrinsics of the image.
        R, t: ``(3, 3)``, ``(3,)`` pose of the normalized object in the camera.
        crop_size: crop side ``S``.

    Returns:
        ``(crop, K_crop, R_crop, t_crop)``: the ``(S, S, 3)`` crop (same dtype; outside the
        image: 0), its intrinsics, and the pose in the crop camera
        (``R_crop = R_v R``, ``t_crop = R_v t = (0, 0, |t|)``). ``R_v = R_crop @ R.T`` maps
        back (:func:`pose_from_crop`).

    Raises:
        ValueError: see :func:`crop_camera`; also for an image that is not ``(H, W, 3)``.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    R = np.asarray(R, dtype=np.float64)
    K_crop, R_v, H = crop_camera(K, t, crop_size)
    src = image
    if src.dtype.kind == "f":
        src = np.nan_to_num(src.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    elif src.dtype != np.uint8:
        src = src.astype(np.float32)
    crop = cv2.warpPerspective(src, H, (int(crop_size), int(crop_size)), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    crop = crop.astype(image.dtype, copy=False)
    t_crop = R_v @ np.asarray(t, dtype=np.float64).reshape(3)
    return crop, K_crop, R_v @ R, t_crop


def pose_from_crop(R_v: np.ndarray, R_crop: np.ndarray,
                   t_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pose in the crop camera -> pose in the real camera: ``(R_v^T R_crop, R_v^T t_crop)``."""
    R_v = np.asarray(R_v, dtype=np.float64)
    return R_v.T @ np.asarray(R_crop, dtype=np.float64), R_v.T @ np.asarray(t_crop, np.float64)


def _to_tensor(x, device, dtype) -> torch.Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).to(device, dtype)


RefSet = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def iterative_refine(model: VolumeRefiner, image: np.ndarray, K: np.ndarray, R: np.ndarray,
                     t: np.ndarray, refs: Union[RefSet, Callable[[np.ndarray, np.ndarray], RefSet]],
                     n_iters: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """Refine a pose on a real image: crop, predict, update, ``n_iters`` times.

    Args:
        model: the refiner (its ``config.crop_size`` is used for the crops).
        image: ``(H, W, 3)`` uint8 image, channel order of the references (RGB).
        K: ``(3, 3)`` intrinsics.
        R, t: initial pose of the normalized object (``t`` in normalized units).
        refs: ``(ref_feats (Nr, C, h, w), K_ref (Nr, 3, 3), R_ref (Nr, 3, 3), t_ref (Nr, 3))``,
            or a callable ``(R, t) -> that tuple`` called at each iteration (Gen6D re-selects
            the references nearest to the current viewpoint).
        n_iters: refinement steps.

    Returns:
        ``(R, t)`` refined (numpy float64). If an update would leave the object behind the
        camera or put the camera inside its bounding sphere, iteration stops there and the
        last valid pose is returned. An invalid *initial* pose raises ``ValueError``.
    """
    S = model.config.crop_size
    param = next(model.parameters())
    dev, dt = param.device, param.dtype
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    for it in range(n_iters):
        try:
            crop, K_c, R_c, t_c = crop_around_pose(image, K, R, t, S)
        except ValueError:
            if it == 0:
                raise
            break
        R_v = R_c @ R.T
        ref_feats, K_ref, R_ref, t_ref = refs(R, t) if callable(refs) else refs
        img = crop.astype(np.float32)
        if crop.dtype == np.uint8:
            img = img / 255.0
        q = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(dev, dt)[None]
        T = partial(_to_tensor, device=dev, dtype=dt)
        K_q, R_q, t_q = T(K_c)[None], T(R_c)[None], T(t_c)[None]
        out = model(q, K_q, R_q, t_q, T(ref_feats)[None], T(K_ref)[None], T(R_ref)[None],
                    T(t_ref)[None])
        R_new, t_new = apply_similarity(R_q.double(), t_q.double(), K_q.double(),
                                        out.quat.double(), out.offset.double(),
                                        out.log2_scale.double(), S)
        R_new = R_new[0].cpu().numpy()
        t_new = t_new[0].cpu().numpy()
        if not (np.all(np.isfinite(R_new)) and np.all(np.isfinite(t_new))):
            break
        R, t = pose_from_crop(R_v, R_new, t_new)
    return R, t
