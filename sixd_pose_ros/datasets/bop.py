"""BOP-format datasets: write what the scene synthesizer renders, read what evaluation needs.

The layout and conventions follow the BOP challenge format (as documented by bop_toolkit's
``docs/bop_datasets_format.md`` and used by its ``inout`` module), so that datasets written
here can be evaluated with bop_toolkit and real BOP datasets can be read by our evaluation:

* models: ``models/obj_{obj_id:06d}.ply`` in **millimeters**, plus ``models_info.json``
  (``diameter``, ``min_*``, ``size_*`` in mm, optional ``symmetries_continuous`` /
  ``symmetries_discrete`` with 4x4 row-major matrices whose translation is in mm);
* scenes: ``scene_camera.json`` (``cam_K`` row-major, ``depth_scale``: stored depth times
  ``depth_scale`` gives millimeters), ``scene_gt.json`` (``cam_R_m2c`` row-major,
  ``cam_t_m2c`` in mm, ``obj_id``), ``scene_gt_info.json`` (boxes ``[x, y, w, h]`` and pixel
  counts), ``rgb/{im_id:06d}.png``, ``depth/{im_id:06d}.png`` (uint16),
  ``mask/{im_id:06d}_{gt_id:06d}.png`` and ``mask_visib/...`` (0/255).

In memory everything is meters and RGB (:mod:`sixd_pose_ros.datasets.types`); this module is
the only place that knows about millimeters, depth scales and cv2's BGR order.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import trimesh

from sixd_pose_ros.datasets.gt_entries import BadGroundTruthError, parse_gt_entry
from sixd_pose_ros.datasets.types import GTInstance, SceneFrame
from sixd_pose_ros.errors import DatasetError, OutputError
from sixd_pose_ros.io import AtomicOutputDir, atomic_output_dir

__all__ = [
    "BopSceneWriter",
    "write_bop_models",
    "models_info_entry",
    "symmetry_entries",
    "read_bop_scene",
    "read_bop_models_info",
    "load_bop_model",
    "read_bop_single_frame",
    "DEFAULT_FRAME_PERIOD_NS",
]

log = logging.getLogger(__name__)

#: BOP stores no time; readers give frame ``im_id`` the stamp ``im_id * period`` (30 Hz).
DEFAULT_FRAME_PERIOD_NS = 33_333_333

_UINT16_MAX = 65535


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _dump_bop_json(content: Mapping[Any, Any]) -> str:
    """JSON in bop_toolkit's layout: one top-level key per line, values compact.

    Keeps files diff-able and small (a scene_gt.json of 1000 frames stays readable) while
    floats keep full float64 precision (``json`` writes the shortest exact repr).
    """
    keys = sorted(content, key=lambda k: int(k))
    lines = [f'  "{int(k)}": {json.dumps(content[k], separators=(", ", ": "))}' for k in keys]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"{path} is missing; a BOP scene/model folder needs it (see bop_toolkit's "
            "docs/bop_datasets_format.md), or point to the right folder"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path} is not valid JSON ({exc}); re-create or re-download it"
        ) from exc


def _bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight box ``[x, y, w, h]`` with inclusive extent (BOP's calc_2d_bbox); -1s if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [-1, -1, -1, -1]
    cols = np.flatnonzero(mask.any(axis=0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def _imwrite(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    if not cv2.imwrite(str(path), image, list(params)):
        raise OutputError(f"could not write {path}; check free disk space and permissions")


def _mask_png(mask: np.ndarray) -> np.ndarray:
    """bool mask -> 0/255 uint8, BOP's mask image convention."""
    return mask.astype(np.uint8) * 255


def _imread(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f"cannot read image {path}; the file is missing or corrupt")
    return image


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """cv2's BGR / gray / BGRA image -> (H, W, 3) uint8 RGB."""
    if image.dtype != np.uint8:
        # 16-bit color PNGs exist in some datasets; keep the top 8 bits.
        image = (image >> 8) if image.dtype == np.uint16 else image
        image = image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def _diameter(points: np.ndarray) -> float:
    """Largest distance between two points (the BOP object diameter).

    The farthest pair always lies on the convex hull, so the quadratic search runs over hull
    vertices only (hundreds, not the 10^5 vertices of a scanned mesh). Flat or degenerate
    point sets make qhull fail; they then fall back to all points, in chunks.
    """
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import cdist

    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except Exception:  # scipy.spatial.QhullError for coplanar/collinear input
        pass
    best = 0.0
    for start in range(0, len(pts), 2048):
        best = max(best, float(cdist(pts[start : start + 2048], pts).max()))
    return best


_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}
_SYM_RE = re.compile(
    r"^(?:continuous_(?P<c_axis>[xyz])|discrete_(?P<n>\d+)(?:_(?P<d_axis>[xyz]))?)$"
)


def symmetry_entries(labels: str | Sequence[str] | None) -> dict[str, list[Any]]:
    """Turn symmetry labels into BOP ``models_info.json`` fields.

    Labels (about the model origin, axes of the model frame):

    * ``"continuous_x|y|z"``: rotation by any angle about that axis ->
      ``symmetries_continuous: [{"axis": [...], "offset": [0, 0, 0]}]``;
    * ``"discrete_N"`` (z axis) or ``"discrete_N_x|y|z"``: rotations by 2*pi*k/N, k = 1..N-1
      -> ``symmetries_discrete``: N-1 4x4 matrices, flattened row-major, translation in mm
      (zero here: the axis passes through the origin).

    Several labels combine (a cylinder: ``["continuous_z", "discrete_2_x"]``). ``"none"`` and
    ``"near"`` (near-symmetric: symmetric up to a small feature, so not a symmetry) add nothing.
    """
    if labels is None:
        return {}
    if isinstance(labels, str):
        labels = [labels]
    continuous: list[dict[str, list[float]]] = []
    discrete: list[list[float]] = []
    for label in labels:
        if label.strip().lower() in ("none", "near"):
            continue
        m = _SYM_RE.match(label.strip().lower())
        if not m:
            raise ValueError(
                f"unknown symmetry label {label!r}; use 'continuous_<x|y|z>', 'discrete_<N>' "
                "or 'discrete_<N>_<x|y|z>'"
            )
        if m["c_axis"]:
            continuous.append({"axis": list(_AXES[m["c_axis"]]), "offset": [0.0, 0.0, 0.0]})
            continue
        n = int(m["n"])
        if n < 2:
            raise ValueError(f"symmetry label {label!r}: N must be at least 2")
        axis = np.array(_AXES[m["d_axis"] or "z"])
        for k in range(1, n):
            angle = 2.0 * math.pi * k / n
            # Rodrigues: R = I + sin(a) [axis]x + (1 - cos(a)) [axis]x^2
            ax = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            rot = np.eye(3) + math.sin(angle) * ax + (1.0 - math.cos(angle)) * (ax @ ax)
            rot[np.abs(rot) < 1e-15] = 0.0  # keep exact zeros for readable files
            tf = np.eye(4)
            tf[:3, :3] = rot
            discrete.append(tf.reshape(-1).tolist())
    out: dict[str, list[Any]] = {}
    if continuous:
        out["symmetries_continuous"] = continuous
    if discrete:
        out["symmetries_discrete"] = discrete
    return out


def models_info_entry(
    mesh: trimesh.Trimesh, symmetries: str | Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``models_info.json`` entry of a mesh given in meters (values in millimeters)."""
    vertices_mm = np.asarray(mesh.vertices, dtype=np.float64) * 1000.0
    lo, hi = vertices_mm.min(axis=0), vertices_mm.max(axis=0)
    size = hi - lo
    entry: dict[str, Any] = {
        "diameter": _diameter(vertices_mm),
        "min_x": float(lo[0]),
        "min_y": float(lo[1]),
        "min_z": float(lo[2]),
        "size_x": float(size[0]),
        "size_y": float(size[1]),
        "size_z": float(size[2]),
    }
    entry.update(symmetry_entries(symmetries))
    return entry


def _texture_image(mesh: trimesh.Trimesh) -> Any | None:
    """The PIL image of a textured mesh (SimpleMaterial.image or PBR baseColorTexture)."""
    visual = mesh.visual
    if getattr(visual, "kind", None) != "texture" or getattr(visual, "uv", None) is None:
        return None
    material = getattr(visual, "material", None)
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)
    return image


def _vertex_colors(mesh: trimesh.Trimesh) -> np.ndarray:
    """(N, 3) uint8 colors per vertex; textures are baked by sampling them at the uv coords.

    Many renderers (and bop_toolkit's own for untextured models) only use vertex colors, so
    textured models get both: the texture file + uv (as BOP ships them) and baked colors.
    """
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture":
        try:
            colors = visual.to_color().vertex_colors
        except Exception:  # texture without image: no color information to bake
            colors = None
    else:
        colors = visual.vertex_colors  # face colors are converted by trimesh
    if colors is None or len(colors) != len(mesh.vertices):
        return np.full((len(mesh.vertices), 3), 128, np.uint8)
    return np.asarray(colors)[:, :3].astype(np.uint8)


def _write_ply_mm(path: Path, mesh: trimesh.Trimesh, texture_file: str | None) -> None:
    """Binary little-endian PLY in millimeters with normals, colors and optional uv.

    Property names are the ones bop_toolkit's ``inout.load_ply`` and trimesh understand
    (``red/green/blue``, ``texture_u/texture_v``, ``comment TextureFile <png>``).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64) * 1000.0
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    colors = _vertex_colors(mesh)
    faces = np.asarray(mesh.faces, dtype=np.int32)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if texture_file is not None:
        fields += [("texture_u", "<f4"), ("texture_v", "<f4")]
    vdata = np.empty(len(vertices), dtype=fields)
    for i, name in enumerate("xyz"):
        vdata[name] = vertices[:, i]
        vdata["n" + name] = normals[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vdata[name] = colors[:, i]
    if texture_file is not None:
        uv = np.asarray(mesh.visual.uv, dtype=np.float64)
        vdata["texture_u"], vdata["texture_v"] = uv[:, 0], uv[:, 1]
    fdata = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    fdata["n"] = 3
    fdata["idx"] = faces
    ply_types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment sixd_pose_ros, units: mm"]
    if texture_file is not None:
        header.append(f"comment TextureFile {texture_file}")
    header.append(f"element vertex {len(vdata)}")
    header += [f"property {ply_types[t]} {name}" for name, t in fields]
    header += [f"element face {len(fdata)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vdata.tobytes())
        fh.write(fdata.tobytes())


def write_bop_models(
    models_dir: Path | str,
    models: Mapping[int, trimesh.Trimesh],
    symmetries: Mapping[int, str | Sequence[str]] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write meshes (meters in memory) as a BOP ``models`` folder (millimeters on disk).

    Creates ``obj_{id:06d}.ply`` (+ ``obj_{id:06d}.png`` for textured meshes, with per-vertex
    ``texture_u/texture_v`` as in BOP's textured models, and baked vertex colors too) and
    ``models_info.json``. ``symmetries`` maps obj_id to labels understood by
    :func:`symmetry_entries`. The folder appears atomically; see
    :func:`~sixd_pose_ros.io.atomic_output_dir`.
    """
    symmetries = symmetries or {}
    unknown = set(symmetries) - set(models)
    if unknown:
        raise ValueError(f"symmetries given for objects without a model: {sorted(unknown)}")
    info: dict[int, dict[str, Any]] = {}
    with atomic_output_dir(models_dir, overwrite=overwrite) as tmp:
        for obj_id in sorted(models):
            mesh = models[obj_id]
            if int(obj_id) < 1:
                raise ValueError(f"BOP object ids start at 1, got {obj_id}")
            stem = f"obj_{int(obj_id):06d}"
            texture = _texture_image(mesh)
            texture_file = None
            if texture is not None:
                texture_file = f"{stem}.png"
                texture.save(tmp / texture_file)
            _write_ply_mm(tmp / f"{stem}.ply", mesh, texture_file)
            info[int(obj_id)] = models_info_entry(mesh, symmetries.get(obj_id))
        (tmp / "models_info.json").write_text(_dump_bop_json(info), encoding="utf-8")
    return Path(models_dir)


def read_bop_models_info(models_dir: Path | str) -> dict[int, dict[str, Any]]:
    """``models_info.json`` keyed by int obj_id; values as in the file (millimeters)."""
    raw = _load_json(Path(models_dir) / "models_info.json")
    return {int(k): v for k, v in raw.items()}


def load_bop_model(models_dir: Path | str, obj_id: int) -> trimesh.Trimesh:
    """Load ``obj_{obj_id:06d}.ply`` and return it in meters (vertex order kept)."""
    path = Path(models_dir) / f"obj_{int(obj_id):06d}.ply"
    if not path.is_file():
        raise DatasetError(f"model file {path} is missing; check the models folder and obj_id")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:
        raise DatasetError(f"cannot load mesh {path} ({exc}); re-create or re-download it") from exc
    mesh.apply_scale(0.001)
    return mesh


# --------------------------------------------------------------------------------------------
# scenes: writing
# --------------------------------------------------------------------------------------------


class BopSceneWriter:
    """Writes :class:`SceneFrame` objects as one BOP scene folder.

    Frames are written as they come (images immediately, JSON at :meth:`close`), into a hidden
    temporary folder that becomes ``scene_dir`` only at :meth:`close`; an exception inside a
    ``with`` block, or a writer dropped without ``close``, leaves nothing behind.

    ``depth_scale`` is BOP's: millimeters per stored unit (``uint16 * depth_scale = mm``). The
    default 0.1 gives 0.1 mm resolution and a 6.5535 m range; depths beyond the range are
    stored as 0 (no measurement) and counted in :attr:`n_depth_clipped` (and logged).

    ``gt_info`` follows bop_toolkit's calc_gt_info, restricted to the image: ``px_count_all``
    counts the full silhouette (``GTInstance.mask``) inside the image, ``px_count_valid`` the
    part of it with a depth measurement, ``px_count_visib`` the visible mask, ``visib_fract``
    their ratio; without a full mask, the visible mask stands in for it (so ``visib_fract``
    is 1 and ``bbox_obj`` = ``bbox_visib``).
    """

    def __init__(
        self,
        scene_dir: Path | str,
        depth_scale: float = 0.1,
        *,
        image_format: str = "png",
        jpg_quality: int = 95,
        overwrite: bool = False,
    ) -> None:
        if image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be positive (mm per unit), got {depth_scale}")
        self.scene_dir = Path(scene_dir)
        self.depth_scale = float(depth_scale)
        self.image_format = image_format
        self.jpg_quality = int(jpg_quality)
        self.n_depth_clipped = 0
        self._out = AtomicOutputDir(self.scene_dir, overwrite=overwrite)
        root = self._out.path
        for sub in ("rgb", "depth", "mask", "mask_visib"):
            (root / sub).mkdir()
        self._camera: dict[int, dict[str, Any]] = {}
        self._gt: dict[int, list[dict[str, Any]]] = {}
        self._gt_info: dict[int, list[dict[str, Any]]] = {}
        self._any_full_mask = False

    # context manager: close on success, abort on error
    def __enter__(self) -> BopSceneWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _depth_to_uint16(self, depth_m: np.ndarray) -> np.ndarray:
        units = depth_m.astype(np.float64) * (1000.0 / self.depth_scale)
        valid = np.isfinite(units) & (units > 0)
        too_far = valid & (np.rint(units) > _UINT16_MAX)
        self.n_depth_clipped += int(too_far.sum())
        out = np.zeros(depth_m.shape, np.uint16)
        keep = valid & ~too_far
        out[keep] = np.rint(units[keep]).astype(np.uint16)
        return out

    def add(self, frame: SceneFrame, im_id: int) -> None:
        """Write one frame's images now and keep its annotations for :meth:`close`."""
        if self._out.finished:
            raise RuntimeError("BopSceneWriter.add() after close() or abort()")
        im_id = int(im_id)
        if im_id in self._camera:
            raise ValueError(f"im_id {im_id} was already added to {self.scene_dir}")
        root = self._out.path
        name = f"{im_id:06d}"
        bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        if self.image_format == "png":
            _imwrite(root / "rgb" / f"{name}.png", bgr)
        else:
            quality = [cv2.IMWRITE_JPEG_QUALITY, self.jpg_quality]
            _imwrite(root / "rgb" / f"{name}.jpg", bgr, quality)
        _imwrite(root / "depth" / f"{name}.png", self._depth_to_uint16(frame.depth))

        self._camera[im_id] = {
            "cam_K": frame.K.reshape(-1).tolist(),
            "depth_scale": self.depth_scale,
        }
        gts, infos = [], []
        has_depth = frame.depth > 0
        for gt_id, inst in enumerate(frame.instances):
            if inst.mask_visib is None:
                raise ValueError(
                    f"instance {gt_id} of im_id {im_id} has no mask_visib; a BOP scene needs "
                    "visible masks (mask_visib/ and scene_gt_info.json are part of the format)"
                )
            if inst.mask_visib.shape != has_depth.shape:
                raise ValueError(f"mask_visib of instance {gt_id} does not match the image size")
            gts.append(
                {
                    "cam_R_m2c": inst.R_m2c.reshape(-1).tolist(),
                    "cam_t_m2c": (inst.t_m2c * 1000.0).tolist(),
                    "obj_id": inst.obj_id,
                }
            )
            full = inst.mask if inst.mask is not None else inst.mask_visib
            if inst.mask is not None:
                self._any_full_mask = True
                _imwrite(root / "mask" / f"{name}_{gt_id:06d}.png", _mask_png(inst.mask))
            _imwrite(root / "mask_visib" / f"{name}_{gt_id:06d}.png", _mask_png(inst.mask_visib))
            px_all = int(full.sum())
            px_visib = int(inst.mask_visib.sum())
            infos.append(
                {
                    "bbox_obj": _bbox_xywh(full),
                    "bbox_visib": _bbox_xywh(inst.mask_visib),
                    "px_count_all": px_all,
                    "px_count_valid": int((full & has_depth).sum()),
                    "px_count_visib": px_visib,
                    "visib_fract": px_visib / px_all if px_all > 0 else 0.0,
                }
            )
        self._gt[im_id] = gts
        self._gt_info[im_id] = infos

    def close(self) -> Path:
        """Write the JSON files and make the scene folder appear; returns its path."""
        if self._out.finished:
            raise RuntimeError("BopSceneWriter.close() called twice or after abort()")
        root = self._out.path
        try:
            if not self._any_full_mask:
                (root / "mask").rmdir()  # no full silhouettes were given: no empty folder
            for name, content in (
                ("scene_camera.json", self._camera),
                ("scene_gt.json", self._gt),
                ("scene_gt_info.json", self._gt_info),
            ):
                (root / name).write_text(_dump_bop_json(content), encoding="utf-8")
        except BaseException:
            self.abort()
            raise
        if self.n_depth_clipped:
            log.warning(
                "%s: %d depth pixels beyond %.4f m were stored as 0 (no measurement); use a "
                "larger depth_scale to keep them",
                self.scene_dir,
                self.n_depth_clipped,
                _UINT16_MAX * self.depth_scale / 1000.0,
            )
        return self._out.commit()

    def abort(self) -> None:
        """Discard everything written so far."""
        self._out.abort()


# --------------------------------------------------------------------------------------------
# scenes: reading
# --------------------------------------------------------------------------------------------


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in (".png", ".jpg", ".jpeg", ".tif"):
        path = folder / f"{stem}{ext}"
        if path.is_file():
            return path
    return None


def _read_depth_m(path: Path, depth_scale: float) -> np.ndarray:
    raw = _imread(path, cv2.IMREAD_ANYDEPTH)
    return (raw.astype(np.float64) * (depth_scale / 1000.0)).astype(np.float32)


def _depth_m_or_zeros(path: Path | None, cam: Mapping[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """Depth in meters from a frame's depth image, or all zeros (no measurement) without one."""
    if path is None:
        return np.zeros(shape, np.float32)
    return _read_depth_m(path, float(cam.get("depth_scale", 1.0)))


def _read_mask(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    image = _imread(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = image[..., 0]
    return image > 0


def _instances_from_gt(
    gts: Sequence[Mapping[str, Any]],
    scene_dir: Path | None,
    name: str,
    *,
    im_id: int | None = None,
    problems: list[tuple[int | None, str]] | None = None,
) -> list[GTInstance]:
    """The usable instances of one frame's ground truth (rotations re-orthonormalized).

    A bad entry raises :class:`BadGroundTruthError`, or with ``problems`` (evaluation's
    tolerant mode) is skipped and listed: one bad instance must not abort a run. ``gt_id``
    (the mask file index) stays the entry's position, skipped entries included.
    """
    gt_file = (scene_dir / "scene_gt.json") if scene_dir is not None else Path("scene_gt.json")
    instances = []
    for gt_id, gt in enumerate(gts):
        try:
            obj_id, R, t = parse_gt_entry(gt, f"{gt_file}, image {im_id}, instance {gt_id}")
        except BadGroundTruthError as exc:
            if problems is None:
                raise
            log.warning("%s (instance skipped)", exc)
            problems.append((im_id, f"{exc} (instance skipped)"))
            continue
        mask_visib = mask = None
        if scene_dir is not None:
            mask_visib = _read_mask(scene_dir / "mask_visib" / f"{name}_{gt_id:06d}.png")
            mask = _read_mask(scene_dir / "mask" / f"{name}_{gt_id:06d}.png")
        instances.append(GTInstance(obj_id=obj_id, R_m2c=R, t_m2c=t, mask_visib=mask_visib, mask=mask))
    return instances


def read_bop_scene(
    scene_dir: Path | str,
    *,
    frame_period_ns: int = DEFAULT_FRAME_PERIOD_NS,
    problems: list[tuple[int | None, str]] | None = None,
) -> Iterator[SceneFrame]:
    """Yield the frames of a BOP scene folder in ascending ``im_id``.

    Depth is converted to float32 meters (0 = no measurement; zeros if the scene has no depth
    images, as some BOP test sets have none). Masks are read when the files exist, else
    ``None``. BOP stores no time, so ``stamp_ns = im_id * frame_period_ns``; ``frame_id`` is
    the default camera frame and ``im_id`` is set.

    Ground-truth rotations within 2e-2 of orthonormal (real BOP sets store up to 1e-2) are
    re-orthonormalized; worse ones are bad entries.

    ``problems``: without it an incomplete scene or a bad ground-truth entry raises
    :class:`DatasetError`. With a list, evaluation's tolerant mode: a frame without its colour
    image and a bad ground-truth entry are skipped, and they, a frame
    without a ground-truth entry and a scene without ``scene_gt.json`` are appended as
    ``(im_id or None, message)`` so that results can be marked partial instead of silently
    shrinking.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(f"BOP scene folder {scene_dir} does not exist; check the path")
    camera = {int(k): v for k, v in _load_json(scene_dir / "scene_camera.json").items()}
    gt_path = scene_dir / "scene_gt.json"
    gt = {int(k): v for k, v in _load_json(gt_path).items()} if gt_path.is_file() else {}
    if problems is not None and not gt_path.is_file():
        problems.append((None, f"{gt_path} is missing: no ground truth for this scene"))
    for im_id in sorted(camera):
        name = f"{im_id:06d}"
        color_path = _find_image(scene_dir / "rgb", name) or _find_image(scene_dir / "gray", name)
        if color_path is None:
            message = f"no rgb/{name}.png (or .jpg) in {scene_dir}; the scene is incomplete"
            if problems is None:
                raise DatasetError(message)
            log.warning("%s: frame skipped", message)
            problems.append((im_id, message))
            continue
        if problems is not None and gt and im_id not in gt:
            problems.append((im_id, f"{gt_path} has no entry for frame {im_id}"))
        rgb = _to_rgb(_imread(color_path, cv2.IMREAD_UNCHANGED))
        cam = camera[im_id]
        depth = _depth_m_or_zeros(_find_image(scene_dir / "depth", name), cam, rgb.shape[:2])
        yield SceneFrame(
            rgb=rgb,
            depth=depth,
            K=np.asarray(cam["cam_K"], np.float64).reshape(3, 3),
            instances=_instances_from_gt(gt.get(im_id, []), scene_dir, name, im_id=im_id,
                                         problems=problems),
            stamp_ns=im_id * int(frame_period_ns),
            im_id=im_id,
        )


def read_bop_single_frame(folder: Path | str) -> SceneFrame:
    """Read a one-frame BOP excerpt: ``rgb.png``, ``depth.png``, ``camera.json``, ``scene_gt.json``.

    Not the standard layout: ``camera.json`` is one ``scene_camera`` entry (``cam_K``,
    ``depth_scale``) and ``scene_gt.json`` has a single ``im_id`` key. Used for real-data smoke
    tests (e.g. one LM-O frame); masks are ``None``.
    """
    folder = Path(folder)
    cam = _load_json(folder / "camera.json")
    gt = _load_json(folder / "scene_gt.json")
    if len(gt) != 1:
        raise DatasetError(
            f"{folder / 'scene_gt.json'} should hold exactly one frame, has {len(gt)}"
        )
    (key, gts), = gt.items()
    rgb = _to_rgb(_imread(folder / "rgb.png", cv2.IMREAD_UNCHANGED))
    depth_path = folder / "depth.png"
    depth = _depth_m_or_zeros(depth_path if depth_path.is_file() else None, cam, rgb.shape[:2])
    return SceneFrame(
        rgb=rgb,
        depth=depth,
        K=np.asarray(cam["cam_K"], np.float64).reshape(3, 3),
        instances=_instances_from_gt(gts, None, "", im_id=int(key)),
        stamp_ns=0,
        im_id=int(key),
    )
