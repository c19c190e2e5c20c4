"""Model-free references from real posed frames: frames that do not show the object are left
out with a reason when the poses locate the object (BOP ground truth, an object block), and the
photo-only path still stops with an error that names the frames to drop.

The real scene is a copy of 12 frames of YCB-V video 0000 (``data/real_val``), object 21 (foam
brick). Every frame there shows the brick, so four of the copies are changed the way real
captures lose an object: two are cropped to the left half of the image (a camera that saw the
other side of the table; the intrinsics of a crop from the left edge are unchanged), one is
marked 5 % visible in ``scene_gt_info.json`` (an occluded frame), and one has no depth on the
brick (a sensor dropout).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_posed_images import render_views, write_folder

from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.evaluation.model_free_refs import sequence_references
from sixd_pose_ros.objects.model_free_database import build_model_free_database, load_model_free_database
from sixd_pose_ros.objects.posed_images import read_bop_views
from sixd_pose_ros.objects.view_visibility import leave_out_unseen

# the checkout sits beside shared/ (DESIGN.md: data/real_val)
SCENE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_val" / "ycbv" / "test" / "000000"
OBJ = 21
FRAMES = range(1, 13)
CROPPED, OCCLUDED, NO_DEPTH = (3, 7), 5, 9

pytestmark = pytest.mark.skipif(not SCENE.is_dir(), reason=f"real validation data not at {SCENE}")


def _copy_scene(dst: Path) -> Path:
    """12 real frames of scene 000000 with four frames that lose object 21 (module docstring)."""
    jsons = {n: json.loads((SCENE / n).read_text()) for n in
             ("scene_camera.json", "scene_gt.json", "scene_gt_info.json")}
    gt_id = [g["obj_id"] for g in jsons["scene_gt.json"]["1"]].index(OBJ)
    for sub in ("rgb", "depth", "mask_visib"):
        (dst / sub).mkdir(parents=True)
    for im in FRAMES:
        stem = f"{im:06d}"
        shutil.copy(SCENE / "rgb" / f"{stem}.png", dst / "rgb")
        shutil.copy(SCENE / "depth" / f"{stem}.png", dst / "depth")
        for k in range(len(jsons["scene_gt.json"][str(im)])):
            shutil.copy(SCENE / "mask_visib" / f"{stem}_{k:06d}.png", dst / "mask_visib")
    for name in jsons:
        jsons[name] = {str(i): jsons[name][str(i)] for i in FRAMES}
    for im in CROPPED:
        for path in [dst / "rgb" / f"{im:06d}.png", dst / "depth" / f"{im:06d}.png",
                     *(dst / "mask_visib").glob(f"{im:06d}_*.png")]:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert cv2.imwrite(str(path), image[:, :320])
        del jsons["scene_gt_info.json"][str(im)]  # visibility unknown: judged from the pixels
    jsons["scene_gt_info.json"][str(OCCLUDED)][gt_id]["visib_fract"] = 0.05
    mask = cv2.imread(str(dst / "mask_visib" / f"{NO_DEPTH:06d}_{gt_id:06d}.png"), cv2.IMREAD_UNCHANGED) > 0
    depth_path = dst / "depth" / f"{NO_DEPTH:06d}.png"
    depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    depth[cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0] = 0
    assert cv2.imwrite(str(depth_path), depth)
    for name, data in jsons.items():
        (dst / name).write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return _copy_scene(tmp_path_factory.mktemp("ycbv") / "000000")


def _name(im: int) -> str:
    return f"rgb/{im:06d}.png"


def test_real_scene_frames_without_the_object_are_left_out(scene, tmp_path):
    path = build_model_free_database(scene, "foam_brick", tmp_path, obj_id=OBJ, size=64, n_selector=8,
                                     n_detector=8, progress=False, reconstruct=False)
    db = load_model_free_database(path)
    left = {e["image"]: e["reason"] for e in db.info["coverage"]["left_out"]}
    assert set(left) == {_name(i) for i in (*CROPPED, OCCLUDED, NO_DEPTH)}
    for im in CROPPED:
        assert "outside the 320x480 image" in left[_name(im)]
    assert left[_name(OCCLUDED)].startswith("visib_fract 0.05 <")
    assert left[_name(NO_DEPTH)].startswith("no depth support")
    kept = [_name(i) for i in FRAMES if i not in (*CROPPED, OCCLUDED, NO_DEPTH)]
    assert db.info["references"]["images"] == kept and len(db.references) == len(kept)
    assert db.info["source"]["n_images"] == 12 and db.info["source"]["n_used"] == 8
    assert any(n.startswith("left out 4 of 12 frame(s)") for n in db.info["source"]["notes"])
    # centre and size from the real depth inside the masks: the brick (BOP model: 52.6 x 77.8 x
    # 51.1 mm, diameter 102.9 mm, origin at the box centre) seen from one side
    assert db.info["geometry"]["center_source"] == "depth"
    assert np.linalg.norm(db.normalization.center) < 0.015
    assert 0.035 < db.normalization.scale < 0.065


def test_sequence_references_choose_only_frames_that_show_the_object(scene):
    refs = sequence_references(scene, OBJ, n_refs=4)
    assert refs is not None and refs.candidates == 8 and len(refs.left_out) == 4
    assert not set(refs.im_ids) & {*CROPPED, OCCLUDED, NO_DEPTH}
    assert len(refs.im_ids) == 4 and len(refs.images.views) == 4
    # 8 frames show it: 8 references would leave none to score
    assert sequence_references(scene, OBJ, n_refs=8) is None


def test_visibility_threshold_is_the_callers(scene):
    images = read_bop_views(scene, OBJ)
    kept, left = leave_out_unseen(images, min_visib_fract=0.0)
    assert _name(OCCLUDED) not in {v.name for v in left} and len(kept.views) == 9


@pytest.fixture(scope="module")
def sphere():
    """20 rendered views from around a held-out procedural object, aimed at its centre."""
    return render_views(20)


def _turn_away(folder: Path, indices) -> None:
    """Rotate the cameras ``indices`` 100 degrees about their x axis: they look elsewhere."""
    data = json.loads((folder / "poses.json").read_text())
    c, s = np.cos(np.radians(100)), np.sin(np.radians(100))
    for i in indices:
        T = np.array(data["images"][i]["camera_to_world"])
        T[:3, :3] = T[:3, :3] @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        data["images"][i]["camera_to_world"] = T.tolist()
    (folder / "poses.json").write_text(json.dumps(data))


def test_photos_without_object_frame_name_every_frame_to_drop(sphere, tmp_path):
    write_folder(sphere, tmp_path / "in")
    _turn_away(tmp_path / "in", (5, 11))
    with pytest.raises(SixdPoseError, match=r"inconsistent poses: 2 of 20 views.*optical axes.*"
                                            r"Remove these 2 image\(s\).*: rgb/005.png rgb/011.png"):
        build_model_free_database(tmp_path / "in", "obj", tmp_path / "objects", size=64, progress=False)
    assert not (tmp_path / "objects" / "obj").exists()


def test_same_photos_with_object_centre_leave_those_frames_out(sphere, tmp_path):
    write_folder(sphere, tmp_path / "in", mask=True, obj_block={"center": sphere.norm.center.tolist()})
    _turn_away(tmp_path / "in", (5, 11))
    db = load_model_free_database(build_model_free_database(
        tmp_path / "in", "obj", tmp_path / "objects", size=64, progress=False, reconstruct=False))
    left = [e["image"] for e in db.info["coverage"]["left_out"]]
    assert left == ["rgb/005.png", "rgb/011.png"] and len(db.references) == 18
