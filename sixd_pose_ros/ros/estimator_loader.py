"""Builds the estimator the parameters ask for, plus what the outputs need to know per object."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.ros.params import NodeParams, ParameterError

__all__ = ["ObjectInfo", "EstimatorLoadError", "load_estimator", "object_infos"]

# Mesh files rviz can show through a MESH_RESOURCE marker (rviz uses assimp for all but .mesh).
_RVIZ_MESHES = (".stl", ".dae", ".obj", ".ply", ".glb", ".gltf", ".mesh")


class EstimatorLoadError(SixdPoseError):
    """The estimator cannot be built (weights, object databases); the message names the fix."""


@dataclass(frozen=True)
class ObjectInfo:
    """Per object: its name, the mesh rviz can show (or None), its bounding box (object frame, m)."""

    name: str
    mesh_path: Path | None
    bbox_min: np.ndarray
    bbox_max: np.ndarray

    @property
    def diameter(self) -> float:
        return float(np.linalg.norm(self.bbox_max - self.bbox_min))


def object_infos(estimator) -> list[ObjectInfo]:
    """ObjectInfo of each object an estimator holds, from its databases: the CAD mesh (known
    model), the surface fused from the reference depth (model free, when it has one), or else a
    box around the reference sphere."""
    infos = []
    for obj in getattr(estimator, "objects", []):
        db = getattr(obj, "db", None)
        if db is None:
            continue
        mesh, surface = getattr(db, "mesh", None), getattr(obj, "surface", None)
        if mesh is None and surface is None:
            norm = db.normalization
            c, r = np.asarray(norm.center, np.float64), float(norm.scale) / np.sqrt(3.0)
            infos.append(ObjectInfo(db.name, None, c - r, c + r))
            continue
        verts = np.asarray((mesh if mesh is not None else surface.render_mesh).vertices, dtype=np.float64)
        lo, hi = (verts.min(0), verts.max(0)) if len(verts) else (np.full(3, -0.05), np.full(3, 0.05))
        mesh_file = (db.info.get("mesh") or {}).get("file")
        mesh_path = Path(db.path) / mesh_file if mesh_file else None
        if mesh_path is not None and (not mesh_path.is_file() or mesh_path.suffix.lower() not in _RVIZ_MESHES):
            mesh_path = None
        infos.append(ObjectInfo(db.name, mesh_path, lo, hi))
    return infos


def load_estimator(params: NodeParams):
    """(estimator, [ObjectInfo]) for validated parameters.

    Raises:
        ParameterError: a mode that cannot run.
        EstimatorLoadError: weights or object databases that cannot be loaded (message names the fix).
    """
    if params.mode not in ("known_model", "model_free"):
        raise ParameterError(f"mode: {params.mode!r} is not a mode; use mode:=known_model or model_free")
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    weights = Path(params.weights_dir).expanduser() if params.weights_dir else WEIGHTS_DIR
    second = "selector.pt" if params.mode == "model_free" else "autoencoder.pt"
    needed = ["detector.pt", second] + (["refiner.pt"] if params.refine_iterations > 0 else [])
    missing = [n for n in needed if not (weights / n).is_file()]
    if missing:
        raise EstimatorLoadError(f"weights {missing} not found in {weights}: train them (`sixd-pose train "
                                 f"detector|refiner|autoencoder|selector`) and pass weights_dir:=FOLDER, or install "
                                 f"a package release that ships them")
    objects = [Path(o).expanduser() for o in params.objects]
    try:
        if params.mode == "model_free":
            from sixd_pose_ros.pipeline.model_free import ModelFreeConfig, ModelFreeEstimator

            est = ModelFreeEstimator.from_paths(
                objects, weights, ModelFreeConfig(min_detection_score=params.min_score,
                                                  refine_iterations=params.refine_iterations,
                                                  depth_proposals=params.depth_proposals,
                                                  rotation_search=params.rotation_search,
                                                  use_depth=params.use_depth, precision=params.precision),
                use_refiner=params.refine_iterations > 0, backend=params.backend)
        else:
            from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator

            config = KnownModelConfig(min_detection_score=params.min_score,
                                      refine_iterations=params.refine_iterations, use_depth=params.use_depth,
                                      depth_proposals=params.depth_proposals,
                                      rotation_search=params.rotation_search, precision=params.precision)
            est = KnownModelEstimator.from_paths(objects, weights, config, use_refiner=params.refine_iterations > 0,
                                                 backend=params.backend)
    except SixdPoseError as exc:
        raise EstimatorLoadError(str(exc)) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise EstimatorLoadError(f"cannot load the estimator ({type(exc).__name__}: {exc}); rebuild the object "
                                 f"databases with `sixd-pose build-object ... --overwrite` for these weights") from exc
    return est, object_infos(est)
