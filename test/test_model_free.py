"""Model-free estimator: posed photos in, poses out (plumbing with seeded untrained networks;
accuracy is the held-out evaluation's job), and the depth / metric-scale logic on exact inputs.
These run the trained detector and selector (``templates=False``); the default, templates of the
reference photos, is tested in test_model_free_templates.py."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import save_untrained_weights, torch_single_thread
from test_posed_images import render_views, write_folder

from sixd_pose_ros.geometry.pinhole import project
from sixd_pose_ros.objects.model_free_database import build_model_free_database, load_model_free_database
from sixd_pose_ros.pipeline.depth_slide import slide_to_depth
from sixd_pose_ros.pipeline.model_free import ModelFreeConfig, ModelFreeEstimator
from sixd_pose_ros.pipeline.types import Frame


@pytest.fixture(scope="module")
def views():
    return render_views(20)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import torch

    from sixd_pose_ros.models.checkpoint import save_weights
    from sixd_pose_ros.models.selector import SelectorConfig, ViewpointSelector

    folder = save_untrained_weights(tmp_path_factory.mktemp("weights"))
    torch.manual_seed(0)
    cfg = SelectorConfig.preset("cpu")
    save_weights(folder / "selector.pt", ViewpointSelector(cfg), cfg)
    return folder


def _database(views, tmp_path, *, units="m", pose_scale=1.0, depth=True):
    src = write_folder(views, tmp_path / "photos", depth=depth, mask=True, units=units, pose_scale=pose_scale)
    return build_model_free_database(src, "part", tmp_path / "objects", size=128, n_selector=16,
                                     n_detector=8, progress=False)


def _frame(views, i, depth=True):
    return Frame(rgb=views.rgb[i], K=views.K, depth=views.depth[i].astype(np.float32) if depth else None)


def _true_detection(views, i):
    """The detection a perfect detector gives: the projected centre and sphere size."""
    centre = views.R[i] @ views.norm.center + views.t[i]
    uv = project(centre[None], views.K)[0]
    size = 2 * views.norm.scale * np.sqrt(views.K[0, 0] * views.K[1, 1]) / centre[2]
    return SimpleNamespace(center_xy=uv, box_size=float(size), score=1.0), centre


def test_estimates_over_the_whole_pipeline(views, weights, tmp_path):
    db = _database(views, tmp_path)
    with torch_single_thread():
        est = ModelFreeEstimator.from_paths([db], weights, ModelFreeConfig(min_detection_score=0.0, templates=False),
                                            backend="torch")
        poses = est.estimate(_frame(views, 3))
    assert len(poses) == 1
    pose = poses[0]
    assert pose.name == "part" and pose.metric
    np.testing.assert_allclose(pose.R @ pose.R.T, np.eye(3), atol=1e-6)
    assert np.all(np.isfinite(pose.t)) and pose.t[2] > 0
    assert {"backbone", "segment", "part/detect", "part/select", "part/depth"} <= set(pose.stage_ms)
    # RGB-D references give the database a fused surface: depth chose and aligned the pose.
    assert pose.health is not None and 0.0 <= pose.health <= 1.0
    # The refiner runs on the depth's winner, which is then aligned again.
    with torch_single_thread():
        est.config = ModelFreeConfig(min_detection_score=0.0, refine_iterations=1, templates=False)
        refined = est.estimate(_frame(views, 3))[0]
    assert {"part/refine", "part/depth"} <= set(refined.stage_ms) and refined.health is not None
    # Without depth proposals the depth image is not segmented (the detector's peak only).
    with torch_single_thread():
        est.config = ModelFreeConfig(min_detection_score=0.0, depth_proposals=0, templates=False)
        assert "segment" not in est.estimate(_frame(views, 3))[0].stage_ms


def test_depth_puts_the_centre_behind_the_surface(views, weights, tmp_path):
    db = load_model_free_database(_database(views, tmp_path))
    with torch_single_thread():
        est = ModelFreeEstimator([db], *_networks(weights), config=ModelFreeConfig(templates=False), backend="torch")
    for i in (0, 5, 11):
        det, true_centre = _true_detection(views, i)
        start = true_centre * 1.4  # a detector that misjudged the size by 40 %
        centre, units_to_m = slide_to_depth(_frame(views, i), det, start, db.normalization.scale, True,
                                            est.config.surface_to_center_radii)
        assert units_to_m == 1.0
        assert abs(centre[2] - true_centre[2]) < 0.35 * db.normalization.scale
        # still on the viewing ray of the detected centre
        np.testing.assert_allclose(centre / centre[2], start / start[2], atol=1e-9)


def test_arbitrary_units_need_depth_for_metres(views, weights, tmp_path, caplog):
    """Photos posed in an arbitrary unit (x3.0): without depth the pose says it is not metric and
    warns; with depth the translation comes out in metres."""
    db = load_model_free_database(_database(views, tmp_path, units="arbitrary", pose_scale=3.0, depth=False))
    assert not db.metric
    with torch_single_thread():
        est = ModelFreeEstimator([db], *_networks(weights),
                                 config=ModelFreeConfig(min_detection_score=0.0, templates=False),
                                 backend="torch")
        with caplog.at_level(logging.WARNING):
            pose = est.estimate(_frame(views, 2, depth=False))[0]
    assert not pose.metric
    assert "up to scale" in caplog.text
    det, true_centre = _true_detection(views, 2)
    start = 3.0 * true_centre  # the database unit is 1/3 m: the same centre in its units
    centre, units_to_m = slide_to_depth(_frame(views, 2), det, start, db.normalization.scale, False,
                                        est.config.surface_to_center_radii)
    assert abs(centre[2] / true_centre[2] - 1) < 0.15
    assert abs(units_to_m * 3.0 - 1) < 0.15


def _networks(weights):
    from sixd_pose_ros.models.checkpoint import load_detector, load_refiner, load_selector

    return load_detector(weights / "detector.pt"), load_selector(weights / "selector.pt"), \
        load_refiner(weights / "refiner.pt")


def test_objects_with_a_surface_are_tracked(views, weights, tmp_path):
    """A detected pose starts a track; the next frame is a tracking step (depth alignment from the
    previous pose, no detector); a frame without depth ends the track."""
    from sixd_pose_ros.pipeline.tracking import TrackerConfig

    db = _database(views, tmp_path)
    with torch_single_thread():
        est = ModelFreeEstimator.from_paths([db], weights, ModelFreeConfig(min_detection_score=0.0, templates=False),
                                            backend="torch")
        est.configure_tracking(TrackerConfig(enabled=True, min_health=0.0, min_start_health=0.0))
        first = est.estimate(Frame(views.rgb[3], views.K, views.depth[3].astype(np.float32), stamp_ns=1))[0]
        second = est.estimate(Frame(views.rgb[3], views.K, views.depth[3].astype(np.float32),
                                    stamp_ns=100_000_000))[0]
        assert not first.tracked and second.tracked
        assert "part/track" in second.stage_ms and "part/detect" not in second.stage_ms
        assert second.health is not None and np.all(np.isfinite(second.t))
        est.estimate(_frame(views, 3, depth=False))
        assert est.tracker.track("part") is None


def test_rviz_shows_the_fused_surface(views, weights, tmp_path):
    """The node's markers: a model-free object with a surface is drawn with it (mesh.ply and its
    box), not with the box around the reference sphere."""
    db = _database(views, tmp_path)
    with torch_single_thread():
        est = ModelFreeEstimator.from_paths([db], weights, ModelFreeConfig(templates=False), backend="torch")
    (info,) = est.object_infos()
    assert info.mesh_path == db / "mesh.ply" and info.mesh_path.is_file()
    extent = info.bbox_max - info.bbox_min
    np.testing.assert_allclose(extent, views.mesh.extents, rtol=0.1, atol=0.01 * info.diameter)
