"""BOP format: round trips, hand-checked gt_info, models_info, and one real LM-O frame."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from sixd_pose_ros.datasets import (
    BopSceneWriter,
    GTInstance,
    SceneFrame,
    load_bop_model,
    read_bop_models_info,
    read_bop_scene,
    read_bop_single_frame,
    write_bop_models,
)
from sixd_pose_ros.datasets.bop import models_info_entry
from sixd_pose_ros.errors import DatasetError, OutputError

REAL_FRAME = Path("/work/shared/data/real_smoke/lmo_scene2_frame3")
H, W = 48, 64
K = np.array([[91.5, 0.0, 30.25], [0.0, 97.0, 21.75], [0.0, 0.0, 1.0]])


def _frame(seed: int) -> SceneFrame:
    """A frame with one hand-checkable instance: a 10x15 rectangle, its right 5 columns occluded."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 2.0, (H, W)).astype(np.float32)
    depth[12, 21] = depth[13, 22] = 0.0  # two missing measurements inside the object
    depth[0, 0] = 7.0  # beyond 6.5535 m: must be stored as 0 with depth_scale 0.1
    full = np.zeros((H, W), bool)
    full[10:20, 20:35] = True
    visib = full.copy()
    visib[:, 30:35] = False
    second = np.zeros((H, W), bool)
    second[30:33, 5:9] = True
    R1, R2 = Rotation.random(2, random_state=seed).as_matrix()
    instances = [
        GTInstance(3, R1, [0.01, -0.02, 0.8], visib, full),
        GTInstance(7, R2, [-0.1, 0.05, 1.2], second),
    ]
    return SceneFrame(rgb=rgb, depth=depth, K=K, instances=instances, stamp_ns=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, SceneFrame], int]:
    scene_dir = tmp_path_factory.mktemp("bop") / "000001"
    frames = {0: _frame(0), 5: _frame(1)}  # non-contiguous ids, written out of order
    writer = BopSceneWriter(scene_dir, depth_scale=0.1)
    writer.add(frames[5], 5)
    writer.add(frames[0], 0)
    writer.close()
    return scene_dir, frames, writer.n_depth_clipped


def test_layout_and_json(scene: tuple[Path, dict[int, SceneFrame], int]) -> None:
    scene_dir, frames, n_clipped = scene
    assert sorted(p.name for p in scene_dir.parent.iterdir()) == ["000001"]  # no temp debris
    assert (scene_dir / "rgb" / "000005.png").is_file()
    assert (scene_dir / "mask" / "000000_000000.png").is_file()
    assert not (scene_dir / "mask" / "000000_000001.png").exists()  # no full mask given
    assert (scene_dir / "mask_visib" / "000005_000001.png").is_file()
    depth_png = cv2.imread(str(scene_dir / "depth" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert depth_png.dtype == np.uint16 and depth_png[0, 0] == 0 and n_clipped == 2
    mask_png = cv2.imread(str(scene_dir / "mask_visib" / "000000_000000.png"), cv2.IMREAD_UNCHANGED)
    assert mask_png.dtype == np.uint8 and set(np.unique(mask_png)) == {0, 255}

    cam = json.loads((scene_dir / "scene_camera.json").read_text())
    assert cam["0"] == {"cam_K": K.reshape(-1).tolist(), "depth_scale": 0.1}
    gt = json.loads((scene_dir / "scene_gt.json").read_text())
    inst = frames[0].instances[0]
    assert gt["0"][0]["obj_id"] == 3
    assert gt["0"][0]["cam_R_m2c"] == inst.R_m2c.reshape(-1).tolist()  # row-major
    assert gt["0"][0]["cam_t_m2c"] == pytest.approx([10.0, -20.0, 800.0])  # millimeters

    info = json.loads((scene_dir / "scene_gt_info.json").read_text())["0"]
    # rectangle rows 10..19, cols 20..34; visible cols 20..29; two pixels lack depth
    assert info[0] == {
        "bbox_obj": [20, 10, 15, 10],
        "bbox_visib": [20, 10, 10, 10],
        "px_count_all": 150,
        "px_count_valid": 148,
        "px_count_visib": 100,
        "visib_fract": pytest.approx(100 / 150),
    }
    assert info[1]["bbox_obj"] == info[1]["bbox_visib"] == [5, 30, 4, 3]
    assert info[1]["visib_fract"] == 1.0


def test_round_trip(scene: tuple[Path, dict[int, SceneFrame], int]) -> None:
    scene_dir, frames, _ = scene
    read = list(read_bop_scene(scene_dir))
    assert [f.im_id for f in read] == [0, 5]
    for got in read:
        want = frames[got.im_id]
        np.testing.assert_array_equal(got.rgb, want.rgb)
        np.testing.assert_array_equal(got.K, want.K)
        assert got.depth.dtype == np.float32
        ok = want.depth < 6.5
        # 0.1 mm steps: rounding error at most half a step
        assert np.abs(got.depth[ok] - want.depth[ok]).max() <= 0.05e-3 + 1e-7
        assert got.depth[0, 0] == 0.0
        assert len(got.instances) == 2
        for g, w in zip(got.instances, want.instances):
            assert g.obj_id == w.obj_id
            np.testing.assert_allclose(g.R_m2c, w.R_m2c, atol=1e-9)
            np.testing.assert_allclose(g.t_m2c, w.t_m2c, atol=1e-9)
            np.testing.assert_array_equal(g.mask_visib, w.mask_visib)
        np.testing.assert_array_equal(got.instances[0].mask, want.instances[0].mask)
        assert got.instances[1].mask is None


def test_jpg_option_and_abort(tmp_path: Path) -> None:
    with BopSceneWriter(tmp_path / "s", image_format="jpg") as writer:
        writer.add(_frame(2), 1)
    assert (tmp_path / "s" / "rgb" / "000001.jpg").is_file()
    (frame,) = read_bop_scene(tmp_path / "s")
    assert np.abs(frame.rgb.astype(int) - _frame(2).rgb).mean() < 60  # lossy, but the image

    with pytest.raises(OutputError, match="--overwrite"):
        BopSceneWriter(tmp_path / "s")
    with pytest.raises(RuntimeError):
        with BopSceneWriter(tmp_path / "t") as writer:
            writer.add(_frame(3), 0)
            raise RuntimeError("renderer crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_models(tmp_path: Path) -> None:
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # meters in memory
    cube.visual.vertex_colors = np.tile(np.uint8([200, 30, 10, 255]), (len(cube.vertices), 1))
    # a textured quad, 10 cm wide, offset from the origin
    quad = trimesh.Trimesh(
        vertices=[[0, 0, 0], [0.1, 0, 0], [0.1, 0.1, 0], [0, 0.1, 0]],
        faces=[[0, 1, 2], [0, 2, 3]],
        process=False,
    )
    tex = Image.fromarray(np.full((4, 4, 3), (0, 255, 0), np.uint8))
    quad.visual = trimesh.visual.TextureVisuals(
        uv=[[0, 0], [1, 0], [1, 1], [0, 1]],
        material=trimesh.visual.material.SimpleMaterial(image=tex),
    )
    models_dir = tmp_path / "models"
    write_bop_models(models_dir, {1: cube, 2: quad}, symmetries={1: ["continuous_z", "discrete_4"]})

    info = read_bop_models_info(models_dir)
    assert info[1]["diameter"] == pytest.approx(math.sqrt(3) * 1000.0)
    assert info[1]["min_x"] == pytest.approx(-500.0) and info[1]["size_z"] == pytest.approx(1000.0)
    assert info[1]["symmetries_continuous"] == [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]
    discrete = np.array(info[1]["symmetries_discrete"]).reshape(-1, 4, 4)
    assert len(discrete) == 3
    np.testing.assert_allclose(discrete[1], np.diag([-1.0, -1.0, 1.0, 1.0]), atol=1e-12)
    assert info[2]["diameter"] == pytest.approx(math.sqrt(2) * 100.0)
    assert "symmetries_continuous" not in info[2]

    loaded = load_bop_model(models_dir, 1)
    np.testing.assert_allclose(loaded.vertices, cube.vertices, atol=1e-6)  # back in meters
    assert loaded.visual.vertex_colors[0, :3].tolist() == [200, 30, 10]
    header = (models_dir / "obj_000002.ply").read_bytes().split(b"end_header")[0]
    assert b"comment TextureFile obj_000002.png" in header and b"texture_u" in header
    assert (models_dir / "obj_000002.png").is_file()
    textured = load_bop_model(models_dir, 2)
    np.testing.assert_allclose(textured.visual.uv, quad.visual.uv, atol=1e-6)
    with pytest.raises(DatasetError, match="obj_000009.ply"):
        load_bop_model(models_dir, 9)


@pytest.mark.skipif(not REAL_FRAME.is_dir(), reason="real LM-O smoke frame not available")
def test_real_lmo_frame() -> None:
    frame = read_bop_single_frame(REAL_FRAME)
    assert frame.rgb.shape == (480, 640, 3) and frame.rgb.dtype == np.uint8
    assert frame.K[0, 0] == pytest.approx(572.4114) and frame.K[1, 2] == pytest.approx(242.04899)
    assert len(frame.instances) == 8
    assert [i.obj_id for i in frame.instances] == [1, 5, 6, 8, 9, 10, 11, 12]
    can = frame.instances[1]
    np.testing.assert_allclose(can.t_m2c, [0.13436598053, 0.04577287271, 0.96478389285])
    # BOP stores 8 digits, so real rotations are orthonormal to about 1e-4 only
    np.testing.assert_allclose(can.R_m2c @ can.R_m2c.T, np.eye(3), atol=1e-3)
    # Kinect depth in meters: the table scene lies roughly 0.5 .. 2 m away
    valid = frame.depth[frame.depth > 0]
    assert 0.5 < np.median(valid) < 2.0
    # the object center projects onto measured depth a few cm in front of it
    u, v = (frame.K @ can.t_m2c)[:2] / can.t_m2c[2]
    assert 0.0 < can.t_m2c[2] - frame.depth[int(v), int(u)] < 0.1
    # our models_info computation reproduces BOP's published values for the real mesh
    published = read_bop_models_info(REAL_FRAME)[5]
    ours = models_info_entry(load_bop_model(REAL_FRAME, 5))
    assert published["diameter"] == pytest.approx(201.404)
    for key, value in published.items():
        assert ours[key] == pytest.approx(value, abs=1e-3), key
