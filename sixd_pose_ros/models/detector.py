"""Reference-correlation object detector (after Gen6D's detector; our own code and layers).

Finds one known object in a full query image from a set of reference views of it, and gives
the object's 2D centre and apparent size, from which :func:`initial_translation` makes the
first translation guess of the pose pipeline.

Conventions
-----------
- Images are ``(B, 3, H, W)`` float RGB in ``[0, 1]``.
- Reference views (``sixd_pose_ros.objects.references``) are square ``S x S`` crops in which the
  camera looks at the object centre and the object's unit sphere (normalized object frame)
  exactly fills the crop. Conceptually they are resized to ``ref_size`` (120) px: at scale
  ``s`` the sphere appears in the query with diameter ``ref_size * s`` px.
- Feature cell ``(i, j)`` at stride ``st`` is centred on query pixel ``(u, v) = (st j, st i)``
  (pixel centres at integers, see :mod:`.backbone`). ``offset`` is in cells, ``(dx, dy)``:
  the object centre is ``(st (j + dx), st (i + dy))``.
- Box size = diameter of the projected unit sphere, in pixels of a virtual camera looking at
  the object centre with focal ``f = sqrt(fx fy)`` (see :func:`project_sphere`).

Network
-------
1. Backbone (:class:`~.backbone.FeatureBackbone`) -> the level at ``cfg.stride`` (16 by
   default) -> 1x1 conv to ``feat_dim`` channels -> L2-normalized in ``corr_groups`` channel
   groups at every cell.
2. References (:meth:`Detector.encode_references`, once per object): for every scale ``s`` the
   reference image is resampled (antialiased) so that its sphere has diameter ``ref_size * s``
   px, centred exactly on a feature cell of a canvas with ``context_cells`` cells of margin;
   the backbone runs on that canvas and the central ``k_s x k_s`` cells (``k_s`` = odd integer
   nearest to ``ref_size s / stride``) become the kernel, normalized like the query features
   and divided by ``k_s^2``. So every kernel is computed from features at the scale where it is
   used, and correlation values are mean cosines in ``[-1, 1]``.
3. Correlation: per scale, a grouped ``F.conv2d`` of the query features with the kernels of
   all ``N`` references (``padding = k_s // 2`` keeps the kernel centre on the output cell) ->
   ``(B, G, N, S, h, w)``.
4. A small 3D CNN over ``(scales, h, w)`` with references as batch, max over references,
   then a 1x1x1 conv gives per-scale logits and a 2D head on the flattened
   ``(channels x scales)`` gives the heatmap logit, a log2-scale residual and the offset.
   ``log2_scale = sum_s softmax(scale_logits)_s log2(s) + residual``.

Several objects per frame: the query features do not depend on the object, so
:meth:`Detector.forward_multi` runs the backbone once and the correlation head once per object.
(Concatenating the references of two objects would be wrong: the max over references would mix
the objects.)

ONNX/TensorRT: :class:`DetectorExport` wraps the model as ``(query, *kernels) -> (heatmap,
log2_scale, offset)``; the kernels are graph inputs (Conv with non-constant weights) or, per
object, can be baked in as constants by exporting a closure over fixed :class:`RefFeatures`.
Export with ``H, W`` multiples of 16 so that the padding is a no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.pinhole import backproject_pixels, project
from .backbone import BackboneConfig, FeatureBackbone, make_norm

__all__ = [
    "DetectorConfig",
    "Detector",
    "RefFeatures",
    "DetectorOutput",
    "Detection",
    "DetectorTargets",
    "DetectorExport",
    "decode",
    "decode_topk",
    "initial_translation",
    "project_sphere",
    "targets_from_ground_truth",
    "detector_loss",
    "kernel_sizes",
]

_EPS = 1e-6


def _default_scales() -> Tuple[float, ...]:
    return tuple(float(s) for s in 2.0 ** np.linspace(-1.0, 0.5, 5))


@dataclass(frozen=True)
class DetectorConfig:
    """Hyper-parameters of :class:`Detector`.

    Attributes:
        base: backbone width (see :class:`~.backbone.BackboneConfig`).
        blocks: backbone extra blocks per stage.
        norm: ``"gn"``, ``"bn"`` or ``"none"`` (backbone and 3D CNN).
        feat_dim: channels of the correlation features (1x1 projection of the backbone level).
        corr_groups: channel groups correlated separately (each gives one input channel of the
            3D CNN); must divide ``feat_dim``.
        stride: backbone level used for correlation and output grid: 8 or 16.
        ref_size: side (px) the reference crops are treated as (sphere diameter at scale 1).
        scales: sphere diameters in the query, as multiples of ``ref_size``, one kernel each.
        context_cells: margin (cells) around each kernel's canvas when encoding references,
            so the kernel cells see the reference's surroundings, not zero padding.
        hidden3d: channels of the 3D CNN over (scales, h, w).
        hidden2d: channels of the 2D head.
    """

    base: int = 16
    blocks: Tuple[int, int, int, int] = (1, 1, 1, 2)
    norm: str = "gn"
    feat_dim: int = 32
    corr_groups: int = 4
    stride: int = 16
    ref_size: int = 120
    scales: Tuple[float, ...] = field(default_factory=_default_scales)
    context_cells: int = 2
    hidden3d: int = 8
    hidden2d: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.stride not in (8, 16):
            raise ValueError(f"stride must be 8 or 16, got {self.stride}")
        if self.feat_dim % self.corr_groups != 0:
            raise ValueError(f"corr_groups={self.corr_groups} must divide feat_dim={self.feat_dim}")
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise ValueError(f"scales must be positive and finite, got {self.scales}")
        if self.ref_size < 8:
            raise ValueError(f"ref_size must be >= 8, got {self.ref_size}")
        if self.context_cells < 0:
            raise ValueError("context_cells must be >= 0")
        self.backbone_config  # validates base/blocks/norm

    @property
    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig(base=self.base, blocks=self.blocks, norm=self.norm)

    @classmethod
    def preset(cls, name: str) -> "DetectorConfig":
        """``"cpu"``: the defaults (trains on 2 cores); ``"gpu"``: wider backbone and head."""
        if name == "cpu":
            return cls()
        if name == "gpu":
            bb = BackboneConfig.preset("gpu")
            return cls(base=bb.base, blocks=bb.blocks, norm=bb.norm, feat_dim=64,
                       corr_groups=8, hidden3d=16, hidden2d=64)
        raise ValueError(f"unknown detector preset {name!r}; choose 'cpu' or 'gpu'")


def kernel_sizes(cfg: DetectorConfig) -> Tuple[int, ...]:
    """Kernel side per scale: the odd integer nearest to ``ref_size * s / stride`` (>= 1).

    Default config (stride 16, ref_size 120, scales 2^[-1..0.5]): ``(3, 5, 7, 9, 11)``.
    """
    out = []
    for s in cfg.scales:
        e = cfg.ref_size * s / cfg.stride
        k = 2 * int(math.floor((e - 1.0) / 2.0 + 0.5)) + 1
        out.append(max(1, k))
    return tuple(out)


class RefFeatures(NamedTuple):
    """Encoded references of one object (from :meth:`Detector.encode_references`).

    Attributes:
        kernels: one tensor per scale of the config, ``(N, feat_dim, k_s, k_s)``, already
            group-L2-normalized and divided by ``k_s^2``. Valid only with the weights that
            made them: store them with the detector checkpoint's identity.
    """

    kernels: Tuple[torch.Tensor, ...]

    @property
    def n_refs(self) -> int:
        return int(self.kernels[0].shape[0])

    def to(self, *args, **kwargs) -> "RefFeatures":
        return RefFeatures(tuple(k.to(*args, **kwargs) for k in self.kernels))

    def select(self, index: Union[Sequence[int], torch.Tensor]) -> "RefFeatures":
        """Subset of references (e.g. to trade accuracy for speed)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.kernels[0].device)
        return RefFeatures(tuple(k.index_select(0, idx) for k in self.kernels))


@dataclass
class DetectorOutput:
    """Raw detector output on the (padded) feature grid ``h x w`` at ``stride``.

    Attributes:
        heatmap_logits: ``(B, 1, h, w)``; ``sigmoid`` = probability the object centre is in
            the cell.
        log2_scale: ``(B, 1, h, w)``; sphere diameter = ``ref_size * 2**log2_scale`` px.
        offset: ``(B, 2, h, w)``, ``(dx, dy)`` in cells, in ``[-0.5, 0.5]``.
        scale_logits: ``(B, n_scales, h, w)``, evidence per scale (diagnostics, training).
        stride: pixels per cell.
    """

    heatmap_logits: torch.Tensor
    log2_scale: torch.Tensor
    offset: torch.Tensor
    scale_logits: torch.Tensor
    stride: int


@dataclass
class Detection:
    """One detection in original query-image pixels.

    Attributes:
        center_xy: ``(2,)`` projected object (sphere) centre ``(u, v)``, pixels.
        box_size: apparent sphere diameter, pixels (virtual camera, ``f = sqrt(fx fy)``).
        score: ``sigmoid(logit)`` in ``[0, 1]``.
        log2_scale: ``log2(box_size / ref_size)``.
        cell: ``(row, col)`` of the chosen cell.
    """

    center_xy: np.ndarray
    box_size: float
    score: float
    log2_scale: float
    cell: Tuple[int, int]

    @property
    def box_xyxy(self) -> np.ndarray:
        """Square box ``(x0, y0, x1, y1)`` around the sphere, pixels."""
        h = 0.5 * self.box_size
        cx, cy = self.center_xy
        return np.array([cx - h, cy - h, cx + h, cy + h])

    def initial_translation(self, K: np.ndarray) -> np.ndarray:
        """See :func:`initial_translation`."""
        return initial_translation(self.center_xy, self.box_size, K)


def _sanitize(x: torch.Tensor) -> torch.Tensor:
    """NaN/inf -> 0 (graph ops only, so it exports)."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _group_l2_normalize(x: torch.Tensor, groups: int) -> torch.Tensor:
    """L2-normalize ``(B, C, h, w)`` over each group of ``C / groups`` channels at every cell."""
    b, c, h, w = x.shape
    xg = x.reshape(b, groups, c // groups, h, w)
    xg = xg * torch.rsqrt((xg * xg).sum(dim=2, keepdim=True) + _EPS)
    return xg.reshape(b, c, h, w)


def _place_references(refs: torch.Tensor, canvas: int, center: float,
                      diameter: float) -> torch.Tensor:
    """Resample square references onto a ``canvas x canvas`` image.

    The reference crop (its sphere fills it) is scaled so that the sphere has ``diameter`` px
    and its centre lies on canvas pixel ``(center, center)``; outside the crop is 0.
    Downscaling is antialiased (``F.interpolate(antialias=True)`` first).
    """
    n, c, s, _ = refs.shape
    src = refs
    size = s
    if diameter < s:
        size = max(2, int(round(diameter)))
        src = F.interpolate(refs, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=True)
    x = torch.arange(canvas, dtype=refs.dtype, device=refs.device)
    u = (x - center) * (size / diameter) + (size - 1) / 2.0  # source pixel coordinate
    g = (2.0 * u + 1.0) / size - 1.0  # grid_sample, align_corners=False
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(n, canvas, canvas, 2)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Detector(nn.Module):
    """Correlation detector: query image + encoded references -> centre heatmap, scale, offset.

    Args:
        cfg: :class:`DetectorConfig`.
    """

    def __init__(self, cfg: DetectorConfig = DetectorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = FeatureBackbone(cfg.backbone_config)
        self.level = {4: 0, 8: 1, 16: 2}[cfg.stride]
        cin = self.backbone.channels[cfg.stride]
        self.proj = nn.Conv2d(cin, cfg.feat_dim, 1)
        self.ksizes = kernel_sizes(cfg)
        n_s = len(cfg.scales)
        g, h3, h2 = cfg.corr_groups, cfg.hidden3d, cfg.hidden2d
        self.corr3d = nn.Sequential(
            nn.Conv3d(g, h3, 3, padding=1, bias=(cfg.norm == "none")),
            make_norm(cfg.norm, h3, dims=3),
            nn.ReLU(inplace=True),
            nn.Conv3d(h3, h3, 3, padding=1, bias=(cfg.norm == "none")),
            make_norm(cfg.norm, h3, dims=3),
            nn.ReLU(inplace=True),
        )
        self.scale_head = nn.Conv3d(h3, 1, 1)
        self.head2d = nn.Sequential(
            nn.Conv2d(h3 * n_s, h2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h2, h2, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.out_heat = nn.Conv2d(h2, 1, 1)
        self.out_scale = nn.Conv2d(h2, 1, 1)
        self.out_offset = nn.Conv2d(h2, 2, 1)
        for m in (self.out_scale, self.out_offset):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.register_buffer("log2_scales", torch.log2(torch.tensor(cfg.scales)),
                             persistent=False)

    # ------------------------------------------------------------------ features
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        f = self.backbone(images)[self.level]
        return _group_l2_normalize(self.proj(f), self.cfg.corr_groups)

    def query_features(self, query: torch.Tensor) -> torch.Tensor:
        """Correlation features of the query, ``(B, feat_dim, ceil(H'/st), ceil(W'/st))``.

        ``H'``/``W'`` are ``H``/``W`` padded (bottom/right, value 0) to multiples of 16. NaN and
        inf pixels are replaced by 0.

        Raises:
            ValueError: not ``(B, 3, H, W)``, not floating point, or ``H`` or ``W`` < 16.
        """
        if query.dim() != 4 or query.shape[1] != 3:
            raise ValueError(f"query must be (B, 3, H, W), got shape {tuple(query.shape)}")
        if not query.is_floating_point():
            raise ValueError(f"query must be float RGB in [0, 1], got {query.dtype} "
                             "(divide 8-bit images by 255)")
        H, W = int(query.shape[-2]), int(query.shape[-1])
        if H < 16 or W < 16:
            raise ValueError(f"query image {W}x{H} is too small: the detector needs at least "
                             "16x16 pixels (resize or pad the image)")
        q = _sanitize(query.float())
        m = self.backbone.max_stride
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            q = F.pad(q, (0, pw, 0, ph))
        return self._features(q)

    def encode_references(self, ref_images: torch.Tensor) -> RefFeatures:
        """Encode an object's reference views once (not per frame).

        Args:
            ref_images: ``(N, 3, S, S)`` in ``[0, 1]``, sphere filling each crop.

        Returns:
            :class:`RefFeatures`, kernels for every scale of the config. Differentiable
            (training encodes references every step); wrap in ``torch.no_grad()`` at runtime.
        """
        if ref_images.dim() != 4 or ref_images.shape[1] != 3 or \
                ref_images.shape[2] != ref_images.shape[3] or ref_images.shape[0] < 1:
            raise ValueError("ref_images must be (N, 3, S, S) with N >= 1, got shape "
                             f"{tuple(ref_images.shape)}")
        if not ref_images.is_floating_point():
            raise ValueError(f"ref_images must be float RGB in [0, 1], got {ref_images.dtype} "
                             "(divide 8-bit images by 255)")
        refs = _sanitize(ref_images.float())
        st, m = self.cfg.stride, self.cfg.context_cells
        kernels = []
        for s, k in zip(self.cfg.scales, self.ksizes):
            canvas = st * (k + 2 * m)
            center = st * (m + (k - 1) / 2.0)  # pixel of the centre cell of the kernel
            img = _place_references(refs, canvas, center, self.cfg.ref_size * s)
            f = self._features(img)[:, :, m:m + k, m:m + k]
            kernels.append(f / float(k * k))
        return RefFeatures(tuple(kernels))

    # ------------------------------------------------------------------ heads
    def detect(self, qfeat: torch.Tensor, refs: RefFeatures) -> DetectorOutput:
        """Correlation head on precomputed :meth:`query_features` for one object."""
        cfg = self.cfg
        if len(refs.kernels) != len(self.ksizes):
            raise ValueError(f"refs have {len(refs.kernels)} scales, detector expects "
                             f"{len(self.ksizes)}: encode them with this detector")
        b, c, h, w = qfeat.shape
        g = cfg.corr_groups
        n = refs.kernels[0].shape[0]
        corr = []
        for kern, k in zip(refs.kernels, self.ksizes):
            if tuple(kern.shape[1:]) != (c, k, k):
                raise ValueError(f"reference kernel shape {tuple(kern.shape)} does not match "
                                 f"(N, {c}, {k}, {k}): encode them with this detector")
            wgt = kern.reshape(n, g, c // g, k, k).transpose(0, 1).reshape(g * n, c // g, k, k)
            r = F.conv2d(qfeat, wgt.to(qfeat.dtype), padding=k // 2, groups=g)
            corr.append(r.reshape(b, g, n, h, w))
        x = torch.stack(corr, dim=3)  # (B, G, N, S, h, w)
        n_s = x.shape[3]
        x = x.transpose(1, 2).reshape(b * n, g, n_s, h, w)
        x = self.corr3d(x)  # (B*N, H3, S, h, w)
        x = x.reshape(b, n, x.shape[1], n_s, h, w).amax(dim=1)  # max over references
        scale_logits = self.scale_head(x)[:, 0]  # (B, S, h, w)
        y = self.head2d(x.reshape(b, -1, h, w))
        prior = (torch.softmax(scale_logits, dim=1)
                 * self.log2_scales.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        return DetectorOutput(
            heatmap_logits=self.out_heat(y),
            log2_scale=prior + self.out_scale(y),
            offset=0.5 * torch.tanh(self.out_offset(y)),
            scale_logits=scale_logits,
            stride=cfg.stride,
        )

    def forward(self, query: torch.Tensor, refs: RefFeatures) -> DetectorOutput:
        """Detect one object (its encoded references) in a batch of query images.

        Args:
            query: ``(B, 3, H, W)`` in ``[0, 1]``, any ``H, W >= 16`` (padded to multiples of
                16 inside; the grid covers the padded image).
            refs: :class:`RefFeatures` from :meth:`encode_references`.
        """
        return self.detect(self.query_features(query), refs)

    def forward_multi(self, query: torch.Tensor,
                      refs_list: Sequence[RefFeatures]) -> List[DetectorOutput]:
        """Several objects in the same frame(s): backbone once, correlation head per object."""
        qf = self.query_features(query)
        return [self.detect(qf, r) for r in refs_list]


class DetectorExport(nn.Module):
    """Export/TensorRT view: ``forward(query, *kernels) -> (heatmap_logits, log2_scale, offset)``.

    The kernels are those of :class:`RefFeatures` in scale order (one input per scale).
    Checked here: ``torch.onnx.export(DetectorExport(det), (query, *refs.kernels), path,
    dynamo=True, dynamic_shapes=DetectorExport.dynamic_shapes(n_scales),
    input_names=..., output_names=...)`` with onnx/onnxscript/onnxruntime gives an ONNX model
    with dynamic batch, ``H, W`` (multiples of 16) and number of references that matches torch
    in onnxruntime to ~1e-6; the TorchScript exporter (``dynamo=False``) works for static shapes
    only (it cannot export a Conv whose kernel count is dynamic).
    """

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, query: torch.Tensor, *kernels: torch.Tensor):
        out = self.detector(query, RefFeatures(tuple(kernels)))
        return out.heatmap_logits, out.log2_scale, out.offset

    @staticmethod
    def input_names(n_scales: int) -> List[str]:
        return ["query"] + [f"kernel{i}" for i in range(n_scales)]

    output_names = ["heatmap_logits", "log2_scale", "offset"]

    @staticmethod
    def dynamic_shapes(n_scales: int, max_batch: int = 64, max_side: int = 4096,
                       max_refs: int = 1024):
        """``dynamic_shapes`` for ``torch.onnx.export(dynamo=True)`` / ``torch.export``:
        dynamic batch, ``H = 16 h``, ``W = 16 w`` and number of references."""
        from torch.export import Dim

        h16 = Dim("h16", min=1, max=max_side // 16)
        w16 = Dim("w16", min=1, max=max_side // 16)
        n = Dim("n_refs", min=1, max=max_refs)
        query = {0: Dim("batch", min=1, max=max_batch), 2: 16 * h16, 3: 16 * w16}
        return (query, tuple({0: n} for _ in range(n_scales)))


# ---------------------------------------------------------------------- decoding
def _valid_cells(h: int, w: int, image_hw: Tuple[int, int], stride: int) -> np.ndarray:
    """Cells whose centre lies inside the original (unpadded) image."""
    H, W = image_hw
    rows = stride * np.arange(h) <= H - 0.5
    cols = stride * np.arange(w) <= W - 0.5
    return rows[:, None] & cols[None, :]


def _detection_at(b: int, i: int, j: int, logits: np.ndarray, log2s: np.ndarray,
                  off: np.ndarray, ref_size: float, stride: int) -> Detection:
    dx, dy = float(off[b, 0, i, j]), float(off[b, 1, i, j])
    ls = float(log2s[b, 0, i, j])
    logit = float(logits[b, 0, i, j])
    score = 1.0 / (1.0 + math.exp(-min(max(logit, -80.0), 80.0))) if math.isfinite(logit) else 0.0
    return Detection(
        center_xy=np.array([stride * (j + dx), stride * (i + dy)], dtype=np.float64),
        box_size=float(ref_size * 2.0 ** ls),
        score=score,
        log2_scale=ls,
        cell=(int(i), int(j)),
    )


def _to_np(output: DetectorOutput):
    def f(t, nan):
        return np.nan_to_num(t.detach().float().cpu().numpy(), nan=nan, posinf=nan, neginf=nan)
    return f(output.heatmap_logits, -1e9), f(output.log2_scale, 0.0), f(output.offset, 0.0)


def decode(output: DetectorOutput, image_hw: Tuple[int, int], ref_size: float = 120,
           stride: Optional[int] = None) -> List[Detection]:
    """Best detection per batch item: argmax cell (+ offset), in original image pixels.

    Args:
        output: :class:`DetectorOutput`.
        image_hw: ``(H, W)`` of the original (unpadded) query; cells centred in the padding
            are ignored.
        ref_size: the config's ``ref_size`` (px of sphere diameter at log2 scale 0).
        stride: pixels per cell; default ``output.stride``.

    Returns:
        One :class:`Detection` per batch item (always, whatever its score).
    """
    return [d[0] for d in decode_topk(output, image_hw, ref_size, stride, k=1, nms=False)]


def decode_topk(output: DetectorOutput, image_hw: Tuple[int, int], ref_size: float = 120,
                stride: Optional[int] = None, k: int = 5, nms: bool = True,
                min_score: float = 0.0) -> List[List[Detection]]:
    """Up to ``k`` detections per batch item, best first.

    With ``nms`` only local maxima of the heatmap (3x3 neighbourhood) are candidates, so one
    object does not fill the list with its neighbouring cells. Candidates below ``min_score``
    are dropped, except that every item keeps at least its best cell.
    """
    stride = int(output.stride if stride is None else stride)
    logits, log2s, off = _to_np(output)
    B, _, h, w = logits.shape
    valid = _valid_cells(h, w, image_hw, stride)
    results = []
    for b in range(B):
        lg = logits[b, 0]
        cand = valid
        if nms:
            t = torch.from_numpy(np.ascontiguousarray(lg))[None, None]
            cand = cand & (F.max_pool2d(t, 3, stride=1, padding=1) == t)[0, 0].numpy()
        masked = np.where(cand, lg, -np.inf)
        dets = []
        for flat in np.argsort(-masked, axis=None, kind="stable")[:max(1, int(k))]:
            i, j = divmod(int(flat), w)
            if not np.isfinite(masked[i, j]):
                break
            d = _detection_at(b, i, j, logits, log2s, off, ref_size, stride)
            if d.score >= min_score or not dets:
                dets.append(d)
        if not dets:  # cannot happen with a non-empty grid; kept for robustness
            i, j = np.unravel_index(int(np.argmax(np.where(valid, lg, -np.inf))), (h, w))
            dets.append(_detection_at(b, int(i), int(j), logits, log2s, off, ref_size, stride))
        results.append(dets)
    return results


# ---------------------------------------------------------------------- geometry
def _virtual_focal(K: np.ndarray) -> float:
    K = np.asarray(K, dtype=np.float64)
    return float(math.sqrt(K[0, 0] * K[1, 1]))


def initial_translation(center_xy: np.ndarray, box_size_px: Union[float, np.ndarray],
                        K: np.ndarray) -> np.ndarray:
    """Translation of the normalized object (unit sphere) from its detected centre and size.

    Derivation: rotate the camera about its centre so that its optical axis goes through the
    object centre (a "virtual camera" whose principal point is the detected centre) with focal
    length ``f = sqrt(fx fy)`` (the geometric mean, exact for square pixels and the best
    single focal for mildly non-square ones). A sphere of radius 1 at distance ``d`` subtends
    the half-angle ``alpha = asin(1 / d)`` and images as a circle of diameter
    ``box = 2 f tan(alpha)`` centred on the principal point. Hence
    ``alpha = atan(box / (2 f))`` and ``d = 1 / sin(alpha) = sqrt(1 + x^2) / x`` with
    ``x = box / (2 f)``. The object centre lies on the back-projected ray of the centre pixel at
    distance ``d`` (distance, not depth): ``t = d * r / |r|`` with ``r = K^-1 [u, v, 1]``.
    Inverse: :func:`project_sphere`.

    Args:
        center_xy: ``(..., 2)`` projected sphere centre ``(u, v)``, pixels.
        box_size_px: ``(...)`` apparent sphere diameter (virtual camera), pixels, > 0.
        K: ``(3, 3)`` intrinsics of the query image.

    Returns:
        ``t``, ``(..., 3)`` in normalized object units (multiply by the object's scale for
        meters, see :class:`~sixd_pose_ros.geometry.normalization.ObjectNormalization`).
    """
    c = np.asarray(center_xy, dtype=np.float64)
    box = np.asarray(box_size_px, dtype=np.float64)
    if np.any(~(box > 0)):
        raise ValueError(f"box_size_px must be > 0, got {box_size_px}")
    x = box / (2.0 * _virtual_focal(K))
    d = np.sqrt(1.0 + x * x) / x
    ray = backproject_pixels(c, np.ones(c.shape[:-1]), K)
    return ray * (d / np.linalg.norm(ray, axis=-1))[..., None]


def project_sphere(t: np.ndarray, K: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Projected centre and apparent diameter of the unit sphere at ``t`` (normalized units).

    The same definitions the detector is trained with (see :func:`initial_translation`):
    centre = ``project(t, K)``; diameter = ``2 f tan(asin(1 / |t|))``, ``f = sqrt(fx fy)``.

    Args:
        t: ``(..., 3)`` sphere centre in the camera frame, ``z > 0``, ``|t| > 1``.
        K: ``(3, 3)``.

    Returns:
        ``(center_xy (..., 2), box_size_px (...))``.
    """
    t = np.asarray(t, dtype=np.float64)
    d = np.linalg.norm(t, axis=-1)
    if np.any(~(d > 1.0)) or np.any(~(t[..., 2] > 0)):
        raise ValueError("the unit sphere must lie in front of the camera (|t| > 1, z > 0)")
    box = 2.0 * _virtual_focal(K) / np.sqrt(d * d - 1.0)  # 2 f tan(asin(1/d))
    return project(t, K), box


# ---------------------------------------------------------------------- training targets
@dataclass
class DetectorTargets:
    """Training targets on the detector's grid (see :func:`targets_from_ground_truth`).

    Attributes:
        heatmap: ``(B, 1, h, w)`` soft labels in ``[0, 1]``; > 0 exactly at positive cells.
        log2_scale: ``(B, 1, h, w)``, ``log2(box / ref_size)`` (broadcast on the grid).
        offset: ``(B, 2, h, w)``, centre minus cell, in cells, on the centre cell.
        positive: ``(B, 1, h, w)`` bool, cells supervised for heatmap positives and scale.
        center: ``(B, 1, h, w)`` bool, the single cell nearest to the centre (offset loss).
    """

    heatmap: torch.Tensor
    log2_scale: torch.Tensor
    offset: torch.Tensor
    positive: torch.Tensor
    center: torch.Tensor


def targets_from_ground_truth(center_xy, box_size_px, feature_hw: Tuple[int, int],
                              stride: int, ref_size: float = 120, sigma: float = 0.75,
                              device: Union[str, torch.device] = "cpu") -> DetectorTargets:
    """Heatmap / scale / offset targets from ground-truth sphere centres and sizes.

    Positives: the cell nearest to the projected centre ``c = center_xy / stride`` (rounded)
    and its 8 neighbours (all within 1.5 cells of ``c``), with CenterNet-style soft labels
    ``exp(-|cell - nearest|^2 / (2 sigma^2))`` (1 at the nearest cell, so the argmax is the cell
    whose offset ``c - nearest`` lies in ``[-0.5, 0.5]``). Scale target ``log2(box/ref_size)``
    at all positives; offset target at the nearest cell only. Items whose centre is NaN (object
    absent) or whose nearest cell is off the grid get no positives.

    Args:
        center_xy: ``(B, 2)`` or ``(2,)`` pixels (``project_sphere`` of the GT pose).
        box_size_px: ``(B,)`` or scalar, apparent sphere diameter, pixels.
        feature_hw: ``(h, w)`` of the detector output grid.
        stride: pixels per cell.
        ref_size: as in the config.
        sigma: soft-label width, cells.

    Returns:
        :class:`DetectorTargets` (float32 / bool tensors on ``device``).
    """
    c = torch.as_tensor(np.asarray(center_xy, dtype=np.float64), dtype=torch.float64)
    c = c.reshape(-1, 2)
    box = torch.as_tensor(np.asarray(box_size_px, dtype=np.float64),
                          dtype=torch.float64).reshape(-1)
    if box.numel() == 1 and c.shape[0] > 1:
        box = box.expand(c.shape[0])
    if box.shape[0] != c.shape[0]:
        raise ValueError(f"{c.shape[0]} centres but {box.shape[0]} box sizes")
    B = c.shape[0]
    h, w = int(feature_hw[0]), int(feature_hw[1])
    cc = c / stride  # (B, 2) in cells (x, y)
    present = torch.isfinite(cc).all(dim=1) & torch.isfinite(box) & (box > 0)
    cc = torch.where(present[:, None], cc, torch.full_like(cc, -1e6))
    nearest = torch.round(cc)
    in_grid = present & (nearest[:, 0] >= 0) & (nearest[:, 0] < w) & \
        (nearest[:, 1] >= 0) & (nearest[:, 1] < h)
    jj = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    ii = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    dx = jj - nearest[:, 0].view(B, 1, 1)
    dy = ii - nearest[:, 1].view(B, 1, 1)
    pos = (dx.abs() <= 1) & (dy.abs() <= 1) & in_grid.view(B, 1, 1)
    heat = torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma)) * pos
    ctr = (dx == 0) & (dy == 0) & in_grid.view(B, 1, 1)
    safe_box = torch.where(present, box, torch.full_like(box, float(ref_size)))
    ls = torch.log2(safe_box / ref_size).view(B, 1, 1).expand(B, h, w)
    off = (cc - nearest).view(B, 2, 1, 1).expand(B, 2, h, w) * ctr[:, None]
    f32 = dict(dtype=torch.float32, device=device)
    return DetectorTargets(
        heatmap=heat[:, None].to(**f32),
        log2_scale=ls[:, None].to(**f32).contiguous(),
        offset=off.to(**f32).contiguous(),
        positive=pos[:, None].to(device),
        center=ctr[:, None].to(device),
    )


def detector_loss(output: DetectorOutput, targets: DetectorTargets, w_heatmap: float = 1.0,
                  w_scale: float = 1.0, w_offset: float = 1.0) -> dict:
    """Balanced BCE on the heatmap + L2 on log2 scale (positives) and offset (centre cell).

    Heatmap: mean BCE over positive cells and mean BCE over negative cells, averaged (each
    half weighs the same whatever the ratio of positives to negatives), over the whole batch.

    Returns:
        ``{"loss", "heatmap", "scale", "offset"}`` scalar tensors (``loss`` is the weighted sum).
    """
    x = output.heatmap_logits
    if x.shape != targets.heatmap.shape or output.offset.shape != targets.offset.shape:
        raise ValueError(f"output grid {tuple(x.shape)} and target grid "
                         f"{tuple(targets.heatmap.shape)} differ")
    pos = targets.positive.to(x.dtype)
    neg = 1.0 - pos
    bce = F.binary_cross_entropy_with_logits(x, targets.heatmap, reduction="none")
    l_pos = (bce * pos).sum() / pos.sum().clamp(min=1.0)
    l_neg = (bce * neg).sum() / neg.sum().clamp(min=1.0)
    l_heat = 0.5 * (l_pos + l_neg)
    l_scale = (((output.log2_scale - targets.log2_scale) ** 2) * pos).sum() / \
        pos.sum().clamp(min=1.0)
    ctr = targets.center.to(x.dtype)
    l_off = (((output.offset - targets.offset) ** 2).sum(dim=1, keepdim=True) * ctr).sum() / \
        ctr.sum().clamp(min=1.0)
    total = w_heatmap * l_heat + w_scale * l_scale + w_offset * l_off
    return {"loss": total, "heatmap": l_heat, "scale": l_scale, "offset": l_off}
