"""Posed reference images: the three readers (plain folder, BOP scene, COLMAP text model) on
renders of a procedural object from known cameras, and their bad-input messages.

The helpers here (render_views, write_folder, write_bop, write_colmap) also serve
test_model_free_database.py: they write what a user would bring, in each documented format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from sixd_pose_ros.datasets.bop import BopSceneWriter
from sixd_pose_ros.datasets.types import GTInstance, SceneFrame
from sixd_pose_ros.geometry import (
    geodesic_angle,
    inplane_rotation,
    look_at_rotation,
    normalization_from_points,
)
from sixd_pose_ros.geometry.normalization import ObjectNormalization
from sixd_pose_ros.objects.posed_images import (
    PosedImagesError,
    detect_format,
    focal_from_exif,
    read_posed_images,
)
from sixd_pose_ros.render.procedural import make_object
from sixd_pose_ros.render.renderer import RenderMesh, render

W, H = 160, 120
K_TRUE = np.array([[150.0, 0.0, 81.3], [0.0, 148.0, 58.6], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------------
# Synthetic posed photos
# ------------------------------------------------------------------------------------------------


@dataclass
class Views:
    """Renders of one object from known cameras; poses object-to-camera, meters."""

    mesh: object
    norm: ObjectNormalization  # true centre (object frame) and bounding radius
    R: np.ndarray  # (N, 3, 3)
    t: np.ndarray  # (N, 3)
    K: np.ndarray
    rgb: np.ndarray  # (N, H, W, 3)
    depth: np.ndarray  # (N, H, W) meters
    mask: np.ndarray  # (N, H, W) bool

    def __len__(self) -> int:
        return len(self.R)


def view_directions(n: int, elevations=(-70.0, 80.0), seed: int = 0) -> np.ndarray:
    """``n`` directions spiralling over an elevation band (a Fibonacci spiral)."""
    k = np.arange(n) + 0.5
    lo, hi = np.sin(np.radians(elevations))
    z = lo + (hi - lo) * k / n
    phi = k * np.pi * (3.0 - np.sqrt(5.0)) + seed
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def render_views(n: int = 20, *, elevations=(-70.0, 80.0), distance: float = 3.5,
                 aim_jitter: float = 0.0, seed: int = 0, index: int = 7) -> Views:
    """Render a held-out procedural object from ``n`` cameras at ``distance`` bounding radii,
    looking at its centre (plus ``aim_jitter`` radii of random aim error), with random roll."""
    obj = make_object("heldout", index)
    norm = normalization_from_points(np.asarray(obj.mesh.vertices))
    rng = np.random.default_rng(seed)
    dirs = view_directions(n, elevations, seed)
    R = look_at_rotation(dirs)
    R = inplane_rotation(rng.uniform(-0.6, 0.6, n)) @ R
    aim = norm.center + aim_jitter * norm.scale * rng.normal(size=(n, 3))
    cam = norm.center + distance * norm.scale * dirs  # camera centres, object frame
    # look at `aim` from `cam`: re-aim the optical axis, keep roughly the same roll
    R = np.stack([_look(c, a, Ri) for c, a, Ri in zip(cam, aim, R)])
    t = -np.einsum("nij,nj->ni", R, cam)
    out = render([RenderMesh.from_trimesh(obj.mesh)], R, t, K_TRUE, W, H)
    return Views(obj.mesh, norm, R, t, K_TRUE.copy(), out.rgb, out.depth, out.mask == 1)


def _look(cam: np.ndarray, target: np.ndarray, R_hint: np.ndarray) -> np.ndarray:
    z = target - cam
    z /= np.linalg.norm(z)
    x = R_hint[0] - (R_hint[0] @ z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def _similarity(seed: int = 3) -> tuple[float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 4.7, Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3) * 2.0


def _imwrite(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def write_folder(views: Views, folder: Path, *, T_o2w: np.ndarray | None = None,
                 depth: bool = False, mask: bool = False, convention: str = "camera_to_world",
                 fmt: str = "json", units: str = "m", obj_block: dict | None = None,
                 camera_axes: str = "opencv", K_mode: str = "K", pose_scale: float = 1.0) -> Path:
    """Format (a): images + poses.json (or .yaml) with the object at ``T_o2w`` in the world."""
    folder.mkdir(parents=True, exist_ok=True)
    T_o2w = np.eye(4) if T_o2w is None else T_o2w
    unit = {"m": 1.0, "mm": 1000.0, "arbitrary": 1.0}[units] * pose_scale
    entries = []
    for i in range(len(views)):
        T_o2c = np.eye(4)
        T_o2c[:3, :3], T_o2c[:3, 3] = views.R[i], views.t[i]
        T_w2c = T_o2c @ np.linalg.inv(T_o2w)
        if camera_axes == "opengl":
            T_w2c = np.diag([1.0, -1.0, -1.0, 1.0]) @ T_w2c
        T = T_w2c if convention == "world_to_camera" else np.linalg.inv(T_w2c)
        T[:3, 3] *= unit
        name = f"rgb/{i:03d}.png"
        _imwrite(folder / name, views.rgb[i])
        e = {"file": name, convention: T.tolist()}
        if K_mode == "K":
            e["K"] = views.K.tolist()
        elif K_mode == "fx":
            e.update(fx=float(views.K[0, 0]), fy=float(views.K[1, 1]), cx=float(views.K[0, 2]),
                     cy=float(views.K[1, 2]))
        if depth:
            e["depth"] = f"depth/{i:03d}.png"
            _imwrite(folder / e["depth"], np.rint(views.depth[i] * 10000).astype(np.uint16))
        if mask:
            e["mask"] = f"mask/{i:03d}.png"
            _imwrite(folder / e["mask"], views.mask[i].astype(np.uint8) * 255)
        entries.append(e)
    data = {"units": units, "camera_axes": camera_axes, "images": entries}
    if depth:
        data["depth_scale"] = 0.0001
    if obj_block is not None:
        data["object"] = obj_block
    path = folder / ("poses.json" if fmt == "json" else "poses.yaml")
    if fmt == "json":
        path.write_text(json.dumps(data, indent=1))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    return folder


def write_bop(views: Views, scene: Path, obj_id: int = 5, with_distractor: bool = False) -> Path:
    """Format (b): a BOP scene through the package's own BOP writer."""
    with BopSceneWriter(scene) as writer:
        for i in range(len(views)):
            inst = [GTInstance(obj_id, views.R[i], views.t[i], views.mask[i])]
            if with_distractor:
                inst.append(GTInstance(obj_id + 1, views.R[i], views.t[i] + 1.0,
                                       np.zeros_like(views.mask[i])))
            writer.add(SceneFrame(views.rgb[i], views.depth[i], views.K, inst), i)
    return scene


def write_colmap(views: Views, folder: Path, sim=None, *, model_dir: str = "sparse/0",
                 point_cloud: bool = True, meta_info: bool = True,
                 camera_model: str = "PINHOLE") -> tuple[Path, tuple]:
    """Format (c): a COLMAP text model whose world is ``X_w = s R X_obj + t`` (a similarity
    the builder must undo with the axis hints), images/, object_point_cloud.ply, meta_info.txt."""
    s, Rs, ts = sim if sim is not None else _similarity()
    model = folder / model_dir
    model.mkdir(parents=True, exist_ok=True)
    fx, fy, cx, cy = views.K[0, 0], views.K[1, 1], views.K[0, 2], views.K[1, 2]
    if camera_model == "PINHOLE":  # COLMAP's principal point: pixel centres at +0.5
        params = f"{fx} {fy} {cx + 0.5} {cy + 0.5}"
    else:
        params = f"{fx} {fy} {cx + 0.5} {cy + 0.5} 0 0 0 0"
    (model / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: 1\n1 {camera_model} {W} {H} {params}\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i in range(len(views)):
        # X_o = Rs^T (X_w - ts) / s; camera coordinates in world units are s X_c, so
        # s X_c = R Rs^T X_w + (s t - R Rs^T ts).
        R_w2c = views.R[i] @ Rs.T
        t_w2c = s * views.t[i] - R_w2c @ ts
        x, y, z, w = Rotation.from_matrix(R_w2c).as_quat()
        name = f"frame_{i:04d}.jpg" if i % 2 else f"frame_{i:04d}.png"
        lines.append(f"{i + 1} {w} {x} {y} {z} {t_w2c[0]} {t_w2c[1]} {t_w2c[2]} 1 {name}")
        lines.append("" if i % 3 else "12.5 40.1 -1 80.0 60.0 7")
        path = folder / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(views.rgb[i]).save(path, quality=95)
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("# 3D point list\n7 0.1 0.2 0.3 10 20 30 0.5 1 0\n")
    if point_cloud:
        import trimesh

        pts = s * np.asarray(views.mesh.vertices) @ Rs.T + ts
        trimesh.PointCloud(pts).export(folder / "object_point_cloud.ply")
    if meta_info:
        # hints read off a viewer: scaled and not exactly perpendicular
        forward = 2.3 * Rs[:, 0] + 0.15 * Rs[:, 2]
        up = 0.7 * Rs[:, 2]
        np.savetxt(folder / "meta_info.txt", np.stack([forward, up]))
    return folder, (s, Rs, ts)


@pytest.fixture(scope="module")
def views() -> Views:
    return render_views(12)


# ------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------


def _check_poses(views: Views, posed, R_o2w: np.ndarray, t_o2w: np.ndarray, s: float = 1.0):
    """Every view's pose composed with the object-in-world transform gives the true one."""
    assert len(posed.views) == len(views)
    for i, v in enumerate(posed.views):
        R = v.R_w2c @ R_o2w
        t = (v.R_w2c @ t_o2w + v.t_w2c) / s
        assert geodesic_angle(R, views.R[i]) < 1e-6
        np.testing.assert_allclose(t, views.t[i], atol=1e-6)


@pytest.mark.parametrize("convention", ["camera_to_world", "world_to_camera"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_folder_reader_recovers_poses_intrinsics_depth_and_masks(views, tmp_path, convention,
                                                                 fmt):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [20, -50, 110], degrees=True).as_matrix()
    T[:3, 3] = [0.4, -1.2, 0.8]
    write_folder(views, tmp_path, T_o2w=T, depth=True, mask=True, convention=convention, fmt=fmt,
                 K_mode="fx" if fmt == "yaml" else "K")
    assert detect_format(tmp_path) == "folder"
    posed = read_posed_images(tmp_path)
    assert posed.format == "folder" and posed.metric and posed.has_depth and posed.has_masks
    _check_poses(views, posed, T[:3, :3], T[:3, 3])
    v = posed.views[3]
    np.testing.assert_allclose(v.K, views.K)
    assert (v.width, v.height) == (W, H)
    rgb, depth, mask = v.load()
    np.testing.assert_array_equal(rgb, views.rgb[3])
    np.testing.assert_array_equal(mask, views.mask[3])
    np.testing.assert_allclose(depth, views.depth[3], atol=1e-4)
    # camera centre and optical axis: the object centre lies ahead on the axis
    c = T[:3, :3] @ views.norm.center + T[:3, 3]
    to_c = c - v.camera_center
    assert np.degrees(np.arccos(min(1.0, to_c @ v.optical_axis / np.linalg.norm(to_c)))) < 1e-4


def test_folder_reader_units_opengl_and_object_block(views, tmp_path):
    block = {"up": [0, 0, 5], "forward": [2, 0, 0.1], "center": [10.0, 20.0, 30.0],
             "extents": [100, 50, 20]}
    write_folder(views, tmp_path, units="mm", camera_axes="opengl", obj_block=block)
    posed = read_posed_images(tmp_path, "folder")
    assert posed.metric
    _check_poses(views, posed, np.eye(3), np.zeros(3))  # translations back in meters
    hint = posed.hint
    assert hint.frame_source == "axis_hints" and hint.origin is None
    np.testing.assert_allclose(hint.R_o2w[:, 2], [0, 0, 1], atol=1e-12)
    assert abs(hint.R_o2w[:, 0] @ hint.R_o2w[:, 2]) < 1e-12  # forward made orthogonal to up
    np.testing.assert_allclose(hint.center, [0.01, 0.02, 0.03])
    np.testing.assert_allclose(hint.extents, [0.1, 0.05, 0.02])


def test_folder_reader_arbitrary_units_keep_depth(views, tmp_path):
    write_folder(views, tmp_path, units="arbitrary", depth=True, pose_scale=3.0)
    posed = read_posed_images(tmp_path)
    assert not posed.metric and posed.has_depth  # the builder finds the scale from depth
    _check_poses(views, posed, np.eye(3), np.zeros(3), s=3.0)


def test_exif_focal_length_fallback(views, tmp_path):
    write_folder(views, tmp_path, K_mode="none")
    poses = json.loads((tmp_path / "poses.json").read_text())
    for e in poses["images"]:  # re-save every image as a JPEG with a 35 mm-equivalent focal
        jpg = Path(e["file"]).with_suffix(".jpg")
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0xA405] = 28
        Image.open(tmp_path / e["file"]).save(tmp_path / jpg, exif=exif)
        e["file"] = str(jpg)
    (tmp_path / "poses.json").write_text(json.dumps(poses))
    K = focal_from_exif(tmp_path / poses["images"][0]["file"])
    f = 28 * np.hypot(W, H) / np.hypot(36, 24)
    np.testing.assert_allclose(K, [[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    posed = read_posed_images(tmp_path)
    np.testing.assert_allclose(posed.views[5].K, K)


def test_bop_reader_uses_ground_truth_as_object_frame(views, tmp_path):
    scene = write_bop(views, tmp_path / "000001", with_distractor=True)
    assert detect_format(scene) == "bop"
    with pytest.raises(PosedImagesError, match="--obj-id"):
        read_posed_images(scene)
    with pytest.raises(PosedImagesError, match="--obj-id"):
        read_posed_images(scene, obj_id=42)
    posed = read_posed_images(scene, obj_id=5)
    assert posed.format == "bop" and posed.metric and posed.hint.frame_source == "bop_ground_truth"
    _check_poses(views, posed, np.eye(3), np.zeros(3))
    _, depth, mask = posed.views[2].load()
    np.testing.assert_array_equal(mask, views.mask[2])
    np.testing.assert_allclose(depth, views.depth[2], atol=1e-4)


@pytest.mark.parametrize("model_dir", [".", "sparse/0", "colmap"])
def test_colmap_reader_similarity_and_axis_hints(views, tmp_path, model_dir):
    _, (s, Rs, ts) = write_colmap(views, tmp_path, model_dir=model_dir)
    assert detect_format(tmp_path) == "colmap"
    posed = read_posed_images(tmp_path)
    assert posed.format == "colmap" and not posed.metric
    # hints are exact up to scale and the 0.15 tilt of forward: axes = the similarity's rotation
    np.testing.assert_allclose(posed.hint.R_o2w, Rs, atol=1e-9)
    _check_poses(views, posed, Rs, ts, s)
    np.testing.assert_allclose(posed.views[0].K, views.K, atol=1e-9)  # +0.5 undone
    assert posed.hint.points.shape == (len(views.mesh.vertices), 3)
    np.testing.assert_array_equal(posed.views[2].load_rgb(), views.rgb[2])  # a png frame


def test_colmap_reader_undistorts_opencv_model(views, tmp_path):
    write_colmap(views, tmp_path, camera_model="OPENCV")
    posed = read_posed_images(tmp_path, "colmap")
    assert posed.views[0].dist is None  # all-zero distortion: nothing to undo
    cams = (tmp_path / "sparse/0/cameras.txt").read_text().replace(" 0 0 0 0", " -0.2 0.05 0 0")
    (tmp_path / "sparse/0/cameras.txt").write_text(cams)
    posed = read_posed_images(tmp_path, "colmap")
    np.testing.assert_allclose(posed.views[0].dist, [-0.2, 0.05, 0, 0])
    rgb = posed.views[0].load_rgb()
    assert rgb.shape == (H, W, 3) and not np.array_equal(rgb, views.rgb[0])


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def _edit_poses(folder: Path, fn) -> None:
    data = json.loads((folder / "poses.json").read_text())
    fn(data)
    (folder / "poses.json").write_text(json.dumps(data))


def test_missing_image_file_is_named(views, tmp_path):
    write_folder(views, tmp_path, mask=True)
    (tmp_path / "rgb/004.png").unlink()
    (tmp_path / "mask/007.png").unlink()
    with pytest.raises(PosedImagesError, match=r"2 file\(s\).*rgb/004.png.*mask/007.png"):
        read_posed_images(tmp_path)


def test_missing_intrinsics_without_exif(views, tmp_path):
    write_folder(views, tmp_path, K_mode="none")
    with pytest.raises(PosedImagesError, match="no intrinsics.*EXIF FocalLengthIn35mmFilm.*'K'"):
        read_posed_images(tmp_path)
    _edit_poses(tmp_path, lambda d: d["images"][0].update(fx=100.0, fy=100.0))
    with pytest.raises(PosedImagesError, match="all of fx, fy, cx, cy"):
        read_posed_images(tmp_path)


def test_non_rigid_pose_is_rejected(views, tmp_path):
    write_folder(views, tmp_path)

    def scale(d):
        T = np.array(d["images"][2]["camera_to_world"])
        T[:3, :3] *= 1.1
        d["images"][2]["camera_to_world"] = T.tolist()

    _edit_poses(tmp_path, scale)
    with pytest.raises(PosedImagesError, match="002.png.*not orthonormal.*rigid transform"):
        read_posed_images(tmp_path)

    def mirror(d):
        T = np.array(d["images"][3]["camera_to_world"])
        T[:3, 0] *= -1
        d["images"][2]["camera_to_world"] = T.tolist()

    _edit_poses(tmp_path, mirror)
    with pytest.raises(PosedImagesError, match="reflection"):
        read_posed_images(tmp_path)


def test_pose_keys_must_be_exactly_one(views, tmp_path):
    write_folder(views, tmp_path)
    _edit_poses(tmp_path, lambda d: d["images"][1].pop("camera_to_world"))
    with pytest.raises(PosedImagesError, match="exactly one of 'camera_to_world'"):
        read_posed_images(tmp_path)


def test_unknown_keys_and_units(views, tmp_path):
    write_folder(views, tmp_path)
    _edit_poses(tmp_path, lambda d: d["images"][0].update(pose=[1]))
    with pytest.raises(PosedImagesError, match="unknown keys.*pose"):
        read_posed_images(tmp_path)
    write_folder(views, tmp_path)
    _edit_poses(tmp_path, lambda d: d.update(units="feet"))
    with pytest.raises(PosedImagesError, match="units 'feet'"):
        read_posed_images(tmp_path)


def test_unknown_format_and_binary_colmap(tmp_path):
    with pytest.raises(PosedImagesError, match="cannot tell the format"):
        read_posed_images(tmp_path)
    (tmp_path / "sparse/0").mkdir(parents=True)
    (tmp_path / "sparse/0/cameras.bin").write_bytes(b"\0")
    with pytest.raises(PosedImagesError, match="model_converter"):
        read_posed_images(tmp_path)


def test_colmap_without_axis_hints_or_with_parallel_hints(views, tmp_path):
    write_colmap(views, tmp_path, meta_info=False)
    with pytest.raises(PosedImagesError, match="meta_info.txt.*forward.*up"):
        read_posed_images(tmp_path)
    np.savetxt(tmp_path / "meta_info.txt", [[1.0, 0.0, 0.0], [1.0, 0.05, 0.0]])
    with pytest.raises(PosedImagesError, match="perpendicular"):
        read_posed_images(tmp_path)


def test_colmap_bad_camera_model_and_image_size(views, tmp_path):
    write_colmap(views, tmp_path)
    cams = tmp_path / "sparse/0/cameras.txt"
    cams.write_text(cams.read_text().replace("PINHOLE", "OPENCV_FISHEYE"))
    with pytest.raises(PosedImagesError, match="image_undistorter"):
        read_posed_images(tmp_path)
    write_colmap(views, tmp_path)
    cams.write_text(cams.read_text().replace(f"PINHOLE {W} {H}", f"PINHOLE {2 * W} {2 * H}"))
    with pytest.raises(PosedImagesError, match="is 160x120 but COLMAP camera 1 is 320x240"):
        read_posed_images(tmp_path)


def test_documented_folder_example_reads(tmp_path):
    """The poses.json example of docs/model_free_inputs.md is valid input."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "model_free_inputs.md").read_text()
    example = re.search(r"```json\n(.*?)```", doc, re.DOTALL).group(1)
    (tmp_path / "poses.json").write_text(example)
    for name in ("000", "001"):
        _imwrite(tmp_path / f"rgb/{name}.png", np.zeros((480, 640, 3), np.uint8))
    _imwrite(tmp_path / "depth/000.png", np.zeros((480, 640), np.uint16))
    posed = read_posed_images(tmp_path)
    a, b = posed.views
    np.testing.assert_allclose(a.K, b.K)
    # the two documented poses are the same camera, written in the two conventions
    np.testing.assert_allclose(a.R_w2c, b.R_w2c, atol=1e-3)
    np.testing.assert_allclose(a.t_w2c, b.t_w2c, atol=1e-3)
    assert posed.hint.frame_source == "axis_hints" and posed.hint.extents is not None
