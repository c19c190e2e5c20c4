"""Decide the unit of a dataset's mesh files before any object database is built from them.

A mesh in metres read as millimetres (or the reverse) gives an object a thousand times too small
or too big: every pose then fails and the report says 0 % without saying why. BOP says meshes
are in millimetres and models_info.json gives the diameter in millimetres, so the two are
checked against each other and against the user's --mesh-unit.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from sixd_pose_ros.errors import DatasetError
from sixd_pose_ros.geometry.normalization import object_diameter

log = logging.getLogger(__name__)

_UNIT_TO_M = {"mm": 1e-3, "m": 1.0}


def raw_diameter(mesh_path: Path) -> float:
    """Diameter of the mesh in the file's own unit (no scaling applied)."""
    try:
        mesh = trimesh.load(mesh_path, force="mesh", process=False)
    except Exception as exc:
        raise DatasetError(f"cannot load mesh {mesh_path} ({exc}); re-create or re-download it") from exc
    if len(mesh.vertices) == 0:
        raise DatasetError(f"mesh {mesh_path} has no vertices; re-export it")
    return float(object_diameter(np.asarray(mesh.vertices)))


def decide_mesh_unit(mesh_path: Path, requested: str = "auto", info: dict[str, Any] | None = None) -> str:
    """``"mm"`` or ``"m"`` for ``mesh_path``.

    ``requested`` is ``auto``, ``mm`` or ``m``; ``info`` the object's models_info.json entry
    (diameter in mm) when the dataset has one. A requested unit that contradicts models_info by
    about a factor 1000 is an error naming the fix; ``auto`` picks the unit that agrees with
    models_info, else BOP's millimetres unless that would make the object smaller than 2 mm.
    """
    if requested not in ("auto", "mm", "m"):
        raise DatasetError(f"--mesh-unit {requested!r} is not one of auto, mm, m")
    diameter = raw_diameter(mesh_path)
    info_mm = float(info["diameter"]) if info and info.get("diameter") else None
    if info_mm:
        implied = {unit: diameter * scale * 1000.0 / info_mm for unit, scale in _UNIT_TO_M.items()}
        agrees = [u for u, ratio in implied.items() if 0.5 < ratio < 2.0]
        if requested != "auto":
            if requested not in agrees:
                raise DatasetError(
                    f"{mesh_path}: read in {requested} the mesh is {diameter * _UNIT_TO_M[requested]:.4g} m "
                    f"across but models_info.json says {info_mm / 1000:.4g} m: the mesh is "
                    f"{'in ' + agrees[0] + ', pass --mesh-unit ' + agrees[0] if agrees else 'inconsistent with models_info.json; fix one of them'}")
            return requested
        if agrees:
            if agrees[0] != "mm":
                log.warning("%s is in %s, not BOP's mm (checked against models_info.json); reading it so",
                            mesh_path, agrees[0])
            return agrees[0]
        raise DatasetError(f"{mesh_path} is {diameter:.4g} units across, models_info.json says "
                           f"{info_mm:.4g} mm: neither mm nor m fits; fix the mesh or models_info.json")
    if requested != "auto":
        return requested
    if diameter < 2.0:  # < 2 mm as millimetres: a metre-scale mesh (BOP meshes are mm)
        log.warning("%s is %.3g units across: read as metres (BOP meshes are mm; pass --mesh-unit "
                    "to override)", mesh_path, diameter)
        return "m"
    return "mm"
