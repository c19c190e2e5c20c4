"""LINEMOD (Hinterstoisser et al.) through OpenCV's ``cv2.linemod``, as a known-model peer.

A classical baseline nobody here wrote: OpenCV's template matcher on quantized colour-gradient
orientations (plus surface-normal orientations from depth, the "MOD" in LINEMOD). Templates are
renders of the same mesh by our renderer, so the peer and our estimator see the same object.

What is ours is only the glue around ``cv2.linemod``:

- Templates: icosphere viewpoints x in-plane angles x apparent sizes, rendered with a nominal
  focal length ``focal_px`` into a square canvas with the object's bounding-box centre at the
  canvas centre. LINEMOD is neither rotation- nor scale-invariant, so each (rotation, size)
  pair is its own template; the count is ``views x n_inplane x len(template_sizes_px)``.
- One template set serves both modes: frames with depth are matched by LINEMOD (colour
  gradients + depth normals); frames without depth by LINE (colour gradients only), a second
  detector built from the colour part of the same templates (``addSyntheticTemplate``, no
  re-render).
- With depth, the best matches are re-ranked by how well the observed depth follows the
  template's rendered relief (the original paper's depth check; see LinemodConfig).
- Pose from the best match: the template's rotation, corrected for the viewing ray of the
  matched centre (a template shows the object on the optical axis; off-axis the same image
  means a rotation by the ray's angle); the distance from the template's render distance
  scaled by the frame's focal length over ``focal_px``; with depth, the object is moved along
  its viewing ray until the template's depth median matches the observed depth median in the
  matched silhouette.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.normalization import normalization_from_points
from sixd_pose_ros.geometry.pinhole import backproject_pixels
from sixd_pose_ros.geometry.sampling import viewpoint_rotation_grid
from sixd_pose_ros.pipeline.types import Frame, ObjectPose
from sixd_pose_ros.render.renderer import RenderMesh, render

LOG = logging.getLogger(__name__)

_CLASS_ID = "object"


class PeerUnavailableError(SixdPoseError):
    """A peer's third-party library is missing or cannot load; the message names the package."""


def require_linemod():
    """The ``cv2.linemod`` module, or a PeerUnavailableError naming the pip package."""
    linemod = getattr(cv2, "linemod", None)
    if linemod is None or not hasattr(linemod, "getDefaultLINEMOD"):
        raise PeerUnavailableError(
            "cv2.linemod is missing: it ships only with OpenCV's contrib modules; replace "
            "opencv-python(-headless) with 'pip install opencv-contrib-python-headless'")
    return linemod


@dataclass(frozen=True)
class LinemodConfig:
    """Template sampling and matching settings.

    The defaults (42 views x 12 in-plane angles x 3 sizes = 1512 templates) build in about
    10-20 s on one CPU core; ``view_subdivisions=2`` (162 views) is the finer, 4x slower grid.
    """

    view_subdivisions: int = 1  # icosphere level: 42 views over the full sphere (162 for 2)
    n_inplane: int = 12  # in-plane angles (30 degree steps)
    # Apparent object size (bounding-sphere diameter, pixels at focal_px) of each template
    # scale; LINEMOD tolerates about +-20 % of scale around each.
    template_sizes_px: tuple[float, ...] = (70.0, 110.0, 170.0)
    focal_px: float = 600.0  # focal length the templates are rendered with
    # cv2.linemod similarity thresholds (percent). Colour gradients alone fire on every
    # cluttered background (126k matches above 70 % on one synthetic frame, 0.4 s of Python
    # objects), so LINE without depth needs the higher one.
    match_threshold_rgbd: float = 70.0
    match_threshold_rgb: float = 80.0
    # Post-processing after the original paper's depth check: with depth, the best
    # n_candidates matches are re-scored by the fraction of the template's silhouette samples
    # whose observed depth agrees with the rendered one (relative to their medians) within
    # depth_tol_m; score = similarity x that fraction. (The paper's colour check is left out:
    # on our jittered, tinted frames it rejected right matches more often than wrong ones.)
    n_candidates: int = 100
    n_check_samples: int = 128
    depth_tol_m: float = 0.02
    min_score: float = 0.5  # below it the object is reported absent
    render_batch: int = 64


@dataclass
class _TemplateInfo:
    R: np.ndarray  # (3, 3) object-to-camera rotation of the render (object on the optical axis)
    distance: float  # meters, render distance of the object's centre at focal_px
    offset: np.ndarray  # (2,) canvas pixel of the object's centre minus the template's top-left
    mask: np.ndarray  # (h, w) bool silhouette inside the template's bounding box
    depth_median: float  # meters, median rendered depth inside the silhouette
    samples: np.ndarray  # (n, 2) int pixel (x, y) of silhouette samples, relative to the top-left
    sample_dz: np.ndarray  # (n,) float32 meters, rendered depth minus depth_median


def _ray_rotation(direction: np.ndarray) -> np.ndarray:
    """Smallest rotation taking the optical axis (0, 0, 1) onto ``direction`` (3,)."""
    d = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], d)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        return np.eye(3)
    angle = float(np.arctan2(s, d[2]))
    return cv2.Rodrigues(axis / s * angle)[0]


class LinemodPeer:
    """Estimator (pipeline.types) for one object: cv2.linemod templates of its mesh.

    Args:
        mesh: the object, meters (see render.mesh_io.load_mesh).
        name: the object's name in the output.
        config: template sampling and matching settings.
    """

    def __init__(self, mesh: trimesh.Trimesh, name: str, config: LinemodConfig = LinemodConfig()) -> None:
        self._linemod = require_linemod()
        self.name = name
        self.config = config
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        norm = normalization_from_points(vertices)
        self.center = norm.center  # (3,) object frame, meters: what the templates centre on
        self.radius = float(norm.scale)
        t0 = time.perf_counter()
        self.detector_rgbd = self._linemod.getDefaultLINEMOD()
        self.templates: list[_TemplateInfo] = []
        self._build(RenderMesh.from_trimesh(mesh))
        self.detector_rgb = self._colour_only_detector()
        self.build_s = time.perf_counter() - t0
        if not self.templates:
            raise SixdPoseError(f"no LINEMOD template could be extracted from the mesh of {name!r}: "
                                f"it renders without enough gradients; check the mesh unit and "
                                f"that template_sizes_px are large enough (>= 40 px)")
        LOG.info("linemod peer %s: %d templates in %.1f s", name, len(self.templates), self.build_s)

    # -- building ---------------------------------------------------------------------------

    def _build(self, rmesh: RenderMesh) -> None:
        cfg = self.config
        rotations = viewpoint_rotation_grid(cfg.view_subdivisions, cfg.n_inplane).astype(np.float64)
        for size_px in cfg.template_sizes_px:
            distance = cfg.focal_px * 2.0 * self.radius / float(size_px)
            canvas = int(np.ceil(size_px * 1.15)) + 16  # room for gradients at the silhouette
            c = 0.5 * (canvas - 1)
            K = np.array([[cfg.focal_px, 0.0, c], [0.0, cfg.focal_px, c], [0.0, 0.0, 1.0]])
            for s in range(0, len(rotations), cfg.render_batch):
                R = rotations[s:s + cfg.render_batch]
                t = np.array([0.0, 0.0, distance]) - R @ self.center
                out = render([rmesh], R, t, K, canvas, canvas)
                for i in range(len(R)):
                    self._add(out.rgb[i], out.depth[i], out.mask[i] == 1, R[i], distance, c)

    def _add(self, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray, R: np.ndarray,
             distance: float, c: float) -> None:
        if mask.sum() < 16:
            return
        sources = [np.ascontiguousarray(rgb[..., ::-1]), _depth_mm(depth)]
        template_id, bb = self.detector_rgbd.addTemplate(sources, _CLASS_ID, mask.astype(np.uint8) * 255)
        if template_id < 0:
            return  # too few features at this view and size (tiny or texture-less silhouette)
        x, y, w, h = (int(v) for v in bb)
        crop = mask[max(y, 0):y + h, max(x, 0):x + w]
        ys, xs = np.nonzero(mask)
        pick = np.linspace(0, len(xs) - 1, min(self.config.n_check_samples, len(xs))).astype(int)
        xs, ys = xs[pick], ys[pick]
        median = float(np.median(depth[mask]))
        self.templates.append(_TemplateInfo(
            R=R.copy(), distance=distance, offset=np.array([c - x, c - y]), mask=crop,
            depth_median=median, samples=np.stack([xs - x, ys - y], axis=1),
            sample_dz=(depth[ys, xs] - median).astype(np.float32)))

    def _colour_only_detector(self):
        """LINE (colour gradients only) from the colour part of every LINEMOD template."""
        line = self._linemod.getDefaultLINE()
        n_mod = len(self.detector_rgbd.getModalities())
        for template_id in range(len(self.templates)):
            pyramid = self.detector_rgbd.getTemplates(_CLASS_ID, template_id)
            colour = list(pyramid[0::n_mod])  # ordered (level, modality), modality 0 is colour
            line.addSyntheticTemplate(colour, _CLASS_ID)
        return line

    # -- estimating -------------------------------------------------------------------------

    def estimate(self, frame: Frame) -> list[ObjectPose]:
        """At most one pose (the best (re-)scored template match above ``min_score``); [] when none."""
        cfg = self.config
        t0 = time.perf_counter()
        has_depth = frame.depth is not None and bool((frame.depth > 0).any())
        bgr = np.ascontiguousarray(frame.rgb[..., ::-1])
        if has_depth:
            detector, sources, threshold = self.detector_rgbd, [bgr, _depth_mm(frame.depth)], cfg.match_threshold_rgbd
        else:
            detector, sources, threshold = self.detector_rgb, [bgr], cfg.match_threshold_rgb
        try:
            matches, _ = detector.match(sources, threshold, [_CLASS_ID])
        except cv2.error as exc:  # e.g. an image smaller than the templates
            LOG.warning("linemod peer %s: cv2.linemod.match failed (%s); no pose for this frame",
                        self.name, str(exc).strip().splitlines()[-1])
            return []
        match_ms = 1000.0 * (time.perf_counter() - t0)
        if not matches:
            return []
        t1 = time.perf_counter()
        candidates = sorted(matches, key=lambda m: -m.similarity)[:cfg.n_candidates]
        if has_depth:
            scored = [(self._depth_check(m, frame.depth), m) for m in candidates]
        else:
            scored = [(float(m.similarity) / 100.0, m) for m in candidates]
        score, best = max(scored, key=lambda sm: sm[0])
        check_ms = 1000.0 * (time.perf_counter() - t1)
        if score < cfg.min_score:
            return []
        info = self.templates[best.template_id]
        R, t, box = self._pose(frame, best, info, has_depth)
        stage_ms = {"match": match_ms, "check": check_ms, "total": 1000.0 * (time.perf_counter() - t0)}
        return [ObjectPose(name=self.name, R=R, t=t, score=float(score), box=box, stage_ms=stage_ms)]

    def _depth_check(self, match, depth: np.ndarray) -> float:
        """similarity x relative-depth agreement of one match, in [0, 1]."""
        info = self.templates[match.template_id]
        H, W = depth.shape
        xy = info.samples + np.array([match.x, match.y])
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
        observed = depth[xy[inside, 1], xy[inside, 0]]
        valid = observed > 0
        if valid.sum() < 0.25 * len(xy):
            return 0.0  # mostly outside the image or without measurements: no evidence
        residual = observed[valid] - info.sample_dz[inside][valid]
        residual -= np.median(residual)
        # Over all samples in the image: a silhouette sample without a measurement counts
        # against the match (a small template inside a large surface must not score 1).
        agreement = float(np.sum(np.abs(residual) < self.config.depth_tol_m)) / max(int(inside.sum()), 1)
        return float(match.similarity) / 100.0 * agreement

    def _pose(self, frame: Frame, match, info: _TemplateInfo, has_depth: bool):
        K = frame.K
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))
        z = info.distance * focal / self.config.focal_px
        uv = np.array([match.x, match.y], np.float64) + info.offset
        center = backproject_pixels(uv, np.float64(z), K)
        R = _ray_rotation(center) @ info.R
        h, w = info.mask.shape
        box = np.array([match.x, match.y, match.x + w, match.y + h], np.float64)
        if has_depth:
            observed = _masked_depth(frame.depth, info.mask, int(match.x), int(match.y))
            if observed.size >= 0.2 * info.mask.sum():
                expected = info.depth_median * z / info.distance
                center = center * (float(np.median(observed)) / expected)
        t = center - R @ self.center
        return R, t, box


def _masked_depth(depth: np.ndarray, mask: np.ndarray, x: int, y: int) -> np.ndarray:
    """Observed depths (meters, > 0) under ``mask`` placed with its top-left at (x, y)."""
    H, W = depth.shape
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return np.zeros(0, np.float32)
    region = depth[y0:y1, x0:x1]
    sel = mask[y0 - y:y1 - y, x0 - x:x1 - x] & (region > 0)
    return region[sel]


def _depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """cv2.linemod's depth modality reads uint16 millimetres."""
    return np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
