"""Where an object is in the whole image: its templates correlated with frozen pretrained features.

Why: the detector trained from scratch on 2 CPU cores places real objects badly (on the real
YCB-Video validation frames its best peak is a median 37 cm from the object), and without
depth no later stage recovers from a wrong place. The templates (``objects/templates.py``) are
rendered exactly as an object of the template's size looks at one distance; resizing the image
so that an object at depth ``z`` appears at that size makes each template a correlation kernel
over the image's patch features, and the best response says where the object is and, through
the image scale, how far.

The image is encoded once per scale for all objects (``image_scales``); each object uses the
scales at which its depth range fits. To keep the correlation cheap on a CPU, features and
kernels are averaged over 2 x 2 patches (stride 32) and every third in-plane turn is used: the
peaks only need to be close, since the template stage re-crops and recentres each place
(``TemplateMatcher.locate``). Measured on the real validation frames (40 frames, 9 objects,
scales 0.25..1.59): a peak within 0.3 sphere diameters and 25 % of the depth among the top 10
for about 2 of 3 instances; the rest are mostly the pudding box and the similar boxes in clutter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from sixd_pose_ros.engines.backends import Runner
from sixd_pose_ros.engines.export import NetworkSpec, patch_backbone_dynamic_spec
from sixd_pose_ros.objects.templates import TemplateSet
from sixd_pose_ros.models.detector import Detection
from sixd_pose_ros.pipeline.depth_proposals import DepthSegment, DepthSegmentation, SegmentProposal, surface_depth

__all__ = ["FeaturePeak", "ImageFeatures", "ObjectKernels", "encode_image_scales", "image_backbone_spec",
           "image_scales", "peak_fits_depth", "scaled_size"]

_POOL = 2  # patches averaged per side in the correlation (stride 32)


def image_scales(smallest: float = 0.25, largest: float = 1.6, per_octave: int = 3) -> tuple[float, ...]:
    """Image scales a third of an octave apart: the correlation of patch features tolerates
    about +-13 % of size mismatch, which this spacing keeps every object within."""
    n = int(np.floor(np.log2(largest / smallest) * per_octave + 1e-9)) + 1
    return tuple(float(smallest * 2 ** (k / per_octave)) for k in range(n))


@dataclass
class FeaturePeak:
    """One place an object may be: its projected sphere centre (pixels), the depth its size says
    (meters, of the sphere centre), and the correlation score (mean patch cosine, 0..1)."""

    center_xy: np.ndarray
    depth: float
    score: float


@dataclass
class ImageFeatures:
    """The image's pooled patch features at each scale (``{scale: (1, C, h, w)}``)."""

    maps: dict[float, torch.Tensor]
    shape: tuple[int, int]  # (H, W) of the original image


def scaled_size(image_wh: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(W, H)`` of the image resized by ``scale`` as :func:`encode_image_scales` does it (at
    least 32 px: a 2 x 2 pooled cell). The engines' profile is made of these sizes, so both
    must round alike."""
    return max(32, round(image_wh[0] * scale)), max(32, round(image_wh[1] * scale))


def image_backbone_spec(backbone, image_wh: tuple[int, int], scales) -> NetworkSpec:
    """The patch backbone's graph for :func:`encode_image_scales` on ``image_wh`` camera images
    at ``scales``: batch 1, height and width dynamic over every scale's size.

    The TensorRT profile is tuned (``opt``) for the unscaled image: it is the camera's own size,
    the one every other engine is tuned for (``KnownModelConfig.image_size``), and the larger
    scales, which cost the most (pixels grow with the square of the scale), are within 1.6x of
    it per side, where kernels chosen for it still fit well; the small scales are cheap anyway.
    """
    image_wh = (int(image_wh[0]), int(image_wh[1]))
    return patch_backbone_dynamic_spec(backbone, [scaled_size(image_wh, s) for s in scales], image_wh, "image")


def encode_image_scales(backbone, rgb: np.ndarray, scales: list[float], runner: Runner | None = None) -> ImageFeatures:
    """Encode ``rgb`` at every scale (each a backbone pass; the larger ones cost the most).
    ``runner``: the backbone through an inference backend (:func:`image_backbone_spec`);
    None runs the torch module."""
    h, w = rgb.shape[:2]
    maps = {}
    for s in sorted(set(scales)):
        size = scaled_size((w, h), s)
        image = rgb if s == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        feats = torch.from_numpy(backbone.encode(image[None], runner=runner)[0]).permute(2, 0, 1)[None]
        maps[s] = torch.nn.functional.avg_pool2d(feats, _POOL, ceil_mode=True)
    return ImageFeatures(maps, (h, w))


def encode_for_kernels(backbone, rgb: np.ndarray, K: np.ndarray, kernels: list["ObjectKernels"],
                       feature_scales: tuple[float, float], depth_range: tuple[float, float],
                       runner: Runner | None = None) -> ImageFeatures:
    """The image at every scale (of ``image_scales(*feature_scales)``) at which some object's
    kernels find it within ``depth_range``: one backbone pass per scale for all objects."""
    every = image_scales(*feature_scales)
    scales = {s for k in kernels for s in k.scales_in_range(every, K, depth_range)}
    return encode_image_scales(backbone, rgb, sorted(scales) or [every[-1]], runner)


class ObjectKernels:
    """One object's templates as correlation kernels, and the peaks they find in an image."""

    def __init__(self, templates: TemplateSet, radius: float, inplane_step: int = 3) -> None:
        """``radius``: the object's bounding sphere (meters), the one its templates fill."""
        n_inplane = templates.grid_settings[1]
        keep = np.flatnonzero(np.arange(len(templates)) % n_inplane % max(1, inplane_step) == 0)
        mask = templates.patch_mask[keep].astype(np.float32)
        weights = mask / np.maximum(mask.sum((1, 2), keepdims=True), 1.0)  # a score is a mean cosine
        k = torch.from_numpy(templates.features[keep].astype(np.float32) * weights[..., None]).permute(0, 3, 1, 2)
        self.kernels = torch.nn.functional.avg_pool2d(k, _POOL) * _POOL * _POOL  # sums, not means, over the pool
        self.size = templates.size
        self.radius = float(radius)
        self.cells = self.kernels.shape[-1]

    def scale_for_depth(self, depth: float, focal: float) -> float:
        """The image scale at which this object at ``depth`` fills its templates' crops."""
        return self.size * depth / (2.0 * focal * self.radius)

    def depth_at_scale(self, scale: float, focal: float) -> float:
        return 2.0 * focal * self.radius * scale / self.size

    def scales_in_range(self, scales, K: np.ndarray, depth_range: tuple[float, float]) -> list[float]:
        """The ``scales`` at which this object would stand within ``depth_range`` (meters)."""
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))
        return [s for s in scales if depth_range[0] <= self.depth_at_scale(s, focal) <= depth_range[1]]

    def score_maps(self, image: ImageFeatures, K: np.ndarray, depth_range: tuple[float, float]) -> dict:
        """``{scale: (h, w) best kernel response}`` at the scales whose depth is in range
        (the nearest scale too when none is: a far, small object still gets its best try)."""
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))
        scales = sorted(image.maps)
        wanted = self.scales_in_range(scales, K, depth_range)
        if not wanted:
            target = self.scale_for_depth(float(np.mean(depth_range)), focal)
            wanted = [min(scales, key=lambda s: abs(np.log(s / target)))]
        out = {}
        with torch.no_grad():
            for s in wanted:
                response = torch.nn.functional.conv2d(image.maps[s], self.kernels, padding=self.cells // 2)[0]
                out[s] = response.max(0).values.numpy()
        return out

    def _pixel(self, scale: float, row: float, col: float) -> np.ndarray:
        """Full-resolution pixel of the crop centre when the kernel's top-left cell sits at
        ``(row, col) - cells // 2`` of the pooled map (stride ``16 * _POOL`` in the scaled image)."""
        stride = 16 * _POOL
        return (stride * (np.array([col, row]) - self.cells // 2) + self._half) / scale

    def _cell(self, scale: float, center_xy: np.ndarray) -> tuple[int, int]:
        """The pooled-map ``(row, col)`` whose crop centre is nearest ``center_xy`` (inverse of
        :meth:`_pixel`)."""
        col, row = (np.asarray(center_xy) * scale - self._half) / (16 * _POOL) + self.cells // 2
        return int(round(row)), int(round(col))

    @property
    def _half(self) -> float:
        """The crop centre, pixels from the kernel's top-left pixel in the scaled image."""
        return 16 * _POOL * self.cells / 2.0 - 0.5

    def peaks(self, maps: dict, K: np.ndarray, k: int,
              accept: Callable[[FeaturePeak], bool] | None = None) -> list[FeaturePeak]:
        """Up to ``k`` local maxima over all scales, best first; a peak within half the sphere's
        apparent radius of a better one is the same place (at another size) and is dropped.
        ``accept``: peaks it rejects are skipped before that (with depth: where nothing stands
        off the table, or where the measured depth disagrees with the size)."""
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))
        found = []
        for s, m in maps.items():
            t = torch.from_numpy(m)[None, None]
            is_max = (t == torch.nn.functional.max_pool2d(t, 3, 1, 1))[0, 0].numpy()
            rows, cols = np.nonzero(is_max)
            for r, c in zip(rows, cols):
                found.append(FeaturePeak(self._pixel(s, r, c), self.depth_at_scale(s, focal), float(m[r, c])))
        found.sort(key=lambda p: -p.score)
        kept: list[FeaturePeak] = []
        for p in found:
            if accept is not None and not accept(p):
                continue
            apparent = focal * self.radius / p.depth
            if all(np.linalg.norm(p.center_xy - q.center_xy) > 0.5 * apparent for q in kept):
                kept.append(p)
            if len(kept) == k:
                break
        return kept

    def peak_places(self, maps: dict, K: np.ndarray, k: int, depth: np.ndarray | None,
                    segmentation: DepthSegmentation | None) -> list[tuple[Detection, np.ndarray, None]]:
        """Up to ``k`` peaks as places ``(detection, centre, None)``, the form both estimators
        try. With depth, peaks count only where :func:`peak_fits_depth` says so (unless none
        does: then the plane found is no table, a wall, a bin, the object's own face filling the
        view, and the peaks go unfiltered), and each centre is half a radius behind the measured
        surface there; without depth, at the distance the template scale says."""
        peaks = []
        if segmentation is not None and segmentation.plane is not None:
            peaks = self.peaks(maps, K, k, lambda p: peak_fits_depth(p, segmentation, depth, K, self.radius))
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))
        places = []
        for peak in peaks or self.peaks(maps, K, k):
            distance = peak.depth
            if segmentation is not None:
                distance = surface_depth(depth, peak.center_xy, 0.3 * K[0, 0] * self.radius / peak.depth,
                                         fallback=peak.depth - 0.5 * self.radius) + 0.5 * self.radius
            ray = np.linalg.solve(K, np.array([*peak.center_xy, 1.0]))
            box = 2.0 * focal * self.radius / peak.depth
            places.append((Detection(peak.center_xy, float(box), peak.score, 0.0, (-1, -1)),
                           ray * (distance / ray[2]), None))
        return places

    def segment_places(self, maps: dict, K: np.ndarray, proposals: list[SegmentProposal],
                       k: int) -> list[tuple[Detection, np.ndarray, DepthSegment]]:
        """The ``k`` depth-segment proposals the correlation likes best there, as places; each
        proposal's detection score becomes that correlation."""
        for prop in proposals:
            prop.detection.score = self.score_near(maps, K, prop.detection.center_xy, prop.centre[2])
        best = sorted(proposals, key=lambda p: -p.detection.score)[:k]
        return [(p.detection, p.centre, p.segment) for p in best]

    def score_near(self, maps: dict, K: np.ndarray, center_xy: np.ndarray, depth: float) -> float:
        """The best response within one pooled cell of ``center_xy`` at the scale nearest to what
        ``depth`` needs: what the templates think of a place found otherwise (a depth segment)."""
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))
        if not maps or depth <= 0:
            return 0.0
        target = self.scale_for_depth(depth, focal)
        s = min(maps, key=lambda v: abs(np.log(v / target)))
        m = maps[s]
        r0, c0 = self._cell(s, center_xy)
        window = m[max(0, r0 - 1):max(0, r0 + 2), max(0, c0 - 1):max(0, c0 + 2)]
        return float(window.max()) if window.size else 0.0


def peak_fits_depth(peak: FeaturePeak, segmentation: DepthSegmentation, depth: np.ndarray, K: np.ndarray,
                    radius: float, max_size_ratio: float = 1.3) -> bool:
    """Whether a correlation peak can be an object, by the depth: something stands off the table
    within a third of the object's apparent radius, and at a distance that its size agrees with
    (``peak.depth`` from the template scale vs the measured surface plus half a radius, within
    ``max_size_ratio``; the scales are 1.26x apart). Why: the templates of an untextured mesh
    correlate about as well with busy background (a carpet, the table's edge) as with the real,
    printed object (real YCB-V frames: the pudding box's three best peaks all on the carpet)."""
    h, w = depth.shape
    r = max(2, int(0.3 * K[0, 0] * radius / peak.depth))
    u, v = int(round(peak.center_xy[0])), int(round(peak.center_xy[1]))
    box = (slice(max(0, v - r), min(h, v + r + 1)), slice(max(0, u - r), min(w, u + r + 1)))
    on_segment = segmentation.labels[box] > 0
    if not on_segment.any():
        return False
    measured = float(np.median(depth[box][on_segment])) + 0.5 * radius
    return abs(np.log(measured / peak.depth)) <= np.log(max_size_ratio)
