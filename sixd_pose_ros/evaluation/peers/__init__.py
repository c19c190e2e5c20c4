"""Classical known-model peers, run side by side with our estimator on the same frames.

Two estimators nobody here wrote the core of, behind our Estimator protocol (pipeline.types):

- ``linemod``: OpenCV's LINEMOD template matcher (``cv2.linemod``, opencv-contrib) on renders
  of the mesh by our renderer; colour gradients + depth normals, colour only without depth.
- ``open3d_fpfh_icp``: Open3D's FPFH + RANSAC global registration of the model's points to the
  scene's, then point-to-plane ICP; depth only.

``make_peer`` builds one from a mesh file (or a trimesh in meters); ``run_peer_on_frames`` and
``heldout_peer_benchmark`` measure accuracy and latency on rendered frames with ground truth,
so that evaluation reports can put the peers' numbers next to ours.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.evaluation.peers.linemod import (
    LinemodConfig,
    LinemodPeer,
    PeerUnavailableError,
)
from sixd_pose_ros.evaluation.peers.open3d_registration import (
    Open3DRegistrationConfig,
    Open3DRegistrationPeer,
)
from sixd_pose_ros.geometry.normalization import object_diameter
from sixd_pose_ros.geometry.pose_errors import add_error, adds_error, rotation_error_deg
from sixd_pose_ros.pipeline.types import Estimator, Frame
from sixd_pose_ros.render.mesh_io import UNIT_TO_METERS, MeshError, load_mesh

__all__ = [
    "PEERS",
    "LinemodConfig",
    "LinemodPeer",
    "Open3DRegistrationConfig",
    "Open3DRegistrationPeer",
    "PeerUnavailableError",
    "heldout_peer_benchmark",
    "make_peer",
    "run_peer_on_frames",
]

# name -> class(mesh: trimesh.Trimesh in meters, name: str, config=...) implementing Estimator.
PEERS: dict[str, type] = {"linemod": LinemodPeer, "open3d_fpfh_icp": Open3DRegistrationPeer}


def make_peer(peer: str, mesh: str | os.PathLike | trimesh.Trimesh, name: str, unit: str | None = None,
              config: object | None = None) -> Estimator:
    """Build peer ``peer`` (a key of PEERS) for one object.

    Args:
        peer: "linemod" or "open3d_fpfh_icp".
        mesh: a mesh file (read with render.mesh_io.load_mesh) or a trimesh.
        name: the object's name in the poses it returns.
        unit: the mesh's unit ("m", "mm", ...); None: inferred for files, meters for a trimesh.
        config: the peer's config dataclass (LinemodConfig / Open3DRegistrationConfig).

    Raises:
        SixdPoseError: unknown peer; PeerUnavailableError when its library is missing (the
            message names the package); MeshError for a bad mesh.
    """
    if peer not in PEERS:
        raise SixdPoseError(f"unknown peer {peer!r}: choose one of {', '.join(sorted(PEERS))}")
    if isinstance(mesh, trimesh.Trimesh):
        if unit is not None and unit not in UNIT_TO_METERS:
            raise MeshError(f"unknown mesh unit {unit!r}: use one of {sorted(UNIT_TO_METERS)}")
        if unit not in (None, "m"):
            mesh = mesh.copy()
            mesh.apply_scale(UNIT_TO_METERS[unit])
    else:
        mesh = load_mesh(Path(mesh), unit)
    cls = PEERS[peer]
    return cls(mesh, name) if config is None else cls(mesh, name, config)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def run_peer_on_frames(estimator: Estimator, frames: Sequence, obj_id: int, model_points: np.ndarray,
                       *, symmetric: bool = False, use_depth: bool = True,
                       diameter: float | None = None) -> dict:
    """Run an estimator on annotated frames and score its pose of object ``obj_id``.

    Args:
        estimator: any Estimator; its first output pose is scored (peers return at most one).
        frames: datasets.types.SceneFrame-like (rgb, depth, K, instances with obj_id, R_m2c,
            t_m2c); frames without an instance of ``obj_id`` are skipped.
        obj_id: which ground-truth instance to score.
        model_points: (N, 3) meters, object frame, for ADD / ADD-S.
        symmetric: score ``add(-s)_0.1d`` with ADD-S (symmetric objects) instead of ADD.
        use_depth: False drops the depth image (the RGB-only setting).
        diameter: meters; computed from model_points when None.

    Returns:
        ``{"n", "n_found", "add_0.1d", "adds_0.1d", "add(-s)_0.1d", "rot_err_deg_median",
        "trans_err_cm_median", "latency_ms": {"median", "p90"}, "per_frame": [...]}``; recalls
        are fractions of all n frames (a missing pose is a miss), error medians over the frames
        with a pose (NaN when none).
    """
    points = np.asarray(model_points, dtype=np.float64)
    diameter = object_diameter(points) if diameter is None else float(diameter)
    rows, latencies = [], []
    for k, scene_frame in enumerate(frames):
        gts = [g for g in scene_frame.instances if g.obj_id == obj_id]
        if not gts:
            continue
        gt = gts[0]
        frame = Frame(rgb=scene_frame.rgb, K=scene_frame.K, depth=scene_frame.depth if use_depth else None)
        t0 = time.perf_counter()
        poses = estimator.estimate(frame)
        latencies.append(1000.0 * (time.perf_counter() - t0))
        row = {"frame": k, "found": bool(poses), "latency_ms": latencies[-1]}
        if poses:
            p = poses[0]
            row.update(score=float(p.score),
                       add=add_error(p.R, p.t, gt.R_m2c, gt.t_m2c, points),
                       adds=adds_error(p.R, p.t, gt.R_m2c, gt.t_m2c, points),
                       rot_err_deg=float(rotation_error_deg(p.R, gt.R_m2c)),
                       trans_err_cm=100.0 * float(np.linalg.norm(np.asarray(p.t) - gt.t_m2c)))
        rows.append(row)
    n = len(rows)
    found = [r for r in rows if r["found"]]

    def recall(key: str) -> float:
        return sum(r[key] < 0.1 * diameter for r in found) / n if n else float("nan")

    return {"n": n, "n_found": len(found), "add_0.1d": recall("add"), "adds_0.1d": recall("adds"),
            "add(-s)_0.1d": recall("adds" if symmetric else "add"),
            "rot_err_deg_median": _median([r["rot_err_deg"] for r in found]),
            "trans_err_cm_median": _median([r["trans_err_cm"] for r in found]),
            "latency_ms": {"median": _median(latencies),
                           "p90": float(np.percentile(latencies, 90)) if latencies else float("nan")},
            "per_frame": rows}


def heldout_peer_benchmark(peers: Sequence[str] = tuple(PEERS), object_ids: Sequence[int] = (0, 1, 2),
                           n_frames: int = 10, seed: int = 0, n_distractors: int = 2) -> dict:
    """Each peer on ``n_frames`` rendered table-top frames of each held-out procedural object
    (with sensor-like depth noise and colour jitter, plus distractors), with and without depth.

    Returns ``{peer: {"rgbd"|"rgb": {"objects": {id: run_peer_on_frames(...)}, "mean": {...}},
    "build_s": {id: seconds}}}``; the mean averages recalls and medians over objects, and
    pools latencies.
    """
    from sixd_pose_ros.render.procedural import make_object
    from sixd_pose_ros.training.scenes import compose_scene, scene_object

    report: dict = {name: {"rgbd": {"objects": {}}, "rgb": {"objects": {}}, "build_s": {}} for name in peers}
    for obj_id in object_ids:
        obj = make_object("heldout", int(obj_id))
        rng = np.random.default_rng([seed, int(obj_id)])
        distractors = [scene_object(0, make_object("heldout", 1000 + int(obj_id) * 10 + k).mesh)
                       for k in range(n_distractors)]
        frames = compose_scene([scene_object(int(obj_id) + 1, obj.mesh)], distractors, n_frames, rng)
        points = np.asarray(obj.mesh.vertices)
        symmetric = obj.symmetry != "none"
        for name in peers:
            t0 = time.perf_counter()
            est = make_peer(name, obj.mesh, f"obj_{obj_id}")
            report[name]["build_s"][int(obj_id)] = time.perf_counter() - t0
            for setting, use_depth in (("rgbd", True), ("rgb", False)):
                report[name][setting]["objects"][int(obj_id)] = run_peer_on_frames(
                    est, frames, int(obj_id) + 1, points, symmetric=symmetric, use_depth=use_depth,
                    diameter=obj.diameter)
    for name in peers:
        for setting in ("rgbd", "rgb"):
            objs = list(report[name][setting]["objects"].values())
            lat = [r["latency_ms"] for o in objs for r in o["per_frame"]]
            report[name][setting]["mean"] = {
                key: _nanmean([o[key] for o in objs])
                for key in ("add_0.1d", "adds_0.1d", "add(-s)_0.1d", "rot_err_deg_median", "trans_err_cm_median")}
            report[name][setting]["mean"]["latency_ms"] = {
                "median": _median(lat), "p90": float(np.percentile(lat, 90)) if lat else float("nan")}
    return report
