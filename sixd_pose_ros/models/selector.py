"""Viewpoint selector of model-free mode (after Gen6D's selector; the paper's ideas, our code).

Given an object-centred query crop (the detector's centre and scale, cropped with the crop camera
of :mod:`sixd_pose_ros.geometry.crop_camera`) and the object's reference views, the selector
says which reference shows the object from the query's viewpoint and by which in-plane angle
the query is turned relative to it. That gives the initial rotation of the pose pipeline
(:func:`initial_rotation`, :func:`initial_pose`); the detector gives the translation.

Conventions
-----------
- Images are ``(B, 3, S, S)`` float RGB in ``[0, 1]``; NaN -> 0. Reference crops and query crops
  share one geometry: the camera looks at the object centre and the object's unit sphere fills
  the crop (:class:`~sixd_pose_ros.objects.references.ReferenceSet`). Crops are resized to
  ``cfg.input_size`` inside (area averaging for integer factors).
- In-plane angle ``alpha`` (radians): the query (in its crop camera) has rotation
  ``R_q = inplane_rotation(alpha) @ R_ref`` (:func:`~sixd_pose_ros.geometry.rotations.inplane_rotation`,
  a rotation about the optical axis; positive = clockwise on screen since y points down). The
  image of ``inplane_rotation(a) @ R`` is the image of ``R`` rotated about the crop centre: output
  pixel ``p'`` shows input pixel ``Rot2(-a) p'`` (:func:`rotate_images`).

Network
-------
1. Backbone (:class:`~.backbone.FeatureBackbone`, our own, trained from scratch) on the query
   and on every reference rotated by ``cfg.angles_deg`` (5 angles in ``[-90, 90]``); per level
   in ``cfg.levels`` a 1x1 projection to ``proj_dim`` channels, L2-normalized at every cell.
   Reference features are computed once per object (:meth:`ViewpointSelector.prepare_references`).
2. Per level, the element-wise product of query and reference feature maps
   ``(B, N, A, P, h, w)`` goes through a small CNN (the similarity network) pooled by mean and max;
   the levels are concatenated and mapped to a ``sim_dim`` vector per (reference, angle).
3. Global normalization: each channel is standardized across all references and angles of a
   query (so the next stage sees how a reference compares with the others, not raw values).
4. One token per reference (its ``A`` normalized vectors, concatenated) plus a positional
   encoding of its viewing direction (Fourier features of the unit vector) -> a transformer
   encoder over the references.
5. Heads: a score per (reference, angle) (``(B, N, A)`` logits, softmax over all ``N x A``; the
   transformer's plus a direct linear score of each normalized similarity vector) and
   the in-plane angle per reference as a unit vector ``(cos alpha, sin alpha)`` (full circle,
   so queries turned by more than 90 degrees are covered too).

ONNX/TensorRT: :class:`SelectorExport` takes ``(query, directions, *level_features)`` with
dynamic batch and number of references; references prepared once per object are graph inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.crop_camera import object_centred_camera
from ..geometry.rotations import inplane_rotation
from .backbone import BackboneConfig, FeatureBackbone, make_norm

__all__ = [
    "Selection",
    "SelectorConfig",
    "SelectorExport",
    "SelectorOutput",
    "SelectorRefs",
    "ViewpointSelector",
    "decode_selection",
    "initial_pose",
    "initial_rotation",
    "inplane_angle_between",
    "rotate_images",
    "selector_loss",
    "selector_targets",
]

_EPS = 1e-6


@dataclass(frozen=True)
class SelectorConfig:
    """Hyper-parameters of :class:`ViewpointSelector`.

    Attributes:
        base, blocks, norm: backbone width, extra blocks per stage and normalization
            (see :class:`~.backbone.BackboneConfig`).
        input_size: side (px) the query and reference crops are resized to; a multiple of 16.
        levels: backbone strides used (subset of 4, 8, 16).
        proj_dim: channels of the projected, L2-normalized features per level.
        sim_width: channels of the similarity network's convolutions.
        sim_dim: size of the similarity vector per (reference, angle).
        angles_deg: in-plane rotations applied to every reference (Gen6D: 5 in [-90, 90]).
        d_model, n_heads, n_layers, ff_dim: the transformer over references.
        pe_freqs: octaves of the Fourier positional encoding of viewing directions.
    """

    base: int = 16
    blocks: tuple[int, int, int, int] = (1, 1, 1, 2)
    norm: str = "gn"
    input_size: int = 64
    levels: tuple[int, ...] = (4, 8, 16)
    proj_dim: int = 16
    sim_width: int = 32
    sim_dim: int = 64
    angles_deg: tuple[float, ...] = (-90.0, -45.0, 0.0, 45.0, 90.0)
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 128
    pe_freqs: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        object.__setattr__(self, "levels", tuple(int(s) for s in self.levels))
        object.__setattr__(self, "angles_deg", tuple(float(a) for a in self.angles_deg))
        if self.input_size < 16 or self.input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got {self.input_size}")
        if not self.levels or any(s not in (4, 8, 16) for s in self.levels) \
                or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be distinct strides among 4, 8, 16, got {self.levels}")
        if not self.angles_deg or any(not math.isfinite(a) for a in self.angles_deg):
            raise ValueError(f"angles_deg must be finite and non-empty, got {self.angles_deg}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        for name in ("proj_dim", "sim_width", "sim_dim", "d_model", "n_layers", "ff_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pe_freqs < 0:
            raise ValueError("pe_freqs must be >= 0")
        BackboneConfig(base=self.base, blocks=self.blocks, norm=self.norm)  # validates them

    @property
    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig(base=self.base, blocks=self.blocks, norm=self.norm)

    @property
    def n_angles(self) -> int:
        return len(self.angles_deg)

    @classmethod
    def preset(cls, name: str) -> SelectorConfig:
        """``"cpu"``: 64 px crops, small widths (trains on one core); ``"gpu"``: 128 px crops,
        the GPU backbone and a wider similarity network and transformer."""
        if name == "cpu":
            return cls()
        if name == "gpu":
            bb = BackboneConfig.preset("gpu")
            return cls(base=bb.base, blocks=bb.blocks, norm=bb.norm, input_size=128, proj_dim=32,
                       sim_width=64, sim_dim=128, d_model=128, n_heads=8, n_layers=4, ff_dim=256)
        raise ValueError(f"unknown selector preset {name!r}; choose 'cpu' or 'gpu'")


class SelectorRefs(NamedTuple):
    """Prepared references of one object (:meth:`ViewpointSelector.prepare_references`).

    Attributes:
        levels: per level of the config, ``(N, A, P, h, w)`` L2-normalized features of every
            reference at every in-plane angle. Valid only with the weights that made them.
        directions: ``(N, 3)`` unit viewing directions (object centre -> camera, normalized
            object frame), :meth:`ReferenceSet.view_directions`.
    """

    levels: tuple[torch.Tensor, ...]
    directions: torch.Tensor

    @property
    def n_refs(self) -> int:
        return int(self.directions.shape[0])

    def to(self, *args, **kwargs) -> SelectorRefs:
        return SelectorRefs(tuple(f.to(*args, **kwargs) for f in self.levels),
                            self.directions.to(*args, **kwargs))

    def select(self, index: Sequence[int] | torch.Tensor) -> SelectorRefs:
        """A subset of the references (e.g. 32 of 64 to trade accuracy for speed)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.directions.device)
        return SelectorRefs(tuple(f.index_select(0, idx) for f in self.levels),
                            self.directions.index_select(0, idx))


class SelectorOutput(NamedTuple):
    """Raw selector output for ``B`` queries and ``N`` references.

    Attributes:
        scores: ``(B, N, A)`` logits; softmax over all ``N x A`` = probability that reference
            ``n`` turned by angle ``a`` shows the query.
        angle: ``(B, N, 2)`` unit vectors ``(cos alpha, sin alpha)``: the query's in-plane angle
            relative to reference ``n`` (see the module docstring).
    """

    scores: torch.Tensor
    angle: torch.Tensor


@dataclass
class Selection:
    """Decoded selection for one query.

    Attributes:
        index: selected reference.
        inplane: in-plane angle ``alpha`` relative to it, radians in ``(-pi, pi]``.
        prob: its probability (softmax summed over its angles).
        probs: ``(N,)`` probability of every reference.
    """

    index: int
    inplane: float
    prob: float
    probs: np.ndarray


# ---------------------------------------------------------------------- building blocks
def rotate_images(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Every image turned about its centre by every in-plane angle.

    The result for angle ``a`` is what a camera turned by ``inplane_rotation(a)`` about its
    optical axis sees (the principal point is the crop centre, ``((S-1)/2, (S-1)/2)``): output
    pixel ``p'`` (offset from the centre, x right, y down) samples input pixel ``Rot2(-a) p'``.
    Bilinear; outside the input: 0 (the unit sphere fills the inscribed disk, so the object is
    never cut).

    Args:
        images: ``(N, C, S, S)``.
        angles: ``(A,)`` radians.

    Returns:
        ``(N, A, C, S, S)``.
    """
    N, C, H, W = images.shape
    A = angles.shape[0]
    c, s = torch.cos(angles).to(images.dtype), torch.sin(angles).to(images.dtype)
    zero = torch.zeros_like(c)
    # affine_grid maps output coordinates to input coordinates: Rot2(-a) = [[c, s], [-s, c]].
    theta = torch.stack([torch.stack([c, s, zero], -1), torch.stack([-s, c, zero], -1)], -2)
    grid = F.affine_grid(theta, [A, C, H, W], align_corners=False)  # (A, H, W, 2)
    grid = grid.unsqueeze(0).expand(N, A, H, W, 2).reshape(N * A, H, W, 2)
    src = images.unsqueeze(1).expand(N, A, C, H, W).reshape(N * A, C, H, W)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(N, A, C, H, W)


def _direction_encoding(d: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Fourier features ``[d, sin(2^k pi d), cos(2^k pi d)]_k`` of unit vectors ``(N, 3)``."""
    feats = [d]
    for k in range(n_freqs):
        feats += [torch.sin((2.0 ** k) * math.pi * d), torch.cos((2.0 ** k) * math.pi * d)]
    return torch.cat(feats, dim=-1)


class _SimilarityNet(nn.Module):
    """Product map ``(M, P, h, w)`` -> ``(M, 2 width)``: conv3x3s (stride 2 while the map is
    larger than 4x4: ``M = B N A`` maps per query batch make full-resolution convs the cost of
    the whole model), then mean and max pooling (mean: how well it matches overall; max: the
    best-matching part)."""

    def __init__(self, in_ch: int, width: int, size: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_ch
        while True:
            stride = 2 if size > 4 else 1
            layers += [nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=(norm == "none")),
                       make_norm(norm, width), nn.ReLU(inplace=True)]
            cin = width
            size = (size + 1) // 2 if stride == 2 else size
            if size <= 4:
                break
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1)


class ViewpointSelector(nn.Module):
    """Gen6D-style viewpoint selector: which reference, and which in-plane angle.

    Use :meth:`prepare_references` once per object, then call the module per frame. See the
    module docstring for the conventions and the network.
    """

    def __init__(self, cfg: SelectorConfig = SelectorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = FeatureBackbone(cfg.backbone_config)
        P, w, D = cfg.proj_dim, cfg.sim_width, cfg.sim_dim
        self.proj = nn.ModuleList([nn.Conv2d(self.backbone.channels[s], P, 1) for s in cfg.levels])
        self.sim = nn.ModuleList([_SimilarityNet(P, w, cfg.input_size // s, cfg.norm)
                                  for s in cfg.levels])
        self.sim_out = nn.Sequential(nn.Linear(2 * w * len(cfg.levels), D), nn.ReLU(inplace=True),
                                     nn.Linear(D, D))
        self.token = nn.Linear(cfg.n_angles * D, cfg.d_model)
        pe_in = 3 + 6 * cfg.pe_freqs
        self.direction_pe = nn.Sequential(nn.Linear(pe_in, cfg.d_model), nn.ReLU(inplace=True),
                                          nn.Linear(cfg.d_model, cfg.d_model))
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ff_dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.score_head = nn.Linear(cfg.d_model, cfg.n_angles)
        # Direct score of each (reference, angle) from its own normalized similarity vector,
        # added to the transformer's: keeps the angle identity that the token mixes away and
        # gives the similarity network a short gradient path (it learns faster on few steps).
        self.direct_score = nn.Linear(cfg.sim_dim, 1)
        self.angle_head = nn.Linear(cfg.d_model, 2)
        self.register_buffer("angles", torch.tensor([math.radians(a) for a in cfg.angles_deg]),
                             persistent=False)

    # ------------------------------------------------------------------ features
    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """Crops to ``input_size``: area averaging for integer factors (exports as AveragePool),
        antialiased bilinear otherwise (torch only)."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"crops must be (B, 3, S, S), got {tuple(images.shape)}")
        # NaN -> 0 (isnan exports to ONNX; nan_to_num does not everywhere), then clamp.
        x = torch.where(torch.isnan(images), torch.zeros_like(images), images).clamp(0.0, 1.0)
        S, T = int(images.shape[-1]), self.cfg.input_size
        if S == T:
            return x
        if S % T == 0:
            return F.avg_pool2d(x, S // T)
        return F.interpolate(x, size=(T, T), mode="bilinear", align_corners=False, antialias=True)

    def _level_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(M, 3, T, T)`` at input size -> per level ``(M, P, T/s, T/s)``, unit norm per cell."""
        f4, f8, f16 = self.backbone(x)
        by_stride = {4: f4, 8: f8, 16: f16}
        return [F.normalize(proj(by_stride[s]), dim=1, eps=_EPS)
                for proj, s in zip(self.proj, self.cfg.levels)]

    def prepare_references(self, images: torch.Tensor, directions: torch.Tensor) -> SelectorRefs:
        """Features of the references at every in-plane angle: once per object, never per frame.

        Args:
            images: ``(N, 3, S, S)`` reference crops in ``[0, 1]`` (``ReferenceSet.to_torch``).
            directions: ``(N, 3)`` viewing directions (``ReferenceSet.view_directions``).

        Returns:
            :class:`SelectorRefs` (differentiable: training backpropagates through it).
        """
        if directions.dim() != 2 or directions.shape[1] != 3 or directions.shape[0] != images.shape[0]:
            raise ValueError(f"directions must be ({images.shape[0]}, 3), got {tuple(directions.shape)}")
        x = self._resize(images)
        N, A = x.shape[0], self.cfg.n_angles
        rotated = rotate_images(x, self.angles.to(x.dtype)).reshape(N * A, *x.shape[1:])
        feats = [f.reshape(N, A, *f.shape[1:]) for f in self._level_features(rotated)]
        d = F.normalize(directions.to(x.dtype), dim=1, eps=_EPS)
        return SelectorRefs(tuple(feats), d)

    # ------------------------------------------------------------------ forward
    def forward(self, query: torch.Tensor, refs: SelectorRefs) -> SelectorOutput:
        """Scores and in-plane angles of a batch of query crops against one object's references.

        Args:
            query: ``(B, 3, S, S)`` object-centred crops in ``[0, 1]``.
            refs: :class:`SelectorRefs` of the object (any ``N >= 1``).
        """
        q_levels = self._level_features(self._resize(query))
        sims = []
        for net, qf, rf in zip(self.sim, q_levels, refs.levels):
            B, P, h, w = qf.shape
            N, A = rf.shape[0], rf.shape[1]
            prod = qf[:, None, None] * rf[None]  # (B, N, A, P, h, w)
            sims.append(net(prod.reshape(B * N * A, P, h, w)).reshape(B, N, A, -1))
        v = self.sim_out(torch.cat(sims, dim=-1))  # (B, N, A, D)
        B, N, A, D = v.shape
        # Global normalization across all references (and angles) of each query.
        mean = v.mean(dim=(1, 2), keepdim=True)
        var = ((v - mean) ** 2).mean(dim=(1, 2), keepdim=True)
        v = (v - mean) / torch.sqrt(var + 1e-5)
        pe = self.direction_pe(_direction_encoding(refs.directions.to(v.dtype), self.cfg.pe_freqs))
        tokens = self.token(v.reshape(B, N, A * D)) + pe.unsqueeze(0)
        h = self.out_norm(self.transformer(tokens))
        scores = self.score_head(h) + self.direct_score(v).squeeze(-1)
        angle = self.angle_head(h)
        angle = angle / torch.sqrt((angle * angle).sum(-1, keepdim=True) + 1e-12)
        return SelectorOutput(scores=scores, angle=angle)


class SelectorExport(nn.Module):
    """Export/TensorRT view: ``forward(query, directions, *levels) -> (scores, angle)``.

    ``levels`` are :attr:`SelectorRefs.levels` in the config's order. Checked here:
    ``torch.onnx.export(SelectorExport(sel), (query, refs.directions, *refs.levels), path,
    dynamo=True, dynamic_shapes=SelectorExport.dynamic_shapes(len(cfg.levels)), ...)`` runs in
    onnxruntime with dynamic batch and number of references and matches torch. The query side
    is static (``input_size`` or an integer multiple of it, fixed at export).
    """

    def __init__(self, selector: ViewpointSelector) -> None:
        super().__init__()
        self.selector = selector

    def forward(self, query: torch.Tensor, directions: torch.Tensor, *levels: torch.Tensor):
        out = self.selector(query, SelectorRefs(tuple(levels), directions))
        return out.scores, out.angle

    @staticmethod
    def input_names(n_levels: int) -> list[str]:
        return ["query", "directions"] + [f"ref_level{i}" for i in range(n_levels)]

    output_names: ClassVar[list[str]] = ["scores", "angle"]

    @staticmethod
    def dynamic_shapes(n_levels: int, max_batch: int = 64, max_refs: int = 1024):
        """``dynamic_shapes`` for ``torch.onnx.export(dynamo=True)``: dynamic batch and
        number of references."""
        from torch.export import Dim

        n = Dim("n_refs", min=1, max=max_refs)
        return ({0: Dim("batch", min=1, max=max_batch)}, {0: n}, tuple({0: n} for _ in range(n_levels)))


# ---------------------------------------------------------------------- decoding and poses
def _reference_probs(output: SelectorOutput) -> tuple[np.ndarray, np.ndarray]:
    """``(B, N)`` probability of each reference (softmax summed over its angles) and ``(B, N, 2)``
    the regressed in-plane angles."""
    scores = output.scores.detach().float()
    B, N, A = scores.shape
    probs = torch.softmax(scores.reshape(B, N * A), dim=1).reshape(B, N, A).sum(-1).cpu().numpy()
    return probs, output.angle.detach().float().cpu().numpy()


def decode_selection(output: SelectorOutput) -> list[Selection]:
    """Best reference per query: the largest probability summed over its angles, with the
    in-plane angle regressed for it."""
    probs, ang = _reference_probs(output)
    result = []
    for b in range(len(probs)):
        n = int(np.argmax(probs[b]))
        result.append(Selection(index=n, inplane=float(math.atan2(ang[b, n, 1], ang[b, n, 0])),
                                prob=float(probs[b, n]), probs=probs[b]))
    return result


def ranked_selections(output: SelectorOutput, k: int) -> list[Selection]:
    """The ``k`` most probable references for the first query, best first: viewpoints to try
    when something downstream (the depth) can tell which is right."""
    probs, ang = _reference_probs(output)
    return [Selection(index=int(n), inplane=float(math.atan2(ang[0, n, 1], ang[0, n, 0])),
                      prob=float(probs[0, n]), probs=probs[0])
            for n in np.argsort(-probs[0], kind="stable")[:max(1, k)]]


def initial_rotation(ref_R: np.ndarray, inplane_angle: float | np.ndarray) -> np.ndarray:
    """Rotation of the query in its crop camera: the reference's viewpoint turned in-plane.

    ``R = inplane_rotation(alpha) @ R_ref``: same viewing direction as the reference
    (``-R^T e_z`` is unchanged by a rotation about the optical axis), image turned by ``alpha``.

    Args:
        ref_R: ``(..., 3, 3)`` object-to-camera rotation of the selected reference.
        inplane_angle: ``(...)`` radians.

    Returns:
        ``(..., 3, 3)`` float64.
    """
    return inplane_rotation(np.asarray(inplane_angle, np.float64)) @ np.asarray(ref_R, np.float64)


def initial_pose(ref_R: np.ndarray, inplane_angle: float, t: np.ndarray,
                 K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Initial pose in the real camera: selector rotation + the detector's translation.

    The query crop was taken by the crop camera looking at ``t``
    (:func:`~sixd_pose_ros.geometry.crop_camera.object_centred_camera`, rotation ``R_v`` from the
    real camera); the rotation found in the crop is brought back with ``R_v^T``.

    Args:
        ref_R: ``(3, 3)`` selected reference's rotation.
        inplane_angle: radians.
        t: ``(3,)`` object centre in the real camera, normalized units
            (:func:`~.detector.initial_translation`).
        K: ``(3, 3)`` intrinsics of the real image.

    Returns:
        ``(R, t)`` float64, object-to-camera in the real camera.
    """
    t = np.asarray(t, np.float64).reshape(3)
    R_v = object_centred_camera(K, t, 1.0).R_v
    return R_v.T @ initial_rotation(ref_R, inplane_angle), t.copy()


def inplane_angle_between(R_query: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """The in-plane angle ``alpha`` that makes ``inplane_rotation(alpha) @ R_ref`` closest to
    ``R_query`` (geodesic distance), radians in ``(-pi, pi]``.

    With ``M = R_query R_ref^T``, ``trace(inplane(alpha)^T M) = cos(alpha) (M00 + M11) +
    sin(alpha) (M10 - M01)``, maximal at ``alpha = atan2(M10 - M01, M00 + M11)``; exact when the
    two viewing directions agree. Shapes ``(..., 3, 3)`` broadcast.
    """
    M = np.asarray(R_query, np.float64) @ np.swapaxes(np.asarray(R_ref, np.float64), -1, -2)
    return np.arctan2(M[..., 1, 0] - M[..., 0, 1], M[..., 0, 0] + M[..., 1, 1])


# ---------------------------------------------------------------------- training targets, loss
def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def selector_targets(R_query: np.ndarray, R_refs: np.ndarray, angles: np.ndarray,
                     symmetries: np.ndarray | None = None, sigma_view_deg: float = 12.0,
                     sigma_angle_deg: float = 30.0) -> dict:
    """Soft targets over (reference, angle), per-reference in-plane angles and their weights.

    The query's viewing direction is ``v = -R_q^T e_z``; a symmetric pose ``R_q S`` has
    ``S^T v``. For reference ``n`` the equivalent pose nearest its direction ``d_n`` is used:
    ``e_n = min_S angle(d_n, S^T v)``, ``alpha_n = inplane_angle_between(R_q S*, R_n)``.
    Target ``p(n, a) ~ exp(-e_n^2 / 2 sv^2) exp(-wrap(alpha_n - a)^2 / 2 sa^2)`` (normalized
    over all ``n, a``); the angle loss weighs reference ``n`` by ``exp(-e_n^2 / 2 sv^2)``.

    Args:
        R_query: ``(B, 3, 3)`` query rotations in their crop cameras.
        R_refs: ``(N, 3, 3)`` reference rotations.
        angles: ``(A,)`` the model's reference angles, radians.
        symmetries: ``(K, 3, 3)`` object symmetries (``None``: identity only).

    Returns:
        ``{"probs": (B, N, A), "inplane": (B, N) radians, "weight": (B, N), "view_error":
        (B, N) radians}`` float32 numpy arrays.
    """
    Rq = np.asarray(R_query, np.float64)
    Rr = np.asarray(R_refs, np.float64)
    S = np.eye(3)[None] if symmetries is None else np.asarray(symmetries, np.float64)
    v = -Rq[:, 2, :]  # (B, 3)
    v_sym = np.einsum("kji,bj->bki", S, v)  # S^T v: (B, K, 3)
    d = -Rr[:, 2, :]  # (N, 3)
    cos = np.clip(np.einsum("bki,ni->bnk", v_sym, d), -1.0, 1.0)
    best = np.argmax(cos, axis=2)  # (B, N)
    err = np.arccos(np.take_along_axis(cos, best[..., None], axis=2)[..., 0])
    Rq_sym = Rq[:, None] @ S[None]  # (B, K, 3, 3)
    Rq_best = np.take_along_axis(Rq_sym, best[..., None, None], axis=1)  # (B, N, 3, 3)
    alpha = inplane_angle_between(Rq_best, Rr[None])
    sv, sa = np.radians(sigma_view_deg), np.radians(sigma_angle_deg)
    w_view = np.exp(-0.5 * (err / sv) ** 2)
    w_ang = np.exp(-0.5 * (_wrap(alpha[..., None] - np.asarray(angles)[None, None]) / sa) ** 2)
    # Log domain: far from every reference the kernels underflow; the nearest still wins.
    logp = -0.5 * (err / sv) ** 2
    logp = logp[..., None] + np.log(w_ang + 1e-30)
    p = np.exp(logp - logp.max(axis=(1, 2), keepdims=True))
    p /= p.sum(axis=(1, 2), keepdims=True)
    return {"probs": p.astype(np.float32), "inplane": alpha.astype(np.float32),
            "weight": w_view.astype(np.float32), "view_error": err.astype(np.float32)}


def selector_loss(output: SelectorOutput, targets: dict, w_angle: float = 1.0) -> dict:
    """Cross-entropy over all (reference, angle) pairs with the soft target, plus the squared
    distance between predicted and true ``(cos, sin)`` of the in-plane angle, averaged over
    references with the target's weights.

    Args:
        output: :class:`SelectorOutput` ``(B, N, A)`` / ``(B, N, 2)``.
        targets: :func:`selector_targets` output (numpy or tensors).

    Returns:
        ``{"loss", "score", "angle"}`` scalar tensors.
    """
    dev, dt = output.scores.device, output.scores.dtype

    def T(x):
        return torch.as_tensor(x, device=dev, dtype=dt)

    probs, alpha, weight = T(targets["probs"]), T(targets["inplane"]), T(targets["weight"])
    B, N, A = output.scores.shape
    if probs.shape != (B, N, A) or alpha.shape != (B, N):
        raise ValueError(f"targets {tuple(probs.shape)} do not match scores {(B, N, A)}")
    logp = torch.log_softmax(output.scores.reshape(B, N * A), dim=1)
    l_score = -(probs.reshape(B, N * A) * logp).sum(1).mean()
    tgt = torch.stack([torch.cos(alpha), torch.sin(alpha)], dim=-1)
    d2 = ((output.angle - tgt) ** 2).sum(-1)
    l_angle = ((d2 * weight).sum(1) / weight.sum(1).clamp(min=1e-6)).mean()
    return {"loss": l_score + w_angle * l_angle, "score": l_score, "angle": l_angle}
