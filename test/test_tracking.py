"""Tracking: the per-object state machine, and the estimator following a moving object from the
previous pose with depth, then falling back to detection when the object is gone."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_single_thread
import trimesh

from sixd_pose_ros.geometry.pose_errors import add_error
from sixd_pose_ros.geometry.rotations import matrix_from_axis_angle
from sixd_pose_ros.pipeline.tracking import Tracker, TrackerConfig
from sixd_pose_ros.pipeline.types import Frame, ObjectPose
from sixd_pose_ros.render.renderer import RenderMesh, render

K = np.array([[600.0, 0, 322.0], [0, 598.0, 241.0], [0, 0, 1.0]])
MS = 1_000_000  # ns
BOX = np.array([10.0, 10.0, 50.0, 50.0])


@pytest.fixture(autouse=True)
def one_thread():
    with torch_single_thread():
        yield


def _pose(name="a", score=0.9, tracked=False, t=(0.0, 0.0, 0.7)):
    return ObjectPose(name, np.eye(3), np.array(t), score, BOX, tracked=tracked)


# ------------------------------------------------------------------ the state machine


def test_a_track_starts_only_from_a_confident_healthy_detection():
    tr = Tracker(TrackerConfig(min_start_score=0.5, min_health=0.6))
    assert tr.wants_detection("a", 0)
    tr.update("a", None, None, 0)  # not found
    assert tr.wants_detection("a", 33 * MS)
    tr.update("a", _pose(score=0.4), 0.9, 33 * MS)  # detector not sure
    assert tr.wants_detection("a", 66 * MS)
    tr.update("a", _pose(score=0.9), 0.5, 66 * MS)  # the depth does not confirm the pose
    assert tr.wants_detection("a", 99 * MS)
    tr.update("a", _pose(score=0.9), None, 99 * MS)  # no depth: no health measure, no track
    assert tr.wants_detection("a", 132 * MS)
    tr.update("a", _pose(score=0.9, t=(0.1, 0.0, 0.7)), 0.8, 132 * MS)
    assert not tr.wants_detection("a", 165 * MS)
    track = tr.track("a")
    assert np.allclose(track.t, [0.1, 0.0, 0.7]) and track.score == 0.9 and track.lost == 0
    assert tr.tracking() == ["a"]


def test_low_health_for_max_lost_frames_falls_back_to_detection():
    tr = Tracker(TrackerConfig(min_health=0.5, max_lost_frames=2))
    tr.update("a", _pose(), 0.9, 0)
    tr.update("a", _pose(tracked=True, t=(0.01, 0, 0.7)), 0.8, 33 * MS)  # healthy: follows
    assert np.allclose(tr.track("a").t, [0.01, 0, 0.7])
    tr.update("a", _pose(tracked=True, t=(0.3, 0, 0.7)), 0.2, 66 * MS)  # lost 1: keeps the last good pose
    assert not tr.wants_detection("a", 99 * MS)
    assert tr.track("a").lost == 1 and np.allclose(tr.track("a").t, [0.01, 0, 0.7])
    tr.update("a", _pose(tracked=True), 0.7, 99 * MS)  # healthy again: the count starts over
    assert tr.track("a").lost == 0 and tr.track("a").frames == 3
    tr.update("a", _pose(tracked=True), 0.1, 132 * MS)
    assert not tr.wants_detection("a", 165 * MS)
    tr.update("a", _pose(tracked=True), 0.1, 165 * MS)  # lost 2 in a row
    assert tr.wants_detection("a", 198 * MS) and tr.track("a") is None


def test_a_frame_gap_or_time_going_back_falls_back_to_detection():
    tr = Tracker(TrackerConfig(max_frame_gap_s=0.5))
    tr.update("a", _pose(), 0.9, 1000 * MS)
    assert not tr.wants_detection("a", 1400 * MS)
    assert tr.wants_detection("a", 1501 * MS)  # a jump in the bag
    assert tr.track("a") is None
    tr.update("a", _pose(), 0.9, 2000 * MS)
    assert tr.wants_detection("a", 1900 * MS)  # the bag restarted


def test_reset_falls_back_to_detection_and_discards_updates_in_flight():
    tr = Tracker()
    tr.update("a", _pose("a"), 0.9, 0)
    tr.update("b", _pose("b"), 0.9, 0)
    tr.reset("a")
    assert tr.wants_detection("a", 33 * MS) and not tr.wants_detection("b", 33 * MS)
    epoch = tr.epoch  # a frame starts...
    tr.reset()  # ... the ~/reset service runs meanwhile ...
    tr.update("b", _pose("b"), 0.9, 33 * MS, epoch=epoch)  # ... and the frame's result is stale
    assert tr.wants_detection("a", 66 * MS) and tr.wants_detection("b", 66 * MS)


def test_a_detection_taken_back_starts_no_track():
    # The exclusion drops a detection after the tracker saw it (another object holds its place):
    # that pose must not be tracked from the next frame on.
    tr = Tracker()
    epoch = tr.epoch
    tr.update("a", _pose("a"), 0.9, 0, epoch=epoch)
    tr.update("b", _pose("b"), 0.9, 0, epoch=epoch)
    tr.withdraw("a", epoch=epoch)
    assert tr.wants_detection("a", 33 * MS) and not tr.wants_detection("b", 33 * MS)
    tr.reset()  # a frame from before a reset takes nothing back
    tr.update("b", _pose("b"), 0.9, 66 * MS)
    tr.withdraw("b", epoch=epoch)
    assert not tr.wants_detection("b", 99 * MS)


def test_objects_are_tracked_independently():
    tr = Tracker(TrackerConfig(max_lost_frames=1))
    tr.update("a", _pose("a"), 0.9, 0)
    tr.update("b", _pose("b", t=(0.2, 0, 0.8)), 0.9, 0)
    tr.update("a", _pose("a", tracked=True), 0.1, 33 * MS)  # a is lost
    tr.update("b", _pose("b", tracked=True, t=(0.21, 0, 0.8)), 0.9, 33 * MS)
    assert tr.wants_detection("a", 66 * MS) and not tr.wants_detection("b", 66 * MS)
    assert np.allclose(tr.track("b").t, [0.21, 0, 0.8])
    tr.update("a", _pose("a"), 0.9, 66 * MS)  # a is detected again: b's track is untouched
    assert tr.track("a").frames == 1 and tr.track("b").frames == 2


def test_starting_needs_more_health_than_going_on():
    tr = Tracker(TrackerConfig(min_health=0.5, min_start_health=0.6))
    tr.update("a", _pose(), 0.55, 0)
    assert tr.track("a") is None
    tr.update("a", _pose(), 0.65, 33 * MS)
    tr.update("a", _pose(tracked=True), 0.55, 66 * MS)
    assert tr.track("a").lost == 0 and tr.track("a").frames == 2


def test_a_new_detection_restarts_the_track_and_disabled_never_tracks():
    tr = Tracker()
    tr.update("a", _pose(), 0.9, 0)
    tr.update("a", _pose(t=(0.1, 0, 0.7)), 0.9, 33 * MS)  # a new detection replaces the track
    assert tr.track("a").frames == 1 and np.allclose(tr.track("a").t, [0.1, 0, 0.7])
    tr.update("a", _pose(), 0.3, 66 * MS)  # a detection the depth does not confirm ends it
    assert tr.track("a") is None
    off = Tracker(TrackerConfig(enabled=False))
    off.update("a", _pose(), 1.0, 0)
    assert off.wants_detection("a", 1) and off.track("a") is None


@pytest.mark.parametrize("bad", [dict(min_health=1.5), dict(max_lost_frames=0), dict(max_frame_gap_s=0.0),
                                 dict(min_start_score=-0.1), dict(min_start_health=2.0)])
def test_config_is_checked(bad):
    with pytest.raises(ValueError):
        TrackerConfig(**bad)


# ------------------------------------------------------------------ the estimator on rendered frames


def _look_at(eye, target):
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R_cw = np.stack([x, np.cross(z, x), z])  # rows: camera axes in the world (z up)
    return R_cw, -R_cw @ eye


class _Scene:
    """The bundled object standing on a table, seen from 0.7 m at 40 degrees elevation."""

    def __init__(self, obj):
        self.obj = obj
        self.mesh = RenderMesh.from_trimesh(obj.mesh)
        table = trimesh.creation.box((1.0, 1.0, 0.02))
        table.apply_translation((0.0, 0.0, -0.01))
        self.table = RenderMesh.from_trimesh(table, default_color=(0.5, 0.45, 0.4))
        el, az = np.radians(40), np.radians(30)
        eye = 0.7 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        self.R_cw, self.t_cw = _look_at(eye, np.array([0.0, 0.0, 0.06]))
        self.lift = -float(obj.mesh.vertices[:, 2].min())

    def pose(self, yaw_deg: float, shift_m: float):
        """Object-to-camera pose after turning by yaw and sliding along the table's x."""
        R_w = matrix_from_axis_angle(np.array([0.0, 0.0, 1.0]), np.radians(yaw_deg))
        return self.R_cw @ R_w, self.R_cw @ np.array([shift_m, 0.0, self.lift]) + self.t_cw

    def frame(self, pose, stamp_ns: int) -> Frame:
        if pose is None:  # the table only
            out = render([self.table], self.R_cw, self.t_cw, K, 640, 480)
        else:
            out = render([self.mesh, self.table], np.stack([pose[0], self.R_cw]), np.stack([pose[1], self.t_cw]),
                         K, 640, 480)
        return Frame(out.rgb[0], K, out.depth[0], stamp_ns=stamp_ns)


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    from conftest import build_small_database, save_untrained_weights

    from sixd_pose_ros.pipeline.known_model import KnownModelConfig, KnownModelEstimator

    with torch_single_thread():
        root = tmp_path_factory.mktemp("tracking")
        weights = save_untrained_weights(root / "weights")  # mechanics only: tracking needs no trained network
        db, obj = build_small_database(weights, root)
        est = KnownModelEstimator.from_paths([db], weights, KnownModelConfig(), use_refiner=False)
    return est, _Scene(obj)


def _tracking(est, **overrides):
    from sixd_pose_ros.pipeline.tracking import TrackerConfig as Config

    est.configure_tracking(Config(enabled=True, **overrides))
    return est.tracker


def _seed(est, scene, pose, stamp_ns=0):
    """Start the track at a known pose, as a confident detection would."""
    est.tracker.update("drill", ObjectPose("drill", pose[0], pose[1], 1.0, BOX), 1.0, stamp_ns)
    assert est.tracker.track("drill") is not None


def test_tracking_follows_a_moving_object_with_depth(estimator, monkeypatch):
    est, scene = estimator
    _tracking(est)
    detections = []
    monkeypatch.setattr(est, "_estimate_one", lambda *a: detections.append(1))
    _seed(est, scene, scene.pose(0.0, 0.0))
    points, diameter = scene.mesh.vertices, scene.obj.diameter
    for k in range(1, 6):  # 2 degrees and 5 mm per frame, 30 Hz
        gt = scene.pose(2.0 * k, 0.005 * k)
        poses = est.estimate(scene.frame(gt, k * 33 * MS))
        assert len(poses) == 1, f"frame {k}: the object was lost"
        pose = poses[0]
        assert pose.tracked and pose.health > 0.8 and pose.score == pose.health
        assert "drill/track" in pose.stage_ms and "drill/detect" not in pose.stage_ms
        assert "backbone" not in pose.stage_ms  # no detector pass while everything is tracked
        error = add_error(pose.R, pose.t, gt[0], gt[1], points)
        assert error < 0.1 * diameter, f"frame {k}: ADD {error / diameter:.3f} of the diameter"
        x0, y0, x1, y1 = pose.box
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    # The object moved 10 degrees and 25 mm in all (ADD ~0.1 d): the track moved with it.
    assert add_error(pose.R, pose.t, *scene.pose(0.0, 0.0), points) > 0.05 * diameter
    assert not detections and est.tracker.track("drill").frames == 6


def test_object_removed_falls_back_to_detection_in_the_same_frame(estimator, monkeypatch):
    est, scene = estimator
    _tracking(est, max_lost_frames=2)
    detections = []
    monkeypatch.setattr(est, "_estimate_one", lambda *a: detections.append(1))  # finds nothing
    start = scene.pose(0.0, 0.0)
    _seed(est, scene, start)
    tracked = []
    track_one = est._track_one
    monkeypatch.setattr(est, "_track_one", lambda *a: tracked.append(track_one(*a)) or tracked[-1])
    for k in (1, 2):  # the object is gone: each frame tracks, fails, and detects at once
        assert est.estimate(scene.frame(None, k * 33 * MS)) == []  # an unhealthy pose is not reported
        assert len(tracked) == k and tracked[-1].health < 0.5
        assert len(detections) == k  # detection ran in the same frame (a moving camera gets an answer)
    assert est.tracker.track("drill") is None  # lost max_lost frames in a row: the track ended
    est.estimate(scene.frame(None, 99 * MS))
    assert len(tracked) == 2 and len(detections) == 3  # no track: detection only


def test_reset_and_no_depth_run_detection(estimator, monkeypatch):
    est, scene = estimator
    _tracking(est)
    detections = []
    monkeypatch.setattr(est, "_estimate_one", lambda *a: detections.append(1))
    pose = scene.pose(0.0, 0.0)
    frame = scene.frame(pose, 33 * MS)
    _seed(est, scene, pose)
    est.reset_tracking()
    est.estimate(frame)
    assert detections == [1]
    _seed(est, scene, pose, 33 * MS)
    est.estimate(Frame(frame.rgb, K, None, stamp_ns=66 * MS))  # no depth: no health, no tracking
    assert detections == [1, 1] and est.tracker.track("drill") is None


def test_each_object_takes_its_own_path(estimator, monkeypatch):
    import dataclasses

    est, scene = estimator
    _tracking(est)
    drill = est.objects[0]
    twin = dataclasses.replace(drill, db=dataclasses.replace(drill.db, name="twin"))  # same mesh, not tracked
    monkeypatch.setattr(est, "objects", [drill, twin])
    detected, backbone = [], []
    # Detection asks the frame's shared stages for the detector's pyramid on first need: once
    # per frame, however many objects detect.
    pyramid = lambda: backbone.append(1) or []  # noqa: E731
    monkeypatch.setattr(est, "_estimate_one", lambda frame, stages, obj, timings:
                        (stages.once("pyramid", pyramid), stages.once("pyramid", pyramid),
                         detected.append(obj.db.name))[-1])
    gt = scene.pose(2.0, 0.005)
    _seed(est, scene, scene.pose(0.0, 0.0))
    poses = est.estimate(scene.frame(gt, 33 * MS))
    assert [p.name for p in poses] == ["drill"] and poses[0].tracked
    assert detected == ["twin"] and backbone == [1]


# ------------------------------------------------------------------ the node's parameters and ~/reset


@pytest.mark.ros
def test_node_hands_tracking_parameters_to_the_estimator_and_reset_ends_tracks(tmp_path):
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
    import json

    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from sixd_pose_ros.pipeline.types import Estimator as EstimatorProtocol
    from sixd_pose_ros.ros.node import SUCCESS, SixdPoseNode

    class Estimator(EstimatorProtocol):
        tracking, resets = None, 0

        def configure_tracking(self, config):
            self.tracking = config

        def reset_tracking(self, name=None):
            self.resets += 1

        def estimate(self, frame):
            return []

    folder = tmp_path / "objects" / "drill"
    folder.mkdir(parents=True)
    (folder / "object.json").write_text(json.dumps({"name": "drill"}))
    est = Estimator()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = SixdPoseNode(context=ctx, estimator_factory=lambda params: (est, []), parameter_overrides=[
            Parameter("objects", value=[str(folder)]), Parameter("tracking.min_health", value=0.7),
            Parameter("tracking.max_lost_frames", value=3)])
        assert node.trigger_configure() == SUCCESS, node.configure_error
        cfg = est.tracking
        assert cfg.enabled and cfg.min_health == 0.7 and cfg.max_lost_frames == 3 and cfg.min_start_health > 0.7
        reply = node._on_reset(Trigger.Request(), Trigger.Response())
        assert reply.success and "tracks" in reply.message and est.resets == 1
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
