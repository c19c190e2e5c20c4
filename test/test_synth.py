"""Tests of the synthetic data engine (`sixd_pose_ros.training.synth` / `.scenes`).

One small dataset (the smoke preset cut to 2 scenes x 2 frames, BOP + rosbag2) is generated
once per module and checked from the outside: read back with the dataset readers, the ground
truth is re-rendered and must reproduce the written masks and depth; the bag must carry the
same frames as the BOP scene. Further tests cover determinism, atomicity on failure, the
`sixd-pose synth` command line and the sensor model on plain arrays.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sixd_pose_ros import cli
from sixd_pose_ros.datasets.bop import load_bop_model, read_bop_models_info, read_bop_scene
from sixd_pose_ros.datasets.rosbag import read_rosbag
from sixd_pose_ros.datasets.types import DEFAULT_CAMERA_FRAME
from sixd_pose_ros.errors import SixdPoseError
from sixd_pose_ros.render.renderer import RenderMesh, render
from sixd_pose_ros.training import synth
from sixd_pose_ros.training.scenes import SceneConfig, jitter_color, sensor_depth
from sixd_pose_ros.training.synth import PRESETS, get_preset, synthesize, with_overrides

SCENES, FRAMES = 2, 2
SMOKE = get_preset("smoke")


def _small(scenes: int = SCENES, frames: int = FRAMES, seed: int | None = None):
    return with_overrides(SMOKE, scenes=scenes, frames=frames, seed=seed)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "smoke"
    info = synthesize(_small(), out, formats=("bop", "rosbag"), progress=False)
    return out, info


@pytest.fixture(scope="module")
def bop_frames(dataset):
    """scene folder name -> list of SceneFrame read back from the BOP layout."""
    out, _ = dataset
    scenes = sorted(p for p in (out / "test").iterdir() if p.is_dir())
    return {p.name: list(read_bop_scene(p)) for p in scenes}


@pytest.fixture(scope="module")
def models(dataset):
    """obj_id -> RenderMesh of the written BOP model (ply in mm, loaded in meters)."""
    out, _ = dataset
    ids = read_bop_models_info(out / "models")
    return {i: RenderMesh.from_trimesh(load_bop_model(out / "models", i)) for i in ids}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------------------
# layout and summary
# ------------------------------------------------------------------------------------------


def test_layout_and_summary(dataset, bop_frames):
    out, info = dataset
    assert sorted(bop_frames) == [f"{i:06d}" for i in range(SCENES)]
    assert sorted(p.name for p in (out / "bags").iterdir()) == [f"{i:06d}" for i in range(SCENES)]
    assert all(len(frames) == FRAMES for frames in bop_frames.values())
    # models: one per preset object, ids 1..n; only those ids are annotated (no distractors)
    assert sorted(read_bop_models_info(out / "models")) == list(range(1, len(SMOKE.objects) + 1))
    n_instances = 0
    for frames in bop_frames.values():
        for f in frames:
            ids = [inst.obj_id for inst in f.instances]
            assert len(ids) == len(set(ids)), "a target appears twice in one frame"
            assert all(1 <= i <= len(SMOKE.objects) for i in ids)
            n_instances += len(ids)
    assert n_instances > 0
    # the returned summary is what synth_info.json says, and matches the files
    on_disk = json.loads((out / "synth_info.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert info["frames"] == SCENES * FRAMES
    assert info["instances"] == n_instances
    assert info["formats"] == ["bop", "rosbag"]
    assert info["preset"]["seed"] == SMOKE.seed
    assert sorted(info["objects"]) == [str(i) for i in range(1, len(SMOKE.objects) + 1)]
    # nothing hidden (staging folders) left next to or inside the dataset
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert not [p for p in out.rglob(".*")]


# ------------------------------------------------------------------------------------------
# 1. BOP read-back: the written ground truth reproduces the written masks and depth
# ------------------------------------------------------------------------------------------


def test_bop_ground_truth_rerenders_to_written_masks_and_depth(dataset, bop_frames, models):
    checked = 0
    for scene, frames in bop_frames.items():
        for f in frames:
            H, W = f.height, f.width
            assert (W, H) == (SceneConfig().camera.width, SceneConfig().camera.height)
            valid_all = f.depth > 0
            assert valid_all.mean() > 0.3, "most of the image should have a depth measurement"
            for gt_id, inst in enumerate(f.instances):
                where = f"scene {scene} im {f.im_id} gt {gt_id} obj {inst.obj_id}"
                assert inst.mask is not None and inst.mask_visib is not None, where
                assert inst.mask_visib.sum() > 0, where
                ren = render([models[inst.obj_id]], inst.R_m2c, inst.t_m2c, f.K, W, H)
                sil = ren.mask[0] > 0
                rdepth = ren.depth[0]
                iou = _iou(sil, inst.mask)
                assert iou > 0.97, f"{where}: full mask IoU {iou:.4f} with the re-rendered GT pose"
                inside = (inst.mask_visib & sil).sum() / inst.mask_visib.sum()
                assert inside >= 0.99, f"{where}: only {inside:.3f} of mask_visib inside the silhouette"
                # depth: written (noisy, 1 mm steps, holes) vs re-rendered at visible pixels
                px = inst.mask_visib & valid_all & (rdepth > 0)
                assert px.sum() >= 0.5 * inst.mask_visib.sum(), f"{where}: too few depth pixels"
                err = np.median(np.abs(f.depth[px] - rdepth[px]))
                assert err < 0.005, f"{where}: median depth error {err * 1000:.2f} mm"
                z = f.depth[px]
                assert 0.2 < z.min() and z.max() < 3.0, f"{where}: depth not in meters? {z.min()}..{z.max()}"
                # the GT translation is in meters and in front of the camera
                assert 0.2 < inst.t_m2c[2] < 3.0, where
                checked += 1
    assert checked >= SCENES * FRAMES


def test_annotated_targets_keep_min_visible_fraction_of_unbounded_silhouette(bop_frames, models):
    """compose_scene: every annotated target keeps at least min_visib_fract of its silhouette
    visible *and inside the image*; measured here against the silhouette on an image 3x as
    large (as bop_toolkit's calc_gt_info does for truncated objects)."""
    min_fract = SceneConfig().min_visib_fract
    worst = (1.0, "")
    for scene, frames in bop_frames.items():
        for f in frames:
            H, W = f.height, f.width
            K = f.K.copy()
            K[0, 2] += W
            K[1, 2] += H
            for inst in f.instances:
                ren = render([models[inst.obj_id]], inst.R_m2c, inst.t_m2c, K, 3 * W, 3 * H)
                fract = inst.mask_visib.sum() / max((ren.mask[0] > 0).sum(), 1)
                worst = min(worst, (fract, f"scene {scene} im {f.im_id} obj {inst.obj_id}"))
    # 0.02 of slack for the mm float32 round trip of the model and pixel-level differences
    assert worst[0] >= min_fract - 0.02, f"{worst[1]}: only {worst[0]:.3f} visible in the image"


# ------------------------------------------------------------------------------------------
# 2. scene_gt_info.json
# ------------------------------------------------------------------------------------------


def test_scene_gt_info(dataset, bop_frames):
    out, _ = dataset
    W, H = SceneConfig().camera.width, SceneConfig().camera.height
    for scene, frames in bop_frames.items():
        gt = json.loads((out / "test" / scene / "scene_gt.json").read_text())
        gt_info = json.loads((out / "test" / scene / "scene_gt_info.json").read_text())
        assert sorted(gt_info, key=int) == sorted(gt, key=int) == [str(f.im_id) for f in frames]
        for f in frames:
            infos = gt_info[str(f.im_id)]
            assert len(infos) == len(gt[str(f.im_id)]) == len(f.instances)
            for inst, e in zip(f.instances, infos):
                where = f"scene {scene} im {f.im_id} obj {inst.obj_id}"
                assert e["visib_fract"] >= 0.4, f"{where}: visib_fract {e['visib_fract']}"
                assert e["visib_fract"] <= 1.0 + 1e-9, where
                x, y, w, h = e["bbox_visib"]
                assert w > 0 and h > 0, where
                assert 0 <= x and 0 <= y and x + w <= W and y + h <= H, f"{where}: {e['bbox_visib']}"
                # counts agree with the mask files
                assert e["px_count_visib"] == int(inst.mask_visib.sum()), where
                assert e["px_count_all"] == int(inst.mask.sum()), where
                ys, xs = np.nonzero(inst.mask_visib)
                assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                        ys.max() - ys.min() + 1], where


# ------------------------------------------------------------------------------------------
# 3. rosbag read-back
# ------------------------------------------------------------------------------------------


def test_rosbag_matches_bop(dataset, bop_frames):
    out, _ = dataset
    period = SceneConfig().frame_period_ns
    for scene, frames in bop_frames.items():
        bag = list(read_rosbag(out / "bags" / scene))
        assert len(bag) == len(frames)
        stamps = [b.stamp_ns for b in bag]
        assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
        assert np.diff(stamps).tolist() == [period] * (len(stamps) - 1)
        for b, f in zip(bag, frames):
            where = f"scene {scene} im {f.im_id}"
            assert b.frame_id == "camera_color_optical_frame" == DEFAULT_CAMERA_FRAME
            assert b.rgb.dtype == np.uint8 and b.rgb.shape == f.rgb.shape
            assert b.rgb.tobytes() == f.rgb.tobytes(), f"{where}: rgb differs"
            np.testing.assert_array_equal(b.K, f.K, err_msg=where)
            # depth: 32FC1 meters in the bag, 0.1 mm steps in BOP; holes in the same places
            np.testing.assert_array_equal(b.depth > 0, f.depth > 0, err_msg=where)
            assert np.abs(b.depth - f.depth).max() <= 0.5e-4 + 1e-6, where
            by_id = {i.obj_id: i for i in b.instances}
            assert sorted(by_id) == sorted(i.obj_id for i in f.instances), where
            for inst in f.instances:
                bi = by_id[inst.obj_id]
                np.testing.assert_allclose(bi.t_m2c, inst.t_m2c, atol=1e-6, rtol=0, err_msg=where)
                np.testing.assert_allclose(bi.R_m2c, inst.R_m2c, atol=1e-6, rtol=0, err_msg=where)
                assert bi.mask_visib is None  # bags carry no masks


def test_rosbag_sqlite3_storage(tmp_path):
    out = tmp_path / "sq"
    info = synthesize(_small(scenes=1, frames=1), out, formats=("rosbag",), storage="sqlite3",
                      progress=False)
    assert info["rosbag_storage"] == "sqlite3" and info["frames"] == 1
    assert not (out / "test").exists(), "BOP scenes written although only rosbag was asked"
    bag_dir = out / "bags" / "000000"
    assert list(bag_dir.glob("*.db3")) and not list(bag_dir.glob("*.mcap"))
    assert "sqlite3" in (bag_dir / "metadata.yaml").read_text()
    frames = list(read_rosbag(bag_dir))
    assert len(frames) == 1
    f = frames[0]
    assert f.rgb.shape == (480, 640, 3) and f.rgb.std() > 5
    assert (f.depth > 0).mean() > 0.3
    assert info["instances"] == len(f.instances) > 0
    assert f.frame_id == DEFAULT_CAMERA_FRAME


# ------------------------------------------------------------------------------------------
# 4. determinism
# ------------------------------------------------------------------------------------------


def _files(scene_dir: Path, sub: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((scene_dir / sub).iterdir())}


def test_same_preset_is_byte_identical_and_seed_matters(tmp_path, dataset):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(_small(scenes=1), a, progress=False)
    synthesize(_small(scenes=1), b, progress=False)
    sa, sb = a / "test" / "000000", b / "test" / "000000"
    rgb_a = _files(sa, "rgb")
    assert len(rgb_a) == FRAMES
    assert rgb_a == _files(sb, "rgb")
    for sub in ("depth", "mask", "mask_visib"):
        assert _files(sa, sub) == _files(sb, sub), sub
    for name in ("scene_gt.json", "scene_camera.json", "scene_gt_info.json"):
        assert (sa / name).read_bytes() == (sb / name).read_bytes(), name
    # scene k does not depend on the scene count: scene 0 of the 2-scene fixture is the same
    s0 = dataset[0] / "test" / "000000"
    assert rgb_a == _files(s0, "rgb")
    assert (sa / "scene_gt.json").read_bytes() == (s0 / "scene_gt.json").read_bytes()
    # another seed gives another dataset
    synthesize(_small(scenes=1, frames=1, seed=SMOKE.seed + 1), c, progress=False)
    other = (c / "test" / "000000" / "rgb" / "000000.png").read_bytes()
    assert other != rgb_a["000000.png"]
    assert (c / "test" / "000000" / "scene_gt.json").read_bytes() != (sa / "scene_gt.json").read_bytes()


# ------------------------------------------------------------------------------------------
# 5. a failure leaves nothing behind
# ------------------------------------------------------------------------------------------


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [_Boom, KeyboardInterrupt])
def test_failure_in_second_scene_leaves_nothing(tmp_path, monkeypatch, exc):
    calls = []
    real = synth.compose_scene

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise exc("simulated failure in scene 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "compose_scene", flaky)
    out = tmp_path / "ds"
    with pytest.raises(exc):
        synthesize(_small(scenes=2, frames=1), out, formats=("bop", "rosbag"), progress=False)
    assert len(calls) == 2, "the failure should have happened in the second scene"
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], f"left behind: {list(tmp_path.iterdir())}"


def test_failure_while_writing_a_frame_leaves_nothing(tmp_path, monkeypatch):
    from sixd_pose_ros.datasets.bop import BopSceneWriter

    real = BopSceneWriter.add

    def flaky(self, frame, im_id):
        if im_id == 1:
            raise _Boom("disk full while writing frame 1")
        return real(self, frame, im_id)

    monkeypatch.setattr(BopSceneWriter, "add", flaky)
    out = tmp_path / "ds"
    with pytest.raises(_Boom):
        synthesize(_small(scenes=1, frames=2), out, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SixdPoseError, match="overwrite"):
        synthesize(_small(scenes=1, frames=1), out, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert list(tmp_path.iterdir()) == [out]


# ------------------------------------------------------------------------------------------
# 6. command line
# ------------------------------------------------------------------------------------------


def _cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    return err


def test_cli_unknown_preset(tmp_path, capsys):
    out = tmp_path / "ds"
    err = _cli_error(["synth", "--preset", "nope", "--out", str(out), "--no-progress"], capsys)
    assert "nope" in err
    for name in PRESETS:
        assert name in err, f"valid preset {name} not named in: {err}"
    assert not out.exists()


def test_cli_list_presets(capsys):
    cli.main(["synth", "--list-presets"])
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    assert any(line.split()[0] == "bench-v1" for line in lines if line.strip())
    for name in PRESETS:
        assert name in stdout


def test_cli_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    err = _cli_error(["synth", "--preset", "smoke", "--scenes", "1", "--frames", "1",
                      "--out", str(out), "--no-progress"], capsys)
    assert "--overwrite" in err and str(out) in err
    assert list(out.iterdir()) == []
    assert list(tmp_path.iterdir()) == [out]


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "ds"
    err = _cli_error(["synth", "--preset", "smoke", "--scenes", "1", "--frames", "1",
                      "--out", str(out), "--no-progress"], capsys)
    assert str(blocker) in err and "writable" in err
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    cli.main(["synth", "--preset", "smoke", "--scenes", "1", "--frames", "1", "--out", str(out),
              "--no-progress"])
    assert "wrote 1 frames" in capsys.readouterr().out
    info = json.loads((out / "synth_info.json").read_text())
    assert info["preset"]["name"].startswith("smoke[") and info["frames"] == 1
    assert len(list((out / "test" / "000000" / "rgb").iterdir())) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--scenes", "0"], "--scenes"),
    (["--format", "bop,foo"], "foo"),
])
def test_cli_bad_options(tmp_path, capsys, argv, needle):
    out = tmp_path / "ds"
    err = _cli_error(["synth", "--preset", "smoke", "--out", str(out), "--no-progress", *argv], capsys)
    assert needle in err
    assert list(tmp_path.iterdir()) == []


def test_with_overrides_renames_and_validates():
    p = with_overrides(SMOKE, scenes=1, frames=2)
    assert (p.scenes, p.frames_per_scene, p.seed) == (1, 2, SMOKE.seed)
    assert p.name != SMOKE.name and p.name.startswith("smoke")
    assert with_overrides(SMOKE) is SMOKE
    with pytest.raises(SixdPoseError):
        with_overrides(SMOKE, frames=0)
    with pytest.raises(SixdPoseError, match="bench-v1"):
        get_preset("nope")


# ------------------------------------------------------------------------------------------
# 7. sensor model on plain arrays
# ------------------------------------------------------------------------------------------


def test_sensor_depth_zeros_quantization_and_noise():
    rng = np.random.default_rng(0)
    depth = np.full((240, 320), 1.0, np.float32)
    depth[100:140, 140:180] = 0.0  # a hole in the input
    before = depth.copy()
    out = sensor_depth(depth, rng)
    np.testing.assert_array_equal(depth, before)  # input untouched
    assert out.shape == depth.shape and out.dtype == np.float32
    assert np.all(out[depth == 0] == 0), "no measurement must stay no measurement"
    mm = out.astype(np.float64) * 1000.0
    assert np.abs(mm - np.round(mm)).max() < 1e-3, "depth not quantized to 1 mm"
    valid = out > 0
    assert valid.mean() > 0.8, "too many dropouts on a flat plane"
    # noise on a flat 1 m plane, away from the hole (whose edges drop out)
    far = valid.copy()
    far[90:150, 130:190] = False
    std = float(np.std(out[far] - 1.0))
    assert 0.0005 < std < 0.005, f"noise std {std * 1000:.2f} mm at 1 m"
    assert abs(float(np.mean(out[far] - 1.0))) < 0.0005, "noise should be unbiased"


def test_sensor_depth_noise_grows_with_distance_and_edges_drop_out():
    rng = np.random.default_rng(1)
    stds = {}
    for z in (0.5, 1.0, 2.0):
        out = sensor_depth(np.full((240, 320), z, np.float32), rng)
        stds[z] = float(np.std(out[out > 0] - z))
    assert stds[0.5] < stds[1.0] < stds[2.0]
    assert stds[2.0] > 2.0 * stds[1.0], stds  # ~z^2 growth
    # a depth step (an object edge): pixels at the step mostly drop out, elsewhere few do
    step = np.full((240, 320), 1.0, np.float32)
    step[:, 160:] = 0.6
    out = sensor_depth(step, rng)
    edge = (out[:, 158:162] == 0).mean()
    away = (out[:, :120] == 0).mean()
    assert edge > 0.5 and away < 0.15 and edge > 3 * away, (edge, away)


def test_sensor_depth_is_deterministic_per_seed():
    depth = np.full((64, 80), 0.8, np.float32)
    a = sensor_depth(depth, np.random.default_rng(5))
    b = sensor_depth(depth, np.random.default_rng(5))
    c = sensor_depth(depth, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sensor_depth_accepts_float64():
    depth = np.full((64, 80), 0.8, np.float64)
    out = sensor_depth(depth, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == depth.shape


def test_jitter_color_keeps_shape_and_dtype():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    before = rgb.copy()
    out = jitter_color(rgb, np.random.default_rng(3))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(rgb, before)  # input untouched
    assert not np.array_equal(out, rgb), "jitter changed nothing"
    # a jitter, not a new image: still strongly correlated with the input
    corr = np.corrcoef(out.reshape(-1).astype(float), rgb.reshape(-1).astype(float))[0, 1]
    assert corr > 0.5, corr
    np.testing.assert_array_equal(out, jitter_color(rgb, np.random.default_rng(3)))
