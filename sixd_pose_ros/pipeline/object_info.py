"""What the outputs need to know of each object an estimator holds: name, mesh and box.

Why here and not in the node: the estimator knows its objects (a CAD mesh, a surface fused from
reference depth, or only references), and the node asks it through ``Estimator.object_infos``
instead of reaching into its databases.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ObjectInfo", "object_info"]

# Mesh files rviz can show through a MESH_RESOURCE marker (rviz uses assimp for all but .mesh).
_RVIZ_MESHES = (".stl", ".dae", ".obj", ".ply", ".glb", ".gltf", ".mesh")


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


def object_info(db: Any, mesh: Any = None) -> ObjectInfo:
    """The ObjectInfo of an object database whose shape is ``mesh`` (anything with
    ``vertices``: the CAD mesh of a known model, or the surface fused from a model-free object's
    reference depth), or without one a box around its reference sphere."""
    if mesh is None:
        norm = db.normalization
        c, r = np.asarray(norm.center, np.float64), float(norm.scale) / np.sqrt(3.0)
        return ObjectInfo(db.name, None, c - r, c + r)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = (verts.min(0), verts.max(0)) if len(verts) else (np.full(3, -0.05), np.full(3, 0.05))
    mesh_file = (db.info.get("mesh") or {}).get("file")
    mesh_path = Path(db.path) / mesh_file if mesh_file else None
    if mesh_path is not None and (not mesh_path.is_file() or mesh_path.suffix.lower() not in _RVIZ_MESHES):
        mesh_path = None
    return ObjectInfo(db.name, mesh_path, lo, hi)
