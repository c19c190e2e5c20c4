"""Per-instance results, their summary (metrics.json) and the report files.

One :class:`InstanceResult` per ground-truth instance (found or not) is the single record an
evaluation run produces; :func:`summarize` reduces a list of them to the fixed
``metrics.json`` shape that later issues compare against, and :func:`write_report` writes
that summary, a markdown table, a per-instance CSV and plots. Units inside a result: meters
(ADD, ADD-S, MSSD, diameter), pixels (Prj, MSPD), degrees, centimeters, milliseconds.

Missing estimates: ``found=False`` and every error ``inf`` (:data:`metrics.MISSING`). They
fail every recall and AP threshold and are left out of the medians, which describe the error
of the poses that were given (a null median means nothing was found, never 0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sixd_pose_ros.evaluation.metrics import (
    BOP_MSPD_THRESHOLDS_PX,
    BOP_MSSD_FRACTIONS,
    BOP_VSD_DELTA_M,
    BOP_VSD_TAU_FRACTIONS,
    BOP_VSD_THETAS,
    DEFAULT_ROT_THRESHOLDS_DEG,
    DEFAULT_TRANS_THRESHOLDS_CM,
    MISSING,
    EvaluationError,
    ap_curve,
    ar_mspd,
    ar_mssd,
    ar_vsd,
    as_symmetry_transforms,
    has_symmetry,
    mspd_error,
    mssd_error,
    projection_recall,
    recall_at_diameter,
    symmetric_rotation_error_deg,
    vsd_error,
)
from sixd_pose_ros.geometry.pose_errors import (
    add_error,
    adds_error,
    projection_error_2d,
    translation_error,
)
from sixd_pose_ros.geometry.read_rotation import NotARotationError, checked_rotation
from sixd_pose_ros.io import atomic_write_bytes

__all__ = [
    "REQUIRED_METRIC_KEYS",
    "InstanceResult",
    "format_table",
    "score_instance",
    "summarize",
    "write_report",
]

#: The per-object keys of metrics.json besides ``n`` (and the keys of its "mean" block).
#: ``add(-s)_0.1d`` is the usual headline (LineMOD's convention, the one issue goals are stated in):
#: ADD-S for objects with a symmetry in their models_info, ADD for the others.
REQUIRED_METRIC_KEYS = ("add_0.1d", "adds_0.1d", "add(-s)_0.1d", "prj_5", "rot_err_deg_median",
                        "trans_err_cm_median")


@dataclass(kw_only=True, eq=False)  # eq on numpy fields would raise, not compare
class InstanceResult:
    """The scores of one ground-truth instance in one image.

    ``rot_err_deg`` is symmetry-aware (smallest angle to any pose equivalent to the ground
    truth under the object's symmetries; the plain angle when it has none). ``vsd`` holds the
    VSD error per tau, in the order of the taus used (BOP's 0.05..0.5 x diameter by default),
    not a recall: :func:`summarize` averages recalls over taus and thetas itself. ``mssd``,
    ``mspd`` and ``vsd`` are None when they were not computed (VSD needs observed depth and the
    mesh). ``image_width`` scales BOP's MSPD thresholds. ``partial`` names what was incomplete
    about this instance's ground truth or data (e.g. "no depth"); such instances are still
    scored, and their reasons are counted in the summary.
    """

    scene_id: int
    im_id: int
    obj_id: str
    found: bool
    R_est: np.ndarray | None  # (3, 3), None when not found
    t_est: np.ndarray | None  # (3,) meters, None when not found
    R_gt: np.ndarray  # (3, 3)
    t_gt: np.ndarray  # (3,) meters
    score: float
    add: float  # meters
    adds: float  # meters
    prj: float  # pixels
    rot_err_deg: float
    trans_err_cm: float
    mssd: float | None = None  # meters
    mspd: float | None = None  # pixels
    vsd: tuple[float, ...] | None = None  # per tau, in [0, 1]
    diameter: float  # meters
    latency_ms: float | None = None
    partial: str | None = None
    image_width: int | None = None  # pixels
    symmetric: bool = False  # the object has a symmetry: add(-s) scores it with ADD-S


# --------------------------------------------------------------------------------------------
# scoring one instance
# --------------------------------------------------------------------------------------------


def _finite_array(x: Any, shape: tuple[int, ...], name: str, fix: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
        if a.size == int(np.prod(shape)):
            a = a.reshape(shape)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{name} is not numeric ({exc}); {fix}") from exc
    if a.shape != shape:
        raise EvaluationError(f"{name} must have shape {shape}, got {a.shape}; {fix}")
    if not np.all(np.isfinite(a)):
        raise EvaluationError(f"{name} contains NaN or inf; {fix}")
    return a


def _rotation(x: Any, name: str, fix: str) -> np.ndarray:
    R = _finite_array(x, (3, 3), name, fix)
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
        raise EvaluationError(f"{name} is not a rotation matrix (orthonormal, det +1); {fix}")
    return R


def _gt_rotation(x: Any, fix: str) -> np.ndarray:
    """Ground truth as real datasets store it: up to 2e-2 off orthonormal (Linemod-derived BOP
    sets reach 1e-2), repaired to the nearest rotation; estimates stay held to 1e-3 above."""
    _finite_array(x, (3, 3), "R_gt", fix)
    try:
        return checked_rotation(x)
    except NotARotationError as exc:
        raise EvaluationError(f"R_gt is not a rotation matrix: it {exc}; {fix}") from exc


def score_instance(
    *,
    scene_id: int,
    im_id: int,
    obj_id: str | int,
    points: np.ndarray,
    diameter: float,
    K: np.ndarray,
    R_gt: np.ndarray,
    t_gt: np.ndarray,
    image_size: tuple[int, int],
    R_est: np.ndarray | None = None,
    t_est: np.ndarray | None = None,
    score: float = 0.0,
    symmetries: Any = None,
    depth: np.ndarray | None = None,
    mesh: Any = None,
    vsd_delta: float = BOP_VSD_DELTA_M,
    vsd_tau_fractions: Sequence[float] | np.ndarray = BOP_VSD_TAU_FRACTIONS,
    latency_ms: float | None = None,
    partial: str | None = None,
) -> InstanceResult:
    """Every error of one estimate (or of its absence) against the ground truth.

    Args:
        points: model points ``(N, 3)``, meters, object frame (a few thousand are plenty).
        diameter: object diameter, meters.
        K: ``(3, 3)`` intrinsics of the image.
        R_gt, t_gt: true object-to-camera pose; ``t`` in meters.
        image_size: ``(width, height)`` pixels.
        R_est, t_est: the estimate, or both None when the method gave none.
        symmetries: as :func:`metrics.as_symmetry_transforms` accepts (None = none); see
            :func:`metrics.symmetries_from_models_info` for BOP models.
        depth: observed depth ``(height, width)`` meters, 0 = no measurement; with ``mesh``
            (``trimesh.Trimesh`` or ``RenderMesh``, meters) it enables VSD.
        vsd_delta: VSD visibility tolerance, meters.
        vsd_tau_fractions: VSD tolerances as fractions of the diameter.
        latency_ms: time the method took for this image, if known.
        partial: why this instance's ground truth or data is incomplete, if it is.
    """
    fix_gt = "check the ground truth (scene_gt.json or the bag's /tf)"
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise EvaluationError(f"model points must be a non-empty finite (N, 3) array in meters, got shape "
                              f"{pts.shape}; sample them from the object's mesh")
    diameter = float(diameter)
    if not (math.isfinite(diameter) and diameter > 0):
        raise EvaluationError(f"object diameter must be a positive number of meters, got {diameter}; "
                              "read it from models_info.json (mm) and convert")
    K = _finite_array(K, (3, 3), "K", "pass the 3x3 camera matrix of this image")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise EvaluationError("K has a non-positive focal length; pass the camera_info of this image")
    R_gt = _gt_rotation(R_gt, fix_gt)
    t_gt = _finite_array(t_gt, (3,), "t_gt", fix_gt)
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"image_size must be (width, height), got {image_size!r}") from exc
    if width <= 0 or height <= 0:
        raise EvaluationError(f"image_size must be positive (width, height), got {image_size!r}")
    if (R_est is None) != (t_est is None):
        raise EvaluationError("give both R_est and t_est, or neither for a missing estimate")
    if depth is not None:
        if mesh is None:
            raise EvaluationError("VSD needs the object's mesh with the observed depth: pass mesh=... "
                                  "(or leave depth out to skip VSD)")
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (height, width):
            raise EvaluationError(f"observed depth has shape {depth.shape} but the image is {width}x{height}; "
                                  "pass the depth registered to the colour image, in meters")
    sym = as_symmetry_transforms(symmetries)
    taus = np.asarray(vsd_tau_fractions, dtype=np.float64).reshape(-1) * diameter
    common: dict[str, Any] = {
        "scene_id": int(scene_id), "im_id": int(im_id), "obj_id": str(obj_id), "R_gt": R_gt, "t_gt": t_gt,
        "diameter": diameter, "latency_ms": None if latency_ms is None else float(latency_ms),
        "partial": partial, "image_width": width, "symmetric": has_symmetry(sym)}
    if R_est is None:
        return InstanceResult(found=False, R_est=None, t_est=None, score=0.0, add=MISSING, adds=MISSING,
                              prj=MISSING, rot_err_deg=MISSING, trans_err_cm=MISSING, mssd=MISSING,
                              mspd=MISSING, vsd=(MISSING,) * len(taus) if depth is not None else None,
                              **common)
    fix_est = "report a failed estimate as missing (R_est=None, t_est=None)"
    R_est = _rotation(R_est, "R_est", fix_est)
    t_est = _finite_array(t_est, (3,), "t_est", fix_est)
    vsd = None
    if depth is not None:
        vsd = tuple(float(v) for v in vsd_error(R_est, t_est, R_gt, t_gt, depth, K, mesh, taus, vsd_delta))
    return InstanceResult(
        found=True, R_est=R_est, t_est=t_est, score=float(score),
        add=add_error(R_est, t_est, R_gt, t_gt, pts),
        adds=adds_error(R_est, t_est, R_gt, t_gt, pts),
        prj=projection_error_2d(R_est, t_est, R_gt, t_gt, pts, K),
        rot_err_deg=symmetric_rotation_error_deg(R_est, R_gt, sym),
        trans_err_cm=100.0 * float(translation_error(t_est, t_gt)),
        mssd=mssd_error(R_est, t_est, R_gt, t_gt, pts, sym),
        mspd=mspd_error(R_est, t_est, R_gt, t_gt, pts, K, sym),
        vsd=vsd, **common)


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def _obj_key(obj_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order (2 before 10), then names alphabetically."""
    return (0, int(obj_id), "") if obj_id.isdigit() else (1, 0, obj_id)


def _sorted_results(results: Sequence[InstanceResult]) -> list[InstanceResult]:
    return sorted(results, key=lambda r: (r.scene_id, r.im_id, _obj_key(r.obj_id), np.asarray(r.t_gt).tolist()))


def _num(x: Any) -> float | None:
    """A JSON-safe float: NaN/inf/None -> None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _median_found(values: list[float]) -> float | None:
    v = [x for x in values if math.isfinite(x)]
    return float(np.median(v)) if v else None


def _mean_or_none(values: list[float | None]) -> float | None:
    """Mean of per-object values; None unless every object has one (no silent subsets)."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _object_metrics(res: list[InstanceResult]) -> dict[str, Any]:
    found = [r for r in res if r.found]
    return {
        "n": len(res),
        "add_0.1d": recall_at_diameter([r.add for r in res], np.array([r.diameter for r in res]), 0.1),
        "adds_0.1d": recall_at_diameter([r.adds for r in res], np.array([r.diameter for r in res]), 0.1),
        "add(-s)_0.1d": recall_at_diameter([r.adds if r.symmetric else r.add for r in res],
                                           np.array([r.diameter for r in res]), 0.1),
        "prj_5": projection_recall([r.prj for r in res], 5.0),
        "rot_err_deg_median": _median_found([r.rot_err_deg for r in found]),
        "trans_err_cm_median": _median_found([r.trans_err_cm for r in found]),
    }


def _bop_available(results: Sequence[InstanceResult]) -> dict[str, Any]:
    """Which BOP errors this run computed at all (for some found instance); for VSD, the
    number of taus, None when no found instance has VSD or their tau counts differ."""
    found = [r for r in results if r.found]
    n_taus = {len(r.vsd) for r in found if r.vsd is not None}
    return {"mssd": any(r.mssd is not None for r in found), "mspd": any(r.mspd is not None for r in found),
            "vsd": n_taus.pop() if len(n_taus) == 1 else None}


def _bop_object(res: list[InstanceResult], available: Mapping[str, Any]) -> dict[str, float | None]:
    """BOP average recalls of one object.

    Each is None when the run did not compute that error (``available``) or when some found
    instance of this object lacks it; an object never found gets 0 for the computed ones.
    """
    found = [r for r in res if r.found]
    out: dict[str, float | None] = {"ar_vsd": None, "ar_mssd": None, "ar_mspd": None, "ar": None}
    if available["mssd"] and all(r.mssd is not None for r in found):
        out["ar_mssd"] = ar_mssd([MISSING if not r.found else r.mssd for r in res],
                                 np.array([r.diameter for r in res]), BOP_MSSD_FRACTIONS)
    if available["mspd"] and all(r.mspd is not None and r.image_width for r in found):
        # A missing estimate fails at any width; 640 only fills the slot.
        widths = np.array([r.image_width or 640 for r in res], dtype=np.float64)
        out["ar_mspd"] = ar_mspd([MISSING if not r.found else r.mspd for r in res], widths,
                                 BOP_MSPD_THRESHOLDS_PX)
    n_tau = available["vsd"]
    if n_tau is not None and all(r.vsd is not None and len(r.vsd) == n_tau for r in found):
        rows = [r.vsd if r.found else (MISSING,) * n_tau for r in res]
        out["ar_vsd"] = ar_vsd(np.array(rows, dtype=np.float64), BOP_VSD_THETAS)
    if None not in (out["ar_vsd"], out["ar_mssd"], out["ar_mspd"]):
        out["ar"] = float(np.mean([out["ar_vsd"], out["ar_mssd"], out["ar_mspd"]]))
    return out


def _ap_block(by_obj: Mapping[str, list[InstanceResult]], attr: str, thresholds: np.ndarray,
              th_key: str) -> dict[str, Any]:
    curves = {k: ap_curve([getattr(r, attr) for r in res], thresholds).tolist() for k, res in by_obj.items()}
    mean_curve = np.mean(np.array(list(curves.values())), axis=0).tolist() if curves else []
    return {
        th_key: [float(t) for t in thresholds],
        "objects": curves,
        "mean": mean_curve,
        "auc": {"objects": {k: float(np.mean(c)) for k, c in curves.items()},
                "mean": float(np.mean(mean_curve)) if curves else None},
    }


def _frame_latencies(results: list[InstanceResult]) -> list[float]:
    """One latency per frame (the first instance's that has one), in frame order."""
    seen: dict[tuple[int, int], float] = {}
    for r in results:
        key = (r.scene_id, r.im_id)
        if key not in seen and r.latency_ms is not None:
            seen[key] = r.latency_ms
    return list(seen.values())


def summarize(results: Sequence[InstanceResult], mode: str, dataset: str,
              latencies_ms: Sequence[float] | None = None) -> dict[str, Any]:
    """Reduce per-instance results to the metrics.json dictionary.

    Shape (the required keys, exactly)::

        {"mode", "dataset", "n_frames",
         "objects": {"<id>": {"n", "add_0.1d", "adds_0.1d", "add(-s)_0.1d", "prj_5", "rot_err_deg_median",
                              "trans_err_cm_median"}},
         "mean": {the same keys without "n"},
         "latency_ms": {"median", "p90"},
         "extra": {...}}

    Recalls are fractions in ``[0, 1]`` over all ground-truth instances (missing estimates
    fail); medians are over found instances only and None when there are none. "mean" is the
    unweighted mean over objects of the per-object values (a median mean is None when some
    object has none). ``extra`` holds the AP curves and their areas, BOP's average recalls
    (per object, their mean over objects, and "pooled" over all instances as bop_toolkit
    reports a dataset), and counts of missing and partial instances.

    Args:
        results: every ground-truth instance, found or not.
        mode: "known_model" or "model_free" (free text, recorded as given).
        dataset: a name or path, recorded as given.
        latencies_ms: per-frame end-to-end latencies; None takes one per frame from the
            results' ``latency_ms``.
    """
    if not results:
        raise EvaluationError("no results to summarize: the evaluation scored no ground-truth instance; "
                              "check that the dataset has ground truth for the objects evaluated")
    ordered = _sorted_results(results)
    by_obj: dict[str, list[InstanceResult]] = {}
    for r in sorted(ordered, key=lambda r: _obj_key(r.obj_id)):
        by_obj.setdefault(r.obj_id, []).append(r)
    objects = {k: _object_metrics(res) for k, res in by_obj.items()}
    mean = {key: _mean_or_none([o[key] for o in objects.values()]) for key in REQUIRED_METRIC_KEYS}
    lat = [float(x) for x in (latencies_ms if latencies_ms is not None else _frame_latencies(ordered))]
    lat = [x for x in lat if math.isfinite(x)]
    latency = {"median": float(np.median(lat)) if lat else None,
               "p90": float(np.percentile(lat, 90)) if lat else None}

    n_missing = sum(not r.found for r in ordered)
    extra: dict[str, Any] = {
        "n_instances": len(ordered),
        "n_found": len(ordered) - n_missing,
        "n_missing": n_missing,
        "missing_per_object": {k: sum(not r.found for r in res) for k, res in by_obj.items()},
        "partial": {"n": sum(r.partial is not None for r in ordered),
                    "reasons": dict(sorted(Counter(r.partial for r in ordered if r.partial is not None).items()))},
        "ap_rotation": _ap_block(by_obj, "rot_err_deg", DEFAULT_ROT_THRESHOLDS_DEG, "thresholds_deg"),
        "ap_translation": _ap_block(by_obj, "trans_err_cm", DEFAULT_TRANS_THRESHOLDS_CM, "thresholds_cm"),
    }
    available = _bop_available(ordered)
    if available["mssd"] or available["mspd"] or available["vsd"] is not None:
        bop_objects = {k: _bop_object(res, available) for k, res in by_obj.items()}
        keys = ("ar_vsd", "ar_mssd", "ar_mspd", "ar")
        extra["bop"] = {
            "objects": bop_objects,
            "mean": {key: _mean_or_none([o[key] for o in bop_objects.values()]) for key in keys},
            "pooled": _bop_object(ordered, available),
        }
    return {
        "mode": str(mode),
        "dataset": str(dataset),
        "n_frames": len({(r.scene_id, r.im_id) for r in ordered}),
        "objects": objects,
        "mean": mean,
        "latency_ms": latency,
        "extra": extra,
    }


# --------------------------------------------------------------------------------------------
# report files
# --------------------------------------------------------------------------------------------

_COLUMNS = (("add_0.1d", "ADD-0.1d"), ("adds_0.1d", "ADD-S-0.1d"), ("add(-s)_0.1d", "ADD(-S)-0.1d"),
            ("prj_5", "Prj-5"),
            ("rot_err_deg_median", "rot med (deg)"), ("trans_err_cm_median", "trans med (cm)"))


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key.endswith("_median"):
        return f"{value:.2f}"
    return f"{100.0 * value:.1f}"  # recalls and ARs as percentages


def _table_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    bop = summary.get("extra", {}).get("bop")
    with_ar = bop is not None and any(o.get("ar") is not None for o in bop["objects"].values())
    header = ["object", "n"] + [title for _, title in _COLUMNS] + (["AR"] if with_ar else [])
    rows = []
    for obj_id, m in summary["objects"].items():
        row = [obj_id, str(m["n"])] + [_fmt(m[key], key) for key, _ in _COLUMNS]
        if with_ar:
            row.append(_fmt(bop["objects"][obj_id]["ar"], "ar"))
        rows.append(row)
    mean_row = ["mean", str(sum(m["n"] for m in summary["objects"].values()))]
    mean_row += [_fmt(summary["mean"][key], key) for key, _ in _COLUMNS]
    if with_ar:
        mean_row.append(_fmt(bop["mean"]["ar"], "ar"))
    rows.append(mean_row)
    return header, rows


def _latency_line(summary: Mapping[str, Any]) -> str:
    lat = summary["latency_ms"]
    if lat["median"] is None:
        return "latency: not measured"
    return f"latency: median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms"


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a fixed-width text table for the terminal (recalls in %)."""
    header, rows = _table_rows(summary)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    sep = "-" * len(line(header))
    out = [f"{summary['dataset']} ({summary['mode']}): {summary['n_frames']} frames", line(header), sep]
    out += [line(r) for r in rows[:-1]] + [sep, line(rows[-1]), _latency_line(summary)]
    return "\n".join(out)


def _markdown(summary: Mapping[str, Any]) -> str:
    header, rows = _table_rows(summary)
    extra = summary.get("extra", {})
    lines = [f"# Pose evaluation: {summary['dataset']} ({summary['mode']})", ""]
    counts = f"{summary['n_frames']} frames"
    if "n_instances" in extra:
        counts += f", {extra['n_instances']} instances, {extra['n_missing']} without an estimate"
    note = ("Recalls and AR in %, over all ground-truth instances (a missing estimate fails); "
            "medians over found instances only.")
    lines += [counts + ".", "", note, ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for row in rows[:-1]:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| " + " | ".join(f"**{c}**" for c in rows[-1]) + " |")
    lines += ["", _latency_line(summary).capitalize() + "."]
    partial = extra.get("partial", {})
    if partial.get("n"):
        reasons = ", ".join(f"{k} ({v})" for k, v in partial["reasons"].items())
        lines += ["", f"Partial instances: {partial['n']}: {reasons}."]
    return "\n".join(lines) + "\n"


_CSV_FIELDS = ("scene_id", "im_id", "obj_id", "found", "score", "add_m", "adds_m", "prj_px",
               "rot_err_deg", "trans_err_cm", "mssd_m", "mspd_px", "vsd", "diameter_m", "image_width",
               "latency_ms", "partial", "R_est", "t_est", "R_gt", "t_gt", "symmetric")


def _cell(x: Any) -> str:
    """Exact and stable text: repr() of floats round-trips; arrays space-separated; None empty."""
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "1" if x else "0"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return repr(float(x))
    if isinstance(x, (np.ndarray, tuple, list)):
        return " ".join(_cell(float(v)) for v in np.asarray(x, dtype=np.float64).reshape(-1))
    return str(x)


def _csv(results: Sequence[InstanceResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_FIELDS)
    for r in _sorted_results(results):
        w.writerow([_cell(v) for v in (
            r.scene_id, r.im_id, r.obj_id, r.found, r.score, r.add, r.adds, r.prj, r.rot_err_deg,
            r.trans_err_cm, r.mssd, r.mspd, r.vsd, r.diameter, r.image_width, r.latency_ms, r.partial,
            r.R_est, r.t_est, r.R_gt, r.t_gt, r.symmetric)])
    return buf.getvalue()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _ap_plot(block: Mapping[str, Any], th_key: str, xlabel: str, title: str) -> bytes:
    # No pyplot: no global state, and always the Agg canvas whatever MPLBACKEND says.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    th = block[th_key]
    for obj_id, curve in block["objects"].items():
        ax.plot(th, curve, marker=".", linewidth=1, alpha=0.6, label=f"obj {obj_id}")
    if block["mean"]:
        ax.plot(th, block["mean"], color="black", linewidth=2.5, label="mean")
    ax.set(xlabel=xlabel, ylabel="accuracy", title=title, ylim=(-0.02, 1.02), xlim=(th[0], th[-1]))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2 if len(block["objects"]) > 8 else 1)
    fig.tight_layout()
    return _png(fig)


def _hist_plot(results: Sequence[InstanceResult]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    found = [r for r in _sorted_results(results) if r.found]
    for i, (attr, label, color) in enumerate((("rot_err_deg", "rotation error (deg)", "tab:blue"),
                                              ("trans_err_cm", "translation error (cm)", "tab:orange"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = np.array([getattr(r, attr) for r in found], dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            top = float(values.max()) * 1.05 or 1.0  # errors are >= 0: the axis starts at 0
            ax.hist(values, bins=min(50, max(5, len(values) // 2)), range=(0.0, top), color=color)
            ax.axvline(float(np.median(values)), color="black", linestyle="--", label="median")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no estimates", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlabel=label, ylabel="instances")
        ax.grid(True, alpha=0.3)
    n_missing = sum(not r.found for r in results)
    fig.suptitle(f"estimates: {len(found)}; missing (not shown): {n_missing}")
    fig.tight_layout()
    return _png(fig)


_OVERLAY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _overlay_png(name: str, image: np.ndarray) -> bytes:
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise EvaluationError(f"overlay {name!r} must be a uint8 (H, W) or RGB(A) (H, W, 3|4) image, got "
                              f"{img.dtype} {img.shape}")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise EvaluationError(f"could not encode overlay {name!r} as PNG")
    return buf.tobytes()


def write_report(out_dir: Path | str, summary: Mapping[str, Any], results: Sequence[InstanceResult], *,
                 overlays: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write metrics.json, metrics.md, per_frame.csv, ap_rotation.png, ap_translation.png,
    error_hist.png and ``overlays/<name>.png`` into ``out_dir``.

    Each file is written atomically (complete or absent; an existing one is replaced). The
    JSON, markdown and CSV are byte-identical for the same inputs: results are sorted by
    (scene, image, object) and floats written exactly.

    Args:
        summary: :func:`summarize`'s dictionary.
        results: the instances it was made from.
        overlays: optional debug images by name (``[A-Za-z0-9_.-]+``), uint8 RGB or gray.

    Returns:
        The paths written, in the order above.
    """
    out = Path(out_dir)
    try:
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    except ValueError as exc:
        raise EvaluationError(f"the summary holds NaN or inf ({exc}); build it with summarize()") from exc
    for name in overlays or {}:
        if not _OVERLAY_NAME.match(name):
            raise EvaluationError(f"overlay name {name!r} is not a plain file name; use letters, digits, "
                                  "'_', '.' and '-' only")
    extra = summary.get("extra", {})
    if "ap_rotation" in extra and "ap_translation" in extra:
        ap_rot, ap_trans = extra["ap_rotation"], extra["ap_translation"]
    else:  # a hand-made summary without the extras: compute the curves from the results
        by_obj: dict[str, list[InstanceResult]] = {}
        for r in sorted(results, key=lambda r: _obj_key(r.obj_id)):
            by_obj.setdefault(r.obj_id, []).append(r)
        ap_rot = _ap_block(by_obj, "rot_err_deg", DEFAULT_ROT_THRESHOLDS_DEG, "thresholds_deg")
        ap_trans = _ap_block(by_obj, "trans_err_cm", DEFAULT_TRANS_THRESHOLDS_CM, "thresholds_cm")

    files: list[tuple[str, bytes]] = [
        ("metrics.json", text.encode()),
        ("metrics.md", _markdown(summary).encode()),
        ("per_frame.csv", _csv(results).encode()),
        ("ap_rotation.png", _ap_plot(ap_rot, "thresholds_deg", "rotation error threshold (deg)",
                                     "Rotation accuracy")),
        ("ap_translation.png", _ap_plot(ap_trans, "thresholds_cm", "translation error threshold (cm)",
                                        "Translation accuracy")),
        ("error_hist.png", _hist_plot(results)),
    ]
    for name, image in sorted((overlays or {}).items()):
        stem = name[:-4] if name.lower().endswith(".png") else name
        files.append((f"overlays/{stem}.png", _overlay_png(name, image)))
    written = []
    for rel, data in files:
        path = out / rel
        atomic_write_bytes(path, data)
        written.append(path)
    return written
