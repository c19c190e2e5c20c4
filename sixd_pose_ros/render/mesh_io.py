"""Load user meshes (ply/obj/stl/glb/off) in meters, with a clear error for every bad file.

Users hand the node CAD exports whose unit is rarely stated in the file; a mesh in millimetres
read as meters is a 1000x error in translation, so the unit is either given or inferred from
the size with a warning that names the flag to set.
"""
from __future__ import annotations

import io
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
# Checked on the bounding-box diagonal, which is cheap and at most sqrt(3) times the diameter:
# a 2 m object has a diagonal of at most 3.5 m.
MIN_DIAMETER_M, MAX_DIAMETER_M = 0.002, 3.5


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
    if isinstance(unit, str):
        unit = unit.strip().lower()
    if unit is not None and unit not in UNIT_TO_METERS:
        raise MeshError(f"unknown mesh unit {unit!r}: use one of {sorted(UNIT_TO_METERS)} "
                        f"(e.g. --unit mm)")
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
    loaded = _read(path)
    mesh = _as_single_mesh(loaded, path)
    faces = np.asarray(mesh.faces)
    vertices = np.asarray(mesh.vertices)
    if len(faces) == 0 or len(vertices) < 3:
        raise MeshError(f"mesh {path} has no triangles (a point cloud?): give a triangle mesh "
                        f"(export it with faces, or reconstruct a surface first, e.g. MeshLab's "
                        f"Screened Poisson)")
    if len(faces) > MAX_FACES:
        raise MeshError(f"mesh {path} has {len(faces)} faces (limit {MAX_FACES}): decimate it "
                        f"(e.g. Blender's Decimate or MeshLab's Quadric Edge Collapse)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"mesh {path} has faces that index vertices outside 0..{len(vertices) - 1}: "
                        f"the file is corrupt, re-export it from your CAD tool")
    if not np.isfinite(vertices).all():
        raise MeshError(f"mesh {path} has NaN or infinite vertex coordinates: repair it in your CAD tool")
    extent = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    if extent <= 0 or not float(mesh.area) > 0:
        raise MeshError(f"mesh {path} is degenerate (all vertices at one point, or every triangle "
                        f"has zero area): re-export the real geometry from your CAD tool")
    if unit is None:
        unit = infer_unit(extent)
        LOG.warning("mesh %s has no unit given; guessed %r from its size (%.4g file units across). "
                    "Pass the unit explicitly (--unit mm|m) to silence this.", path, unit, extent)
    mesh.apply_scale(UNIT_TO_METERS[unit])
    diameter = extent * UNIT_TO_METERS[unit]
    if not MIN_DIAMETER_M <= diameter <= MAX_DIAMETER_M:
        raise MeshError(f"mesh {path} is {diameter:.4g} m across (bounding-box diagonal) in unit "
                        f"{unit!r}, outside the {MIN_DIAMETER_M}..{MAX_DIAMETER_M} m of graspable objects: the unit is "
                        f"probably wrong (try --unit mm or --unit m)")
    return mesh


# Formats that trimesh reads as text; a CAD tool writing Latin-1 / CP1252 comments or names
# (e.g. "# Créé par ...") makes trimesh fall back to the optional charset_normalizer module.
_TEXT_SUFFIXES = (".obj", ".off", ".stl")


def _read(path: Path) -> object:
    """trimesh.load, retried once on text that is not UTF-8, any failure as a MeshError."""
    try:
        return trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        first = exc
    if isinstance(first, (ImportError, UnicodeError)):
        retry = _utf8_copy(path)
        if retry is not None:
            try:
                return trimesh.load(io.BytesIO(retry), file_type=path.suffix.lower()[1:],
                                    resolver=_Utf8Resolver(path), process=False)
            except Exception as exc:
                first = exc
    raise MeshError(f"cannot read mesh {path} ({type(first).__name__}: {first}): the file is "
                    f"corrupt, truncated or not really a {path.suffix} file: re-export it from "
                    f"your CAD tool") from first


def _to_utf8(data: bytes) -> bytes:
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        return data.decode("latin-1").encode("utf-8")


def _utf8_copy(path: Path) -> bytes | None:
    """The file's bytes with non-UTF-8 text made UTF-8, or None when that cannot help."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        fixed = _to_utf8(data)
    elif suffix == ".ply":  # only the header is text; keep the (maybe binary) body byte for byte
        end = data.find(b"end_header")
        if end < 0:
            return None
        header = bytes(b if b < 0x80 else 0x3F for b in data[:end])  # same length, '?' for non-ASCII
        fixed = header + data[end:]
    else:
        return None
    return None if fixed == data else fixed


class _Utf8Resolver(trimesh.resolvers.FilePathResolver):
    """Resolves an obj's mtl next to the mesh, made UTF-8 like the obj itself."""

    def get(self, name: str) -> bytes:
        data = super().get(name)
        return _to_utf8(data) if str(name).lower().endswith(".mtl") else data


def _as_single_mesh(loaded: object, path: Path) -> trimesh.Trimesh:
    if isinstance(loaded, trimesh.Trimesh):
        return loaded
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise MeshError(f"mesh file {path} holds no geometry at all: it is empty, truncated, "
                            f"corrupt or not really a {path.suffix} file: re-export it from your "
                            f"CAD tool")
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geoms:
            raise MeshError(f"mesh file {path} contains no triangle geometry (empty, or only "
                            f"points/lines): export the object as a triangle mesh")
        if len(geoms) == 1:
            return geoms[0]
        try:
            return trimesh.util.concatenate(geoms)
        except Exception as exc:
            raise MeshError(f"cannot merge the {len(geoms)} parts of mesh {path} ({exc}): join "
                            f"them into one object in your CAD tool and re-export") from exc
    raise MeshError(f"mesh file {path} holds a {type(loaded).__name__}, not a triangle mesh: "
                    f"export the object as a triangle mesh (with faces)")
