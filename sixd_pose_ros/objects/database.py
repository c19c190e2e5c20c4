"""Object databases of the known-model mode: one folder per object, copied to the robot as is.

``sixd-pose build-object --mesh FILE --unit mm --name NAME`` writes ``objects/NAME/``::

    object.json      what the folder holds and what built it (below)
    mesh.ply         the mesh in meters (mesh.glb when it is textured: the texture is embedded)
    references.npz   ReferenceSet: 64 rendered reference views (detector, selector, refiner)
    codebook.npz     Codebook: pose codes of the rotation grid (the trained encoder's retrieval)
    templates.npz    TemplateSet: views encoded by the frozen pretrained backbone (rotation
                     retrieval and PnP; objects/templates.py); added on first load when absent

``object.json`` records: ``name``; ``unit`` (of the stored mesh: always ``"m"``); ``mesh`` (file
name, its sha256, the geometry hash the codebook carries, vertex and face counts); ``source``
(the user's file name, its sha256 and the unit it was read in); ``normalization`` (``center``
in the object frame and ``scale`` = bounding radius, meters); ``diameter`` (meters); ``symmetry``
(as given, or ``null`` when unknown); ``format_version`` and ``package_version``; ``weights``
(sha256 identities of the ``encoder`` that made the codebook and of the ``detector`` /
``refiner`` weights present at build time, ``null`` when absent); ``references`` and
``codebook`` settings (``codebook`` is ``null`` when none was built); ``build`` (timings).

**Without an encoder** (no autoencoder weights yet) the folder is built with the references
only (``codebook: null``); :func:`add_codebook` encodes the codebook into it later, and
``build-object --overwrite`` once the weights exist does the same from scratch.

Every folder is written atomically (a hidden temporary sibling renamed at the end), so an
interrupted build leaves nothing; :func:`load_object_database` checks every file and the
weight identities and names the command that fixes each problem.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import trimesh

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.geometry.normalization import (
    ObjectNormalization,
    normalization_from_points,
    object_diameter,
)
from sixd_pose_ros.io import atomic_output_dir, atomic_write_text, file_sha256
from sixd_pose_ros.objects.codebook import (
    CODEBOOK_PRESETS,
    Codebook,
    CodebookError,
    Encoder,
    build_codebook,
    mesh_geometry_sha256,
)
from sixd_pose_ros.objects.references import (
    DEFAULT_RENDER_DISTANCE,
    ReferenceFormatError,
    ReferenceSet,
    render_references,
)
from sixd_pose_ros.render.mesh_io import MeshError, load_mesh

__all__ = [
    "OBJECT_DB_FORMAT_VERSION",
    "ObjectDatabase",
    "ObjectDatabaseError",
    "add_codebook",
    "build_object_database",
    "load_object_database",
    "shipped_weight_ids",
]

#: Version of the folder layout and ``object.json``; :func:`load_object_database` refuses others.
OBJECT_DB_FORMAT_VERSION = 1
_FORMAT_TAG = "sixd_pose_ros.ObjectDatabase"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
WEIGHT_ROLES = ("encoder", "detector", "refiner")


class ObjectDatabaseError(SixdPoseError):
    """An object database folder cannot be built or used; the message names the fix."""


@dataclass(eq=False)
class ObjectDatabase:
    """A loaded object folder.

    Attributes:
        name: object name (also its TF frame suffix and topic namespace).
        mesh: the mesh, meters.
        references: rendered reference views (normalized units; see ReferenceSet).
        codebook: the pose codebook, or ``None`` when the folder was built without an encoder.
        info: the parsed ``object.json``.
        path: the folder.
    """

    name: str
    mesh: trimesh.Trimesh
    references: ReferenceSet
    codebook: Optional[Codebook]
    info: dict
    path: Path

    @property
    def normalization(self) -> ObjectNormalization:
        """Object centre and scale (meters)."""
        return self.references.normalization

    @property
    def diameter(self) -> float:
        """Object diameter, meters (ADD thresholds)."""
        return float(self.info["diameter"])

    @property
    def symmetry(self) -> Any:
        """The symmetry recorded at build time, or ``None``."""
        return self.info.get("symmetry")


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def shipped_weight_ids() -> dict:
    """``{role: sha256 or None}`` of the weights in the package's ``weights/`` folder
    (``autoencoder.pt`` for the encoder, ``detector.pt``, ``refiner.pt``)."""
    from sixd_pose_ros.models.checkpoint import WEIGHTS_DIR

    files = {"encoder": "autoencoder.pt", "detector": "detector.pt", "refiner": "refiner.pt"}
    return {role: (file_sha256(WEIGHTS_DIR / f) if (WEIGHTS_DIR / f).is_file() else None)
            for role, f in files.items()}


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("sixd_pose_ros")
    except Exception:  # not installed: read the source tree's setup.py
        setup = Path(__file__).resolve().parents[2] / "setup.py"
        m = re.search(r'version="([^"]+)"', setup.read_text()) if setup.is_file() else None
        return m.group(1) if m else "unknown"


def _rebuild_command(info: Optional[dict], path: Path) -> str:
    name = (info or {}).get("name") or path.name
    mesh_file = ((info or {}).get("mesh") or {}).get("file")
    mesh = str(path / mesh_file) if mesh_file and (path / mesh_file).is_file() else "YOUR_MESH"
    unit = "m" if mesh != "YOUR_MESH" else "mm|m"
    return (f"rebuild it with `sixd-pose build-object --mesh {mesh} --unit {unit} --name {name} "
            f"--out {path.parent} --overwrite`")


def _resolve_settings(coarse: bool, subdivisions: Optional[int],
                      n_inplane: Optional[int]) -> tuple[str, int, int]:
    preset = "coarse" if coarse else "full"
    sub, n_inp = CODEBOOK_PRESETS[preset]
    if subdivisions is not None or n_inplane is not None:
        sub = sub if subdivisions is None else int(subdivisions)
        n_inp = n_inp if n_inplane is None else int(n_inplane)
        if (sub, n_inp) != CODEBOOK_PRESETS[preset]:
            preset = "custom"
    return preset, sub, n_inp


def _export_mesh(mesh: trimesh.Trimesh, folder: Path) -> str:
    """Write the metric mesh; returns its file name (glb keeps a texture image, ply colours)."""
    visual = mesh.visual
    textured = isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None \
        and getattr(visual.material, "image", None) is not None
    name = "mesh.glb" if textured else "mesh.ply"
    data = mesh.export(file_type=name.rsplit(".", 1)[1])
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return name


def _codebook_info(codebook: Codebook, preset: str) -> dict:
    return {"file": "codebook.npz", "preset": preset, "subdivisions": codebook.subdivisions,
            "n_inplane": codebook.n_inplane, "entries": len(codebook), "size": codebook.size,
            "distance": codebook.distance, "code_dim": codebook.dim}


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------


def build_object_database(
    mesh_path: Union[str, os.PathLike],
    name: str,
    out_dir: Union[str, os.PathLike] = "objects",
    unit: Optional[str] = None,
    encoder: Optional[Encoder] = None,
    encoder_id: Optional[str] = None,
    *,
    coarse: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    n_references: int = 64,
    size: int = 128,
    subdivisions: Optional[int] = None,
    n_inplane: Optional[int] = None,
    symmetry: Any = None,
    weights: Optional[dict] = None,
    batch: int = 256,
    templates: bool = False,
) -> Path:
    """Build ``out_dir/name/`` from a mesh file (atomic: all or nothing).

    Args:
        mesh_path: the user's mesh (ply/obj/stl/off/glb).
        name: object name: letters, digits and ``_``, starting with a letter (it becomes a
            ROS topic namespace and a TF frame).
        out_dir: parent folder of the object folders.
        unit: the mesh file's unit (``"mm"``, ``"m"``, ...); ``None`` guesses it (warning).
        encoder: the pose encoder (:data:`~sixd_pose_ros.objects.codebook.Encoder`); ``None``
            builds the references only (``codebook: null``; see :func:`add_codebook`).
        encoder_id: sha256 of the encoder's weights file; required with ``encoder``.
        coarse: the ``coarse`` codebook preset (642 x 36) instead of ``full`` (2562 x 36).
        overwrite: replace an existing folder (atomically).
        progress: tqdm bars.
        n_references, size: reference views and crop side.
        subdivisions, n_inplane: override the preset's grid (tests, experiments).
        symmetry: recorded as given (JSON-serializable), e.g. BOP ``symmetries_discrete``.
        weights: ``{role: sha256}`` recorded for the detector / refiner (default: the
            package's weights present now, see :func:`shipped_weight_ids`).
        batch: encoder batch size.
        templates: also encode the pretrained-feature templates (``templates.npz``,
            objects/templates.py) that known-model mode retrieves rotations from; without them
            the estimator encodes them when it loads the folder (about a minute per object on
            2 CPU cores).

    Returns:
        The object folder.

    Raises:
        ObjectDatabaseError: bad name, missing encoder identity. MeshError: unusable mesh.
        OutputError: the folder exists (without ``overwrite``) or cannot be written.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ObjectDatabaseError(
            f"object name {name!r} is not usable: use letters, digits and '_' starting with a "
            "letter (it becomes a ROS topic namespace and TF frame), e.g. --name mug_red")
    if encoder is not None and not encoder_id:
        raise ObjectDatabaseError("an encoder needs its identity: pass encoder_id = sha256 of "
                                  "its weights file (file_sha256(path))")
    try:
        json.dumps(symmetry)
    except TypeError as exc:
        raise ObjectDatabaseError(f"symmetry must be JSON-serializable ({exc})") from exc
    mesh_path = Path(mesh_path)
    final = Path(out_dir) / name
    t0 = time.perf_counter()
    user_mesh = load_mesh(mesh_path, unit)
    source_sha = file_sha256(mesh_path)
    used_unit = unit.strip().lower() if isinstance(unit, str) else None
    ids = {**shipped_weight_ids(), **(weights or {})}
    ids["encoder"] = encoder_id if encoder is not None else None
    seconds: dict[str, float] = {"load_mesh": time.perf_counter() - t0}
    with atomic_output_dir(final, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        # Everything is derived from the mesh *as stored* (ply keeps float32 coordinates), so
        # the robot, which reads the stored file, sees exactly the geometry that was rendered.
        mesh_file = _export_mesh(user_mesh, tmp)
        mesh = load_mesh(tmp / mesh_file, "m")
        del user_mesh
        points = np.asarray(mesh.vertices)
        norm = normalization_from_points(points)
        diameter = object_diameter(points)
        seconds["write_mesh"] = time.perf_counter() - t
        t = time.perf_counter()
        refs = render_references(mesh, n_views=n_references, size=size)
        seconds["render_references"] = time.perf_counter() - t
        codebook = None
        preset, sub, n_inp = _resolve_settings(coarse, subdivisions, n_inplane)
        if encoder is not None:
            codebook = build_codebook(mesh, encoder, subdivisions=sub, n_inplane=n_inp,
                                      batch=batch, size=size, progress=progress, name=name,
                                      encoder_id=encoder_id)
            seconds["render_views"] = codebook.timings["render"]
            seconds["warp"] = codebook.timings["warp"]
            seconds["encode"] = codebook.timings["encode"]
        if templates:
            from sixd_pose_ros.objects.templates import load_or_build_templates

            t = time.perf_counter()
            load_or_build_templates(tmp, mesh, progress=progress)
            seconds["templates"] = time.perf_counter() - t
        t = time.perf_counter()
        refs.save(tmp / "references.npz")
        if codebook is not None:
            codebook.save(tmp / "codebook.npz")
        seconds["write"] = time.perf_counter() - t + seconds.pop("write_mesh")
        seconds["total"] = time.perf_counter() - t0
        info = {
            "format": _FORMAT_TAG,
            "format_version": OBJECT_DB_FORMAT_VERSION,
            "package_version": _package_version(),
            "name": name,
            "unit": "m",
            "mesh": {"file": mesh_file, "sha256": file_sha256(tmp / mesh_file),
                     "geometry_sha256": mesh_geometry_sha256(mesh),
                     "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))},
            "source": {"file": mesh_path.name, "sha256": source_sha, "unit": used_unit},
            "normalization": {"center": norm.center.tolist(), "scale": norm.scale},
            "diameter": diameter,
            "symmetry": symmetry,
            "weights": ids,
            "references": {"file": "references.npz", "n_views": len(refs), "size": refs.size,
                           "distance": DEFAULT_RENDER_DISTANCE},
            "codebook": None if codebook is None else _codebook_info(codebook, preset),
            "build": {"seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        }
        atomic_write_text(tmp / "object.json", json.dumps(info, indent=1) + "\n")
    return final.absolute()


def add_codebook(path: Union[str, os.PathLike], encoder: Encoder, encoder_id: str, *,
                 coarse: bool = False, subdivisions: Optional[int] = None,
                 n_inplane: Optional[int] = None, progress: bool = True,
                 batch: int = 256) -> Codebook:
    """Encode the codebook of an existing folder (built without one, or with other encoder
    weights) and record it: ``codebook.npz`` is written first, then ``object.json`` (each
    atomically), so the folder is consistent at every instant. Returns the codebook."""
    path = Path(path)
    if not encoder_id:
        raise ObjectDatabaseError("add_codebook needs encoder_id = sha256 of the encoder's weights")
    info = _read_info(path)
    mesh = _load_mesh_checked(path, info)
    preset, sub, n_inp = _resolve_settings(coarse, subdivisions, n_inplane)
    size = int(info["references"]["size"])
    t = time.perf_counter()
    codebook = build_codebook(mesh, encoder, subdivisions=sub, n_inplane=n_inp, batch=batch,
                              size=size, progress=progress, name=info["name"],
                              encoder_id=encoder_id)
    codebook.save(path / "codebook.npz")
    info["codebook"] = _codebook_info(codebook, preset)
    info["weights"]["encoder"] = encoder_id
    info["build"]["seconds"]["codebook"] = time.perf_counter() - t
    atomic_write_text(path / "object.json", json.dumps(info, indent=1) + "\n")
    return codebook


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def _read_info(path: Path) -> dict:
    if not path.exists():
        raise ObjectDatabaseError(
            f"object database {path} does not exist: build it with `sixd-pose build-object "
            f"--mesh YOUR_MESH --unit mm|m --name {path.name} --out {path.parent}`, or fix the path")
    if not path.is_dir():
        raise ObjectDatabaseError(f"object database {path} is not a folder: give the folder "
                                  f"that `sixd-pose build-object` wrote (objects/NAME)")
    json_path = path / "object.json"
    if not json_path.is_file():
        raise ObjectDatabaseError(f"{json_path} is missing, so {path} is not a complete object "
                                  f"database; {_rebuild_command(None, path)}")
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ObjectDatabaseError(f"{json_path} cannot be read ({exc}): it is corrupt; "
                                  f"{_rebuild_command(None, path)}") from exc
    if not isinstance(info, dict) or info.get("format") != _FORMAT_TAG:
        raise ObjectDatabaseError(f"{json_path} is not a sixd_pose_ros object description; "
                                  f"{_rebuild_command(None, path)}")
    version = info.get("format_version")
    if version != OBJECT_DB_FORMAT_VERSION:
        raise ObjectDatabaseError(
            f"{path} is an object database in format version {version} (written by "
            f"sixd_pose_ros {info.get('package_version', '?')}), but this sixd_pose_ros "
            f"{_package_version()} reads version {OBJECT_DB_FORMAT_VERSION}; "
            f"{_rebuild_command(info, path)}")
    for key in ("name", "mesh", "references", "normalization", "diameter", "weights", "codebook"):
        if key not in info:
            raise ObjectDatabaseError(f"{json_path} lacks '{key}': it is incomplete; "
                                      f"{_rebuild_command(info, path)}")
    return info


def _load_mesh_checked(path: Path, info: dict) -> trimesh.Trimesh:
    mesh_path = path / info["mesh"]["file"]
    if not mesh_path.is_file():
        raise ObjectDatabaseError(f"mesh file {mesh_path} is missing from the object database; "
                                  f"{_rebuild_command(None, path)} from your original mesh")
    if file_sha256(mesh_path) != info["mesh"].get("sha256"):
        raise ObjectDatabaseError(f"mesh file {mesh_path} differs from the one the database was "
                                  f"built with (sha256 mismatch); "
                                  f"{_rebuild_command(None, path)} from your original mesh")
    try:
        return load_mesh(mesh_path, "m")
    except MeshError as exc:
        raise ObjectDatabaseError(f"{exc}; or {_rebuild_command(None, path)}") from exc


def load_object_database(path: Union[str, os.PathLike],
                         expected_weights: Optional[dict] = None) -> ObjectDatabase:
    """Load and check an object folder.

    Args:
        path: the folder ``objects/NAME``.
        expected_weights: ``{role: sha256}`` of the weights the caller will use (roles
            ``encoder``, ``detector``, ``refiner``). Each given role must match the recorded
            one; the encoder must match the codebook's (a folder without a codebook fails
            when an encoder is expected). Detector / refiner identities recorded as ``null``
            (no weights at build time) are not checked: references do not depend on them.

    Returns:
        :class:`ObjectDatabase`.

    Raises:
        ObjectDatabaseError: missing folder or file, unreadable or foreign ``object.json``,
            other format version, changed mesh, weights mismatch, corrupt npz; the message
            names the command that fixes it.
    """
    path = Path(path)
    info = _read_info(path)
    if info.get("mode", "known_model") != "known_model":  # model_free_database.py writes others
        raise ObjectDatabaseError(
            f"{path} is a {info['mode']} object database (posed photos, no mesh): use it with "
            "the model_free mode (load_model_free_database), or build a known_model one with "
            "`sixd-pose build-object --mesh ...`")
    rebuild = _rebuild_command(info, path)
    expected = {k: v for k, v in (expected_weights or {}).items() if v is not None}
    unknown = set(expected) - set(WEIGHT_ROLES)
    if unknown:
        raise ValueError(f"unknown weight roles {sorted(unknown)}; use {WEIGHT_ROLES}")
    recorded = info["weights"] or {}
    for role, want in expected.items():
        have = recorded.get(role)
        if role == "encoder" and (have is None or info["codebook"] is None):
            raise ObjectDatabaseError(
                f"object database {path} has no pose codebook (it was built without the "
                f"autoencoder weights), but the known_model mode needs one; {rebuild}")
        if have is not None and have != want:
            raise ObjectDatabaseError(
                f"object database {path} was built for other {role} weights "
                f"({have[:12]}... recorded, {want[:12]}... in use); {rebuild}")
    mesh = _load_mesh_checked(path, info)
    ref_path = path / info["references"].get("file", "references.npz")
    if not ref_path.is_file():
        raise ObjectDatabaseError(f"{ref_path} is missing from the object database; {rebuild}")
    try:
        refs = ReferenceSet.load(ref_path)
    except ReferenceFormatError as exc:
        raise ObjectDatabaseError(f"{exc} ({rebuild})") from exc
    codebook = None
    if info["codebook"] is not None:
        cb_path = path / info["codebook"].get("file", "codebook.npz")
        if not cb_path.is_file():
            raise ObjectDatabaseError(f"{cb_path} is missing from the object database; {rebuild}")
        try:
            codebook = Codebook.load(cb_path, expected_encoder_id=recorded.get("encoder"),
                                     rebuild_hint=rebuild)
        except CodebookError as exc:
            raise ObjectDatabaseError(str(exc)) from exc
        if codebook.mesh_sha256 != info["mesh"].get("geometry_sha256"):
            raise ObjectDatabaseError(f"{cb_path} was rendered from another mesh than "
                                      f"{info['mesh']['file']}; {rebuild}")
    return ObjectDatabase(name=info["name"], mesh=mesh, references=refs, codebook=codebook,
                          info=info, path=path.absolute())
