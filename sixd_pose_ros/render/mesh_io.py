"""Load user meshes (ply/obj/stl/glb/off) in meters, with a clear error for every bad file.

Users hand the node CAD exports whose unit is rarely stated in the file; a mesh in millimetres
read as meters is a 1000x error in translation, so the unit is either given or inferred from
the size with a warning that names the flag to set.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError

LOG = logging.getLogger(__name__)

UNIT_TO_METERS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "um": 1e-6, "in": 0.0254}
SUPPORTED_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb", ".gltf")
MAX_FACES = 5_000_000
MAX_FILE_BYTES = 2 * 1024**3
# Objects a robot arm grasps: from a few millimetres to about two meters across.
MIN_DIAMETER_M, MAX_DIAMETER_M = 0.002, 2.0


class MeshError(SixdPoseError):
    """A mesh file that cannot be used; the message names the fix."""


def infer_unit(diameter_in_file_units: float) -> str:
    """Guess the unit from the object's size: graspable objects are 2 mm .. 2 m across."""
    if diameter_in_file_units > 20.0:
        return "mm"
    return "m"


def load_mesh(path: str | os.PathLike, unit: str | None = None) -> trimesh.Trimesh:
    """Load a mesh as one Trimesh in meters, keeping vertex colors or texture.

    Args:
        path: a .ply/.obj/.stl/.off/.glb file. Scenes with several parts are merged.
        unit: "m", "cm", "mm", "um" or "in"; None infers it from the size with a warning.

    Raises:
        MeshError: missing, empty, unreadable, face-less, huge or absurdly sized meshes.
    """
    path = Path(path)
    if unit is not None and unit not in UNIT_TO_METERS:
        raise MeshError(f"unknown mesh unit {unit!r}: use one of {sorted(UNIT_TO_METERS)}")
    if not path.exists():
        raise MeshError(f"mesh file {path} does not exist: check the path (relative paths are "
                        f"resolved from {Path.cwd()})")
    if not path.is_file():
        raise MeshError(f"mesh path {path} is not a file: give the mesh file itself")
    size = path.stat().st_size
    if size == 0:
        raise MeshError(f"mesh file {path} is empty (0 bytes): re-export the mesh from your CAD tool")
    if size > MAX_FILE_BYTES:
        raise MeshError(f"mesh file {path} is {size / 1e9:.1f} GB: decimate it below "
                        f"{MAX_FACES} faces first (e.g. Blender's Decimate or MeshLab)")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise MeshError(f"mesh format {path.suffix!r} of {path} is not supported: convert it to "
                        f"one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise MeshError(f"cannot read mesh {path}: {type(exc).__name__}: {exc}. The file is "
                        f"corrupt or not a {path.suffix} file: re-export it") from exc
    mesh = _as_single_mesh(loaded, path)
    if len(mesh.faces) == 0 or len(mesh.vertices) < 3:
        raise MeshError(f"mesh {path} has no triangles (a point cloud?): give a triangle mesh")
    if len(mesh.faces) > MAX_FACES:
        raise MeshError(f"mesh {path} has {len(mesh.faces)} faces (limit {MAX_FACES}): decimate it")
    if not np.isfinite(mesh.vertices).all():
        raise MeshError(f"mesh {path} has NaN or infinite vertex coordinates: repair it in your CAD tool")
    extent = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    if extent <= 0:
        raise MeshError(f"mesh {path} is degenerate (all vertices at one point)")
    if unit is None:
        unit = infer_unit(extent)
        LOG.warning("mesh %s has no unit given; guessed %r from its size (%.4g file units across). "
                    "Pass the unit explicitly (--unit mm|m) to silence this.", path, unit, extent)
    mesh.apply_scale(UNIT_TO_METERS[unit])
    diameter = extent * UNIT_TO_METERS[unit]
    if not MIN_DIAMETER_M <= diameter <= MAX_DIAMETER_M:
        raise MeshError(f"mesh {path} is {diameter:.4g} m across in unit {unit!r}, outside the "
                        f"{MIN_DIAMETER_M}..{MAX_DIAMETER_M} m of graspable objects: the unit is "
                        f"probably wrong (try --unit mm or --unit m)")
    return mesh


def _as_single_mesh(loaded: object, path: Path) -> trimesh.Trimesh:
    if isinstance(loaded, trimesh.Trimesh):
        return loaded
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geoms:
            raise MeshError(f"mesh file {path} contains no triangle geometry")
        return geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    raise MeshError(f"mesh file {path} holds a {type(loaded).__name__}, not a triangle mesh")
