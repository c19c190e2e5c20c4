"""Accuracy metrics over pose errors: recalls, AP curves and BOP's VSD / MSSD / MSPD.

Small pure functions (own code, after the definitions in Hodan et al., "On evaluation of 6D
object pose estimation", ECCVW 2016, and the BOP Challenge 2019/2020 rules). The per-pose
errors ADD, ADD-S, 2D projection, rotation and translation live in
:mod:`sixd_pose_ros.geometry.pose_errors`; this module adds the symmetry-aware ones and turns
error lists into the numbers a report prints.

Conventions:

* Poses are object-to-camera ``(R (3, 3), t (3,) meters)``; model points ``(N, 3)`` meters in
  the object frame; intrinsics ``K (3, 3)`` pixels; depth images ``(H, W)`` meters, 0 where
  there is no measurement.
* **A missing estimate is an error of** ``inf`` (:data:`MISSING`). ``NaN`` (an error that could
  not be computed) is treated the same: both fail every threshold, so a method cannot raise its
  recall by not answering.
* Recalls for ADD / ADD-S / Prj use ``error <= threshold`` (the usual reading of "within 10 % of
  the diameter"); BOP's average recalls use ``error < threshold`` as bop_toolkit does. Both are
  available through ``recall(..., strict=...)``.
* Symmetries are transforms ``x -> R_s x + t_s`` that map the model onto itself; the identity
  is always part of the set (added when the caller leaves it out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.pinhole import project
from sixd_pose_ros.geometry.pose_errors import transform_points
from sixd_pose_ros.geometry.rotations import geodesic_angle

__all__ = [
    "BOP_MSPD_THRESHOLDS_PX",
    "BOP_MSSD_FRACTIONS",
    "BOP_VSD_DELTA_M",
    "BOP_VSD_TAU_FRACTIONS",
    "BOP_VSD_THETAS",
    "DEFAULT_ROT_THRESHOLDS_DEG",
    "DEFAULT_TRANS_THRESHOLDS_CM",
    "MISSING",
    "EvaluationError",
    "ap_auc",
    "ap_curve",
    "ar_mspd",
    "ar_mssd",
    "ar_vsd",
    "as_symmetry_transforms",
    "has_symmetry",
    "bop_average_recall",
    "depth_to_distance",
    "mspd_error",
    "mssd_error",
    "projection_recall",
    "recall",
    "recall_at_diameter",
    "render_model_depths",
    "symmetric_rotation_error_deg",
    "symmetries_from_models_info",
    "visibility_mask",
    "vsd_error",
    "vsd_from_distances",
]


class EvaluationError(SixdPoseError):
    """Evaluation inputs that cannot be scored (missing depth or mesh, bad shapes, ...)."""


#: The error recorded for a ground-truth instance without an estimate.
MISSING = math.inf

#: REAL275-style rotation thresholds (degrees) and translation thresholds (centimeters).
DEFAULT_ROT_THRESHOLDS_DEG = np.arange(5, 61, 5, dtype=np.float64)  # 5, 10, ..., 60
DEFAULT_TRANS_THRESHOLDS_CM = np.arange(2, 11, 1, dtype=np.float64)  # 2, 3, ..., 10

#: BOP 2019/2020: VSD visibility tolerance (15 mm on all datasets but ITODD's 5 mm).
BOP_VSD_DELTA_M = 0.015
#: Written as k * 5 / 100 so the values are the decimals one reads (no 0.15000000000000002).
_FIVE_TO_FIFTY_PERCENT = np.array([k * 5 / 100 for k in range(1, 11)])
#: VSD misalignment tolerances tau, fractions of the diameter.
BOP_VSD_TAU_FRACTIONS = _FIVE_TO_FIFTY_PERCENT
#: VSD correctness thresholds theta (BOP 2019/2020 averages over all ten; SIXD 2017 used 0.3).
BOP_VSD_THETAS = _FIVE_TO_FIFTY_PERCENT
#: MSSD correctness thresholds, fractions of the diameter.
BOP_MSSD_FRACTIONS = _FIVE_TO_FIFTY_PERCENT
#: MSPD correctness thresholds in pixels for a 640-pixel-wide image (scaled by width / 640).
BOP_MSPD_THRESHOLDS_PX = np.arange(5, 51, 5, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# recalls and AP curves
# --------------------------------------------------------------------------------------------


def _errors(errors: Iterable[float] | np.ndarray) -> np.ndarray:
    e = np.asarray(list(errors) if not isinstance(errors, np.ndarray) else errors, dtype=np.float64)
    if e.size == 0:
        raise ValueError("no errors given: a recall over zero instances is undefined")
    return e


def _passes(errors: np.ndarray, threshold: np.ndarray | float, strict: bool) -> np.ndarray:
    """Element-wise test; NaN compares False, so NaN and inf both fail."""
    with np.errstate(invalid="ignore"):
        return errors < threshold if strict else errors <= threshold


def recall(errors: Iterable[float] | np.ndarray, threshold: float, *, strict: bool = False) -> float:
    """Fraction of instances whose error is within ``threshold``.

    Args:
        errors: one error per ground-truth instance, shape ``(N,)``; ``inf`` (missing estimate)
            and ``NaN`` (not computable) count as failures.
        threshold: same unit as the errors.
        strict: ``error < threshold`` (BOP) instead of ``error <= threshold``.

    Returns:
        Recall in ``[0, 1]``.
    """
    e = _errors(errors)
    return float(np.mean(_passes(e, float(threshold), strict)))


def recall_at_diameter(errors: Iterable[float] | np.ndarray, diameters: float | np.ndarray,
                       fraction: float = 0.1) -> float:
    """ADD / ADD-S recall: error <= ``fraction`` x the object's diameter (meters).

    Args:
        errors: ADD or ADD-S per instance, meters, shape ``(N,)``.
        diameters: one diameter (meters) or one per instance, shape ``(N,)``.
        fraction: 0.1 for the usual "ADD-0.1d".
    """
    e = _errors(errors)
    d = np.broadcast_to(np.asarray(diameters, dtype=np.float64), e.shape)
    return float(np.mean(_passes(e, fraction * d, strict=False)))


def projection_recall(errors_px: Iterable[float] | np.ndarray, threshold_px: float = 5.0) -> float:
    """Prj-5: mean 2D projection error of the model points <= 5 pixels."""
    return recall(errors_px, threshold_px)


def ap_curve(errors: Iterable[float] | np.ndarray,
             thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Accuracy at each threshold: the curves of the REAL275 comparisons.

    Args:
        errors: one error per instance, shape ``(N,)`` (degrees for rotation, centimeters for
            translation, by convention); missing = ``inf``.
        thresholds: shape ``(T,)``, e.g. :data:`DEFAULT_ROT_THRESHOLDS_DEG`.

    Returns:
        Fractions in ``[0, 1]``, shape ``(T,)``, non-decreasing for increasing thresholds.
    """
    e = _errors(errors)
    th = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    return _passes(e[None, :], th[:, None], strict=False).mean(axis=1)


def ap_auc(errors: Iterable[float] | np.ndarray, thresholds: Sequence[float] | np.ndarray) -> float:
    """Area under :func:`ap_curve`, as the mean accuracy over the (evenly spaced) thresholds."""
    return float(np.mean(ap_curve(errors, thresholds)))


# --------------------------------------------------------------------------------------------
# symmetries
# --------------------------------------------------------------------------------------------


def has_symmetry(symmetries: Any = None) -> bool:
    """Whether the object has a symmetry besides the identity: ADD(-S) scores it with ADD-S."""
    return len(as_symmetry_transforms(symmetries)[0]) > 1


def as_symmetry_transforms(symmetries: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalize symmetries to arrays, identity first.

    Args:
        symmetries: ``None`` / empty (no symmetry), an array ``(K, 4, 4)`` or ``(K, 3, 3)``
            (rotations about the origin), a sequence whose items are ``(R, t)`` pairs, 4x4
            matrices or 3x3 rotations, or this function's own ``(R_s, t_s)`` output.
            Translations in meters.

    Returns:
        ``R_s (K', 3, 3)`` and ``t_s (K', 3)``; ``K' = K`` when the identity was in the input,
        else ``K + 1`` with the identity prepended.
    """
    Rs: list[np.ndarray] = [np.eye(3)]
    ts: list[np.ndarray] = [np.zeros(3)]
    items: Iterable[Any]
    if symmetries is None:
        items = []
    elif (isinstance(symmetries, tuple) and len(symmetries) == 2 and np.ndim(symmetries[0]) == 3
          and np.ndim(symmetries[1]) == 2):
        items = list(zip(symmetries[0], symmetries[1]))  # this function's own output
    elif isinstance(symmetries, np.ndarray) and symmetries.ndim == 3:
        items = list(symmetries)
    else:
        items = symmetries
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            R = np.asarray(item[0], dtype=np.float64)
            t = np.asarray(item[1], dtype=np.float64).reshape(-1)
        else:
            m = np.asarray(item, dtype=np.float64)
            if m.shape == (4, 4):
                R, t = m[:3, :3], m[:3, 3]
            elif m.shape == (3, 3):
                R, t = m, np.zeros(3)
            else:
                raise EvaluationError(
                    f"a symmetry transform must be (R, t), a 4x4 or a 3x3 matrix, got shape {m.shape}; "
                    "pass a list of those (translations in meters)")
        if R.shape != (3, 3) or t.shape != (3,) or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            raise EvaluationError(
                f"a symmetry transform needs a finite 3x3 rotation and a 3-vector, got {R.shape} and "
                f"{t.shape}; fix the symmetry list (or models_info.json)")
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
            raise EvaluationError(
                "a symmetry transform's rotation is not a proper rotation (orthonormal, det +1); "
                "reflections are not symmetries of a rigid pose: fix the symmetry list")
        if np.allclose(R, np.eye(3), atol=1e-12) and np.allclose(t, 0.0, atol=1e-12):
            continue  # identity: already first
        Rs.append(R)
        ts.append(t)
    return np.stack(Rs), np.stack(ts)


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula; ``axis`` need not be unit length."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def symmetries_from_models_info(entry: Mapping[str, Any], *, max_sym_disc_step: float = 0.01,
                                unit_scale: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """The discrete set of symmetry transforms of a BOP ``models_info.json`` entry.

    Discrete symmetries are taken as they are (4x4, row-major). A continuous symmetry (axis,
    offset) is sampled the way BOP samples it: as many steps as keep the model point farthest
    from the axis within ``max_sym_disc_step`` x diameter of its neighbour, i.e.
    ``ceil(pi / max_sym_disc_step)`` steps around the circle (315 steps, 1.14 degrees, for
    BOP's 0.01). Every discrete transform is combined with every continuous step (continuous
    applied after discrete); several continuous entries are listed one after another, not
    composed, as in BOP (objects with two continuous axes, i.e. spheres, do not occur there).

    Args:
        entry: one value of ``models_info.json`` (translations in its unit, mm for BOP).
        max_sym_disc_step: see above.
        unit_scale: multiplies the entry's translations; 0.001 turns BOP millimeters into meters.

    Returns:
        ``R_s (K, 3, 3)``, ``t_s (K, 3)`` meters, identity first.
    """
    if max_sym_disc_step <= 0:
        raise EvaluationError("max_sym_disc_step must be > 0 (BOP uses 0.01)")
    disc_R, disc_t = [np.eye(3)], [np.zeros(3)]
    for flat in entry.get("symmetries_discrete", []) or []:
        m = np.asarray(flat, dtype=np.float64)
        if m.size != 16:
            raise EvaluationError(
                f"symmetries_discrete entries must be 16 numbers (a row-major 4x4), got {m.size}; "
                "fix models_info.json")
        m = m.reshape(4, 4)
        disc_R.append(m[:3, :3])
        disc_t.append(m[:3, 3] * unit_scale)
    cont_R, cont_t = [np.eye(3)], [np.zeros(3)]
    steps = math.ceil(math.pi / max_sym_disc_step)
    for sym in entry.get("symmetries_continuous", []) or []:
        try:
            axis = np.asarray(sym["axis"], dtype=np.float64).reshape(3)
            offset = np.asarray(sym.get("offset", [0.0, 0.0, 0.0]), dtype=np.float64).reshape(3) * unit_scale
        except (KeyError, ValueError, TypeError) as exc:
            raise EvaluationError(
                f"symmetries_continuous entry {sym!r} needs 'axis' (3 numbers) and optional 'offset'; "
                "fix models_info.json") from exc
        if np.linalg.norm(axis) == 0:
            raise EvaluationError("a continuous symmetry axis is the zero vector; fix models_info.json")
        for i in range(1, steps):
            R = _axis_rotation(axis, 2.0 * math.pi * i / steps)
            cont_R.append(R)
            cont_t.append(offset - R @ offset)  # rotation about the axis through `offset`
    Rs, ts = [], []
    for Rd, td in zip(disc_R, disc_t):
        for Rc, tc in zip(cont_R, cont_t):
            Rs.append(Rc @ Rd)
            ts.append(Rc @ td + tc)
    return as_symmetry_transforms(list(zip(Rs, ts)))


def symmetric_rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray, symmetries: Any = None) -> float:
    """Smallest rotation angle between ``R_est`` and any pose equivalent to ``R_gt`` (degrees).

    With symmetries, ``R_gt @ R_s`` is as correct as ``R_gt``; without, this is the plain
    geodesic angle. Used for the rotation AP curves, where a cup turned about its axis of
    symmetry should not count as wrong.
    """
    Rs, _ = as_symmetry_transforms(symmetries)
    R_eq = np.asarray(R_gt, dtype=np.float64) @ Rs
    return float(np.degrees(np.min(geodesic_angle(np.asarray(R_est, dtype=np.float64)[None], R_eq))))


# --------------------------------------------------------------------------------------------
# MSSD and MSPD
# --------------------------------------------------------------------------------------------


def _sym_points(R_gt: np.ndarray, t_gt: np.ndarray, points: np.ndarray, Rs: np.ndarray,
                ts: np.ndarray) -> np.ndarray:
    """Model points in the camera frame under each GT-equivalent pose, ``(K, N, 3)``."""
    R_eq = np.asarray(R_gt, dtype=np.float64) @ Rs  # (K, 3, 3)
    t_eq = ts @ np.asarray(R_gt, dtype=np.float64).T + np.asarray(t_gt, dtype=np.float64).reshape(3)
    return points @ np.swapaxes(R_eq, 1, 2) + t_eq[:, None, :]


def _min_over_symmetries(per_sym_max, n_sym: int, chunk: int) -> float:
    best = math.inf
    for start in range(0, n_sym, chunk):  # chunks keep (K, N, 3) small for 315+ symmetries
        best = min(best, float(np.min(per_sym_max(slice(start, start + chunk)))))
    return best


def mssd_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
               points: np.ndarray, symmetries: Any = None, *, chunk: int = 64) -> float:
    """MSSD: ``min_s max_x || P_est x - P_gt S_s x ||`` over model points (meters).

    The maximum (not the mean of ADD) makes it a guarantee on every surface point, which is
    what a robot grasping at a point needs; the minimum over symmetries forgives poses that
    look identical.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    Rs, ts = as_symmetry_transforms(symmetries)
    p_est = transform_points(R_est, t_est, pts)

    def per_sym_max(sl: slice) -> np.ndarray:
        d = _sym_points(R_gt, t_gt, pts, Rs[sl], ts[sl]) - p_est[None]
        return np.sqrt(np.einsum("kni,kni->kn", d, d).max(axis=1))

    return _min_over_symmetries(per_sym_max, len(Rs), chunk)


def mspd_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
               points: np.ndarray, K: np.ndarray, symmetries: Any = None, *, chunk: int = 64) -> float:
    """MSPD: ``min_s max_x || proj(P_est x) - proj(P_gt S_s x) ||`` (pixels).

    The image-space counterpart of :func:`mssd_error`: it ignores errors along the optical
    axis, which an RGB-only method cannot see and an AR overlay does not show.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    Rs, ts = as_symmetry_transforms(symmetries)
    uv_est = project(transform_points(R_est, t_est, pts), K)

    def per_sym_max(sl: slice) -> np.ndarray:
        d = project(_sym_points(R_gt, t_gt, pts, Rs[sl], ts[sl]), K) - uv_est[None]
        return np.sqrt(np.einsum("kni,kni->kn", d, d).max(axis=1))

    return _min_over_symmetries(per_sym_max, len(Rs), chunk)


# --------------------------------------------------------------------------------------------
# VSD
# --------------------------------------------------------------------------------------------


def depth_to_distance(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Turn a depth image (z, meters) into distances from the camera center along each ray.

    BOP compares distances rather than depths so that the tolerances mean the same at the
    image border as at the center. 0 (no measurement) stays 0.

    Args:
        depth: ``(H, W)`` meters.
        K: ``(3, 3)`` intrinsics.

    Returns:
        ``(H, W)`` float64 meters.
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise EvaluationError(f"a depth image must be (H, W), got shape {d.shape}")
    return d * _ray_scale(K, d.shape[1], d.shape[0])


def _ray_scale(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Length of each pixel's ray per unit of depth, ``(H, W)``."""
    K = np.asarray(K, dtype=np.float64)
    y = (np.arange(height, dtype=np.float64)[:, None] - K[1, 2]) / K[1, 1]
    x = (np.arange(width, dtype=np.float64)[None, :] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.sqrt(x * x + y * y + 1.0)


def visibility_mask(dist_test: np.ndarray, dist_model: np.ndarray, delta: float) -> np.ndarray:
    """BOP 2019 visibility: where the rendered model is seen in the observed image.

    A model pixel (``dist_model > 0``) is visible when it is not more than ``delta`` behind the
    observed surface (``dist_model - dist_test <= delta``), or when the sensor gave no
    measurement there (``dist_test == 0``): a hole in the depth is not evidence of occlusion.

    Args:
        dist_test, dist_model: ``(H, W)`` distance images (meters), 0 = none.
        delta: tolerance, meters.

    Returns:
        ``(H, W)`` bool.
    """
    dist_test = np.asarray(dist_test, dtype=np.float64)
    dist_model = np.asarray(dist_model, dtype=np.float64)
    if dist_test.shape != dist_model.shape:
        raise EvaluationError(f"observed depth {dist_test.shape} and rendered depth {dist_model.shape} "
                              "differ in size; render at the observed image's size")
    return (dist_model > 0) & ((dist_model - dist_test <= delta) | (dist_test == 0))


def vsd_from_distances(dist_est: np.ndarray, dist_gt: np.ndarray, dist_test: np.ndarray,
                       delta: float, taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """Visible Surface Discrepancy for each tolerance ``tau`` (BOP's step cost).

    The visible masks: ``V_gt`` by :func:`visibility_mask`; ``V_est`` likewise, plus every
    pixel where the estimate covers a pixel visible in the ground truth (the estimate is not
    excused for hiding behind the very surface it should explain). Over ``U = V_est | V_gt``,
    a pixel costs 1 unless it is in both masks and the two renderings agree within ``tau``;
    VSD is the mean cost, 1 when ``U`` is empty.

    Args:
        dist_est, dist_gt: rendered distance images at the estimated / true pose, ``(H, W)``.
        dist_test: observed distance image, ``(H, W)``, 0 = no measurement.
        delta: visibility tolerance, meters.
        taus: misalignment tolerances, meters, shape ``(T,)``.

    Returns:
        Errors in ``[0, 1]``, shape ``(T,)``.
    """
    visib_gt = visibility_mask(dist_test, dist_gt, delta)
    visib_est = visibility_mask(dist_test, dist_est, delta) | (visib_gt & (np.asarray(dist_est) > 0))
    inter = visib_gt & visib_est
    n_union = int(np.count_nonzero(visib_gt | visib_est))
    taus = np.asarray(taus, dtype=np.float64).reshape(-1)
    if n_union == 0:
        return np.ones(len(taus))
    diff = np.abs(np.asarray(dist_est, dtype=np.float64)[inter] - np.asarray(dist_gt, dtype=np.float64)[inter])
    n_outside = n_union - int(np.count_nonzero(inter))
    costs = (diff[None, :] >= taus[:, None]).sum(axis=1)
    return (costs + n_outside) / n_union


def render_model_depths(mesh: Any, poses: Sequence[tuple[np.ndarray, np.ndarray]], K: np.ndarray,
                        width: int, height: int) -> np.ndarray:
    """Depth images of one mesh at several poses, with our numba renderer.

    Args:
        mesh: a ``RenderMesh`` or a ``trimesh.Trimesh`` (meters).
        poses: ``[(R (3, 3), t (3,) meters), ...]``.
        K: ``(3, 3)``.

    Returns:
        ``(B, H, W)`` float32 meters, 0 = background.
    """
    import trimesh  # a heavy import kept to the VSD path

    from sixd_pose_ros.render.renderer import RenderMesh, render

    if isinstance(mesh, trimesh.Trimesh):
        mesh = RenderMesh.from_trimesh(mesh)
    if not isinstance(mesh, RenderMesh):
        raise EvaluationError(f"VSD needs a mesh (trimesh.Trimesh or RenderMesh), got {type(mesh).__name__}")
    R = np.stack([np.asarray(p[0], dtype=np.float64) for p in poses])
    t = np.stack([np.asarray(p[1], dtype=np.float64).reshape(3) for p in poses])
    return render([mesh], R, t, K, int(width), int(height)).depth


def vsd_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
              depth_test: np.ndarray, K: np.ndarray, mesh: Any, taus: Sequence[float] | np.ndarray,
              delta: float = BOP_VSD_DELTA_M) -> np.ndarray:
    """VSD of an estimate against the observed depth, per tau (see :func:`vsd_from_distances`).

    Renders the mesh at both poses at the observed image's size (one renderer call), converts
    all three depth images to distances and compares.

    Args:
        depth_test: observed depth ``(H, W)`` meters, 0 = no measurement.
        mesh: ``RenderMesh`` or ``trimesh.Trimesh`` in meters.
        taus: meters (BOP: :data:`BOP_VSD_TAU_FRACTIONS` x diameter).
        delta: meters.

    Returns:
        Errors in ``[0, 1]``, shape ``(T,)``.
    """
    depth_test = np.asarray(depth_test, dtype=np.float64)
    if depth_test.ndim != 2:
        raise EvaluationError(f"observed depth must be (H, W) meters, got shape {depth_test.shape}")
    if not np.all(np.isfinite(depth_test)):
        depth_test = np.where(np.isfinite(depth_test), depth_test, 0.0)  # NaN/inf = no measurement
    h, w = depth_test.shape
    d_est, d_gt = render_model_depths(mesh, [(R_est, t_est), (R_gt, t_gt)], K, w, h)
    scale = _ray_scale(K, w, h)  # depth -> distance, shared by the three images
    return vsd_from_distances(d_est * scale, d_gt * scale, depth_test * scale, delta, taus)


# --------------------------------------------------------------------------------------------
# BOP average recalls
# --------------------------------------------------------------------------------------------


def ar_vsd(vsd_errors: np.ndarray | Sequence[Sequence[float]],
           thetas: Sequence[float] | np.ndarray = BOP_VSD_THETAS) -> float:
    """AR_VSD: recall (``e < theta``) averaged over every (tau, theta) pair.

    Args:
        vsd_errors: ``(N, T)``, one row of per-tau errors per instance; a missing estimate is a
            row of ``inf``.
        thetas: correctness thresholds, shape ``(C,)``.
    """
    e = np.asarray(vsd_errors, dtype=np.float64)
    if e.ndim != 2 or e.size == 0:
        raise ValueError(f"vsd_errors must be (N, T) with N, T > 0, got shape {e.shape}")
    th = np.asarray(thetas, dtype=np.float64).reshape(-1)
    return float(np.mean(_passes(e[:, :, None], th[None, None, :], strict=True)))


def ar_mssd(errors: Iterable[float] | np.ndarray, diameters: float | np.ndarray,
            fractions: Sequence[float] | np.ndarray = BOP_MSSD_FRACTIONS) -> float:
    """AR_MSSD: recall (``e < fraction x diameter``) averaged over the fractions."""
    e = _errors(errors)
    d = np.broadcast_to(np.asarray(diameters, dtype=np.float64), e.shape)
    f = np.asarray(fractions, dtype=np.float64).reshape(-1)
    return float(np.mean(_passes(e[None, :], f[:, None] * d[None, :], strict=True)))


def ar_mspd(errors_px: Iterable[float] | np.ndarray, image_widths: float | np.ndarray,
            thresholds_px: Sequence[float] | np.ndarray = BOP_MSPD_THRESHOLDS_PX) -> float:
    """AR_MSPD: recall (``e < th x width / 640``) averaged over the thresholds.

    The width scaling keeps the tolerance a fixed fraction of the image, as BOP does.
    """
    e = _errors(errors_px)
    r = np.broadcast_to(np.asarray(image_widths, dtype=np.float64) / 640.0, e.shape)
    th = np.asarray(thresholds_px, dtype=np.float64).reshape(-1)
    return float(np.mean(_passes(e[None, :], th[:, None] * r[None, :], strict=True)))


def bop_average_recall(ar_vsd_value: float, ar_mssd_value: float, ar_mspd_value: float) -> float:
    """BOP's AR: the mean of AR_VSD, AR_MSSD and AR_MSPD."""
    return float(np.mean([ar_vsd_value, ar_mssd_value, ar_mspd_value]))
