"""capture_references: posed reference photos from a camera moving around an object, poses from TF.

Unit tests for the pieces (our TF buffer, the table plane + object box, parameters, the
recorder), then the node end to end over real DDS: a player node publishes a synthetic
recording (the bundled demo object and a distractor on a table, 320x240 colour + depth, the
camera's pose on /tf as world -> tool0 plus a static tool0 -> camera_color_optical_frame on
/tf_static), the capture node writes the folder, and build_model_free_database builds an object
from it.
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built: run `make setup`")
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.msg import Log
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from sixd_pose_ros.errors import OutputError
from sixd_pose_ros.geometry.plane import fit_plane_ransac
from sixd_pose_ros.objects.capture import (
    CaptureError,
    ObjectConfig,
    ReferenceRecorder,
    estimate_object_box,
    forward_axis,
    validate_capture_params,
)
from sixd_pose_ros.ros.capture_references import CaptureReferencesNode
from sixd_pose_ros.ros.image_conversion import array_to_image
from sixd_pose_ros.ros.launch_support import default_interrupts
from sixd_pose_ros.ros.tf_buffer import TransformBuffer, TransformUnavailable

W, H = 320, 240
K = np.array([[250.0, 0.0, 159.5], [0.0, 250.0, 119.5], [0.0, 0.0, 1.0]])
CAMERA = "camera_color_optical_frame"
NS = 10**9


def _T(R=None, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.eye(3) if R is None else R, t
    return T


def _angle_deg(R1, R2) -> float:
    return math.degrees(math.acos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1)))


# ------------------------------------------------------------------------------------------------
# TF buffer
# ------------------------------------------------------------------------------------------------


def _q(R):
    return Rotation.from_matrix(R).as_quat()


def test_tf_buffer_composes_a_chain_and_interpolates():
    buf = TransformBuffer(cache_s=5.0)
    T_tool_cam = _T(Rotation.from_euler("xyz", [0.1, -0.2, 0.3]).as_matrix(), (0.02, 0.0, 0.05))
    buf.set_transform("tool0", "/" + CAMERA, 0, T_tool_cam[:3, 3], _q(T_tool_cam[:3, :3]), static=True)
    R0, R1 = Rotation.from_euler("z", 0.0).as_matrix(), Rotation.from_euler("z", 0.4).as_matrix()
    buf.set_transform("world", "tool0", 1 * NS, (0.0, 0.0, 0.5), _q(R0))
    buf.set_transform("world", "tool0", 2 * NS, (0.2, 0.0, 0.5), _q(R1))
    buf.set_transform("world", "other_root_child", 1 * NS, (0, 0, 0), (0, 0, 0, 1))
    # Exactly at a sample, and halfway (translation linear, rotation slerp).
    np.testing.assert_allclose(buf.lookup("world", CAMERA, 1 * NS), _T(R0, (0, 0, 0.5)) @ T_tool_cam, atol=1e-12)
    mid = _T(Rotation.from_euler("z", 0.2).as_matrix(), (0.1, 0.0, 0.5)) @ T_tool_cam
    np.testing.assert_allclose(buf.lookup("world", CAMERA, 1_500_000_000), mid, atol=1e-12)
    # The inverse direction, and a lookup between two children of a common ancestor.
    np.testing.assert_allclose(buf.lookup(CAMERA, "world", 1 * NS), np.linalg.inv(_T(R0, (0, 0, 0.5)) @ T_tool_cam),
                               atol=1e-12)
    np.testing.assert_allclose(buf.lookup("tool0", CAMERA, 5 * NS), T_tool_cam, atol=1e-12)  # static: any time
    # Not bracketed: newer than the newest sample -> retry; nearest only within the tolerance.
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup("world", CAMERA, 2 * NS + 10_000_000)
    assert err.value.retry and "newest sample is 0.010 s older" in str(err.value)
    near = buf.lookup("world", CAMERA, 2 * NS + 10_000_000, tolerance_s=0.02)
    np.testing.assert_allclose(near, _T(R1, (0.2, 0, 0.5)) @ T_tool_cam, atol=1e-12)
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup("world", CAMERA, 0)
    assert not err.value.retry  # older than the cache: waiting cannot help
    with pytest.raises(TransformUnavailable, match="has not appeared on /tf"):
        buf.lookup("base_link", CAMERA, 1 * NS)
    buf.set_transform("map", "odom", 1 * NS, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformUnavailable, match="two unconnected TF trees"):
        buf.lookup("map", CAMERA, 1 * NS)


def test_tf_buffer_drops_old_samples_and_restarts_after_a_time_jump():
    buf = TransformBuffer(cache_s=1.0, jump_back_s=0.5)
    for k in range(30):
        buf.set_transform("world", "tool0", 100 * NS + k * NS // 10, (k, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformUnavailable):  # 2.9 s of samples, 1 s kept
        buf.lookup("world", "tool0", 100 * NS + NS)
    assert buf.lookup("world", "tool0", 102 * NS)[0, 3] == pytest.approx(20.0)
    buf.set_transform("world", "tool0", 5 * NS, (7, 0, 0), (0, 0, 0, 1))  # a bag restarted
    assert buf.time_jumps == 1
    assert buf.lookup("world", "tool0", 5 * NS)[0, 3] == 7.0
    with pytest.raises(TransformUnavailable):
        buf.lookup("world", "tool0", 102 * NS, tolerance_s=0.5)


# ------------------------------------------------------------------------------------------------
# Table plane and object box
# ------------------------------------------------------------------------------------------------


def _box_surface(rng, center, size, n):
    """Points on the 5 visible faces of an axis-aligned box resting on z = 0 (no bottom)."""
    pts = rng.uniform(-0.5, 0.5, (n, 3)) * size
    face = rng.integers(0, 5, n)
    for axis in range(3):
        for sign, code in ((1, 2 * axis), (-1, 2 * axis + 1)):
            if code < 5:
                pts[face == code, axis] = sign * 0.5 * size[axis]
    return pts + center


def test_object_box_from_points_on_a_tilted_table():
    rng = np.random.default_rng(3)
    table = np.c_[rng.uniform(-0.5, 0.5, (20000, 2)), np.zeros(20000)]
    obj_center, obj_size = np.array([0.05, -0.02, 0.06]), np.array([0.08, 0.05, 0.12])
    obj = _box_surface(rng, obj_center, obj_size, 6000)
    clutter = _box_surface(rng, np.array([0.35, 0.3, 0.03]), np.array([0.06, 0.06, 0.06]), 6000)
    pts = np.concatenate([table, obj, clutter]) + rng.normal(0, 0.001, (32000, 3))
    central = np.r_[np.zeros(20000, bool), np.ones(6000, bool), rng.random(6000) < 0.1]
    # Tilt the whole scene (a robot base that is not level with the table).
    R = Rotation.from_euler("xy", [0.2, -0.1]).as_matrix()
    t = np.array([0.6, 0.1, -0.3])
    cameras = (np.array([[0.3, 0.0, 0.5], [-0.3, 0.2, 0.4]]) @ R.T) + t
    cfg = ObjectConfig(margin=0.0)
    world = pts @ R.T + t
    frame = rng.integers(0, 4, len(world))  # four "views" of the same surface
    box = estimate_object_box(world[::3], cameras, [(world[frame == f], central[frame == f]) for f in range(4)], cfg)
    assert math.degrees(math.acos(box.up @ R[:, 2])) < 0.5
    np.testing.assert_allclose(box.center, R @ obj_center + t, atol=0.003)
    assert abs(box.forward @ box.up) < 1e-9 and box.forward[0] > 0.9  # world +x laid flat
    # Extents along the box's own axes (forward is world +x laid on the tilted table, so the box is
    # turned a little about up against the object's axes).
    expected = np.ptp((obj @ R.T + t) @ box.axes, axis=0)
    # The extremes of noisy points (1 mm per axis here) lie ~3 sigma out on each side.
    assert np.all(box.extents > expected - 0.002) and np.all(box.extents < expected + 0.008), (box.extents, expected)
    assert box.details["clusters"] >= 2
    # Nothing above the table: a clear error naming the box parameters.
    with pytest.raises(CaptureError, match="object.center"):
        estimate_object_box(table @ R.T + t, cameras, [(table @ R.T + t, np.ones(len(table), bool))], cfg)


def test_plane_fit_and_forward_rule():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-1, 1, (500, 2)), 0.3 + rng.normal(0, 0.001, 500)]
    pts = np.concatenate([pts, rng.uniform(-1, 1, (200, 3))])
    n, d, inliers = fit_plane_ransac(pts, 0.005)
    assert abs(abs(n[2]) - 1) < 1e-3 and abs(abs(d) - 0.3) < 1e-3 and inliers[:500].mean() > 0.98
    np.testing.assert_allclose(forward_axis(np.array([0.0, 0.0, 1.0])), [1, 0, 0])
    np.testing.assert_allclose(forward_axis(np.array([1.0, 0.0, 0.0])), [0, 1, 0])  # +x is up: +y


def test_parameters_are_validated_with_the_fix():
    p = validate_capture_params({"object.center": [0.6, 0, 0.05], "object.extents": [0.1, 0.1, 0.2]})
    assert p.object.center == (0.6, 0.0, 0.05) and p.world_frame == "base_link"
    cases = {
        "give both": {"object.center": [0.6, 0, 0.05]},
        "3 positive numbers": {"object.center": [0, 0, 0], "object.extents": [0.1, -1, 0.1]},
        "max_frames: 3 must be an integer >= 8": {"max_frames": 3},
        "tf.backend": {"tf.backend": "tf3"},
        "every frame would be kept": {"min_translation": 0.0, "min_rotation_deg": 0.0},
        "world_frame": {"world_frame": ""},
    }
    for expected, values in cases.items():
        with pytest.raises(CaptureError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            validate_capture_params(values)


def test_config_file_documents_every_parameter_with_its_default():
    import yaml

    from sixd_pose_ros.objects.capture import CAPTURE_PARAMETERS

    data = yaml.safe_load((Path(__file__).parents[1] / "config/capture_references.yaml").read_text())
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else flat.__setitem__(prefix + k, v)

    walk(data["/**"]["ros__parameters"])
    defaults = {k: d for k, (d, _) in CAPTURE_PARAMETERS.items() if d is not None}
    assert flat == defaults
    validate_capture_params(flat)


def test_recorder_keeps_by_motion_refuses_too_few_frames_and_aborts_clean(tmp_path):
    out = tmp_path / "refs"
    rec = ReferenceRecorder(out, min_translation=0.05, min_rotation_deg=20.0)
    rgb = np.zeros((H, W, 3), np.uint8)
    assert rec.decide(_T())[0]
    rec.add(rgb, None, K, _T(), 1, CAMERA)
    assert not rec.decide(_T(t=(0.04, 0, 0)))[0]  # 4 cm, 0 deg
    assert rec.decide(_T(t=(0.05, 0, 0)))[0]
    assert rec.decide(_T(Rotation.from_euler("y", 21, degrees=True).as_matrix()))[0]
    assert "need 5.0 cm or 20.0 deg" in rec.decide(_T(Rotation.from_euler("y", 19, degrees=True).as_matrix()))[1]
    with pytest.raises(CaptureError, match="only 1 frame"):
        rec.finish()
    assert not out.exists()
    rec.abort()
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too
    out.mkdir()
    with pytest.raises(OutputError, match="overwrite"):
        ReferenceRecorder(out)


def test_a_user_box_overrides_depth_and_poses_json_reads_back(tmp_path):
    from sixd_pose_ros.objects.posed_images import read_folder

    cfg = ObjectConfig(center=(0.6, 0.1, 0.05), extents=(0.1, 0.08, 0.1))
    rec = ReferenceRecorder(tmp_path / "refs", object_cfg=cfg)
    rgb = np.full((H, W, 3), 128, np.uint8)
    depth = np.full((H, W), 0.5, np.float32)
    for k in range(8):
        a = 2 * math.pi * k / 8
        T = _look_at(np.array([0.6 + 0.4 * math.cos(a), 0.1 + 0.4 * math.sin(a), 0.3]), np.array([0.6, 0.1, 0.05]))
        assert rec.decide(T)[0]
        rec.add(rgb, depth, K, T, k, CAMERA)
    path, box = rec.finish({"world_frame": "world"})
    assert box.source == "user_box"
    poses = json.loads((path / "poses.json").read_text())
    assert poses["object"] == {"up": [0, 0, 1], "forward": [1, 0, 0], "center": [0.6, 0.1, 0.05],
                               "extents": [0.1, 0.08, 0.1]}
    views = read_folder(path)
    assert len(views) == 8 and views.metric and views.has_depth and not views.has_masks
    np.testing.assert_allclose(views.views[3].camera_center, rec.kept[3].T_wc[:3, 3], atol=1e-9)
    np.testing.assert_allclose(views.views[0].load_depth(), 0.5)
    assert json.loads((path / "capture.json").read_text())["world_frame"] == "world"


def test_an_output_that_appears_during_the_capture_is_not_replaced(tmp_path):
    rec = ReferenceRecorder(tmp_path / "refs", min_translation=0.01)
    for k in range(8):
        rec.add(np.zeros((H, W, 3), np.uint8), None, K, _T(t=(0.1 * k, 0, 0)), k, CAMERA)
    (tmp_path / "refs").mkdir()  # someone else wrote there meanwhile
    with pytest.raises(OutputError, match="overwrite"):
        rec.finish()
    assert rec.aborted and [p.name for p in tmp_path.iterdir()] == ["refs"]
    assert list((tmp_path / "refs").iterdir()) == []


# ------------------------------------------------------------------------------------------------
# A synthetic recording: the demo object + a distractor on a table, a camera circling them
# ------------------------------------------------------------------------------------------------


def _look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """camera_to_world (4, 4) of an OpenCV camera at ``center`` looking at ``target``, image up = world +z."""
    from sixd_pose_ros.geometry.rotations import look_at_rotation

    R_w2c = look_at_rotation(center - target, up=(0.0, 0.0, 1.0))
    return _T(R_w2c.T, center)


def _table(T_wc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour (checkerboard, 5 cm squares) and depth of the plane z = 0 seen by the camera."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1) @ T_wc[:3, :3].T
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -T_wc[2, 3] / rays[..., 2]  # depth along the optical axis (rays have z_cam = 1)
    hit = (z > 0) & (z < 3.0)
    p = T_wc[:3, 3] + rays * np.where(hit, z, 0)[..., None]
    check = ((np.floor(p[..., 0] / 0.05) + np.floor(p[..., 1] / 0.05)) % 2)[..., None]
    rgb = np.where(hit[..., None], np.where(check > 0, [200, 190, 170], [90, 70, 60]), [40, 60, 90])
    return rgb.astype(np.uint8), np.where(hit, z, 0.0)


@pytest.fixture(scope="module")
def recording():
    """20 frames (14 moved enough, 6 barely moved) with their truth poses and the truth box."""
    from sixd_pose_ros.render.procedural import make_bundled_demo_object
    from sixd_pose_ros.render.renderer import RenderMesh, render
    from sixd_pose_ros.training.scenes import sensor_depth

    obj = make_bundled_demo_object()
    R_obj = Rotation.from_euler("z", 0.6).as_matrix()
    v = obj.mesh.vertices @ R_obj.T
    t_obj = np.array([0.6, 0.1, -v[:, 2].min()])
    v_world = v + t_obj
    center_true = 0.5 * (v_world.min(0) + v_world.max(0))
    extents_true = v_world.max(0) - v_world.min(0)
    import trimesh

    distractor = trimesh.creation.box((0.05, 0.05, 0.05))
    t_dis = np.array([0.85, -0.12, 0.025])
    meshes = [RenderMesh.from_trimesh(obj.mesh), RenderMesh.from_trimesh(distractor, (0.2, 0.6, 0.3))]

    target = center_true.copy()
    azimuths, elevations, moved = [], [], []
    for k in range(14):
        azimuths.append(k * 360.0 / 14)
        elevations.append(35.0 if k % 2 else 55.0)
        moved.append(True)
        if k % 2 == 1 and len(azimuths) < 20:  # a barely moving frame right after: 1 degree, ~0.5 cm
            azimuths.append(k * 360.0 / 14 + 1.0)
            elevations.append(elevations[-1])
            moved.append(False)
    T_wc = []
    for az, el in zip(azimuths, elevations):
        a, e = math.radians(az), math.radians(el)
        c = target + 0.5 * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        T_wc.append(_look_at(c, target))
    T_wc = np.stack(T_wc)
    T_cw = np.linalg.inv(T_wc)
    R = np.stack([[Tc[:3, :3] @ R_obj, Tc[:3, :3]] for Tc in T_cw])
    t = np.stack([[Tc[:3, :3] @ t_obj + Tc[:3, 3], Tc[:3, :3] @ t_dis + Tc[:3, 3]] for Tc in T_cw])
    out = render(meshes, R, t, K, W, H)
    rng = np.random.default_rng(5)
    frames, masks = [], []
    for i in range(len(T_wc)):
        bg_rgb, bg_depth = _table(T_wc[i])
        fg = out.mask[i] > 0
        rgb = np.where(fg[..., None], out.rgb[i], bg_rgb).astype(np.uint8)
        depth = sensor_depth(np.where(fg, out.depth[i], bg_depth).astype(np.float32), rng)
        frames.append((rgb, depth))
        masks.append(out.mask[i] == 1)
    T_tool_cam = _T(Rotation.from_euler("xyz", [0.05, -0.1, 1.5]).as_matrix(), (0.03, -0.01, 0.06))
    return SimpleNamespace(frames=frames, masks=masks, T_wc=T_wc, moved=np.array(moved), center=center_true,
                           extents=extents_true, T_tool_cam=T_tool_cam, t0=1_700_000_000 * NS)


def _expected_kept(T_wc, min_t, min_r) -> list[int]:
    kept = [0]
    for i in range(1, len(T_wc)):
        last = T_wc[kept[-1]]
        if np.linalg.norm(T_wc[i][:3, 3] - last[:3, 3]) >= min_t or \
                _angle_deg(last[:3, :3], T_wc[i][:3, :3]) >= min_r:
            kept.append(i)
    return kept


def _transform(parent, child, stamp, T) -> TransformStamped:
    tr = TransformStamped()
    tr.header = Header(stamp=stamp, frame_id=parent)
    tr.child_frame_id = child
    x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
    tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z = (float(c) for c in T[:3, 3])
    tr.transform.rotation.x, tr.transform.rotation.y = float(x), float(y)
    tr.transform.rotation.z, tr.transform.rotation.w = float(z), float(w)
    return tr


class Player:
    """One rclpy context: a player node publishing frames + TF, listening to /rosout."""

    def __init__(self) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("capture_test_player", context=self.ctx)
        n = self.node
        self.pub = {"color": n.create_publisher(Image, "/camera/color/image_raw", 10),
                    "depth": n.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", 10),
                    "info": n.create_publisher(CameraInfo, "/camera/color/camera_info", 10)}
        self.tf = n.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.tf_static = n.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.logs: list = []
        n.create_subscription(Log, "/rosout", self.logs.append, QoSProfile(
            depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.ctx)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.capture = None

    def start_capture(self, name: str, **params) -> CaptureReferencesNode:
        overrides = [Parameter(k, value=v) for k, v in {"world_frame": "world", **params}.items()]
        node = CaptureReferencesNode(name, context=self.ctx, namespace="camera", parameter_overrides=overrides)
        assert node.start(), node.failed
        self.executor.add_node(node)
        self.capture = node
        wait(lambda: min(p.get_subscription_count() for p in self.pub.values()) > 0, 15, "discovery")
        return node

    def stop_capture(self) -> None:
        node, self.capture = self.capture, None
        self.executor.remove_node(node)
        node.destroy_node()

    def publish(self, rec, i: int, with_tf: bool = True) -> None:
        stamp_ns = rec.t0 + i * NS // 10
        stamp = Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
        header = Header(stamp=stamp, frame_id=CAMERA)
        rgb, depth = rec.frames[i]
        if with_tf:
            T_world_tool = rec.T_wc[i] @ np.linalg.inv(rec.T_tool_cam)
            self.tf.publish(TFMessage(transforms=[_transform("world", "tool0", stamp, T_world_tool)]))
        info = CameraInfo(header=header, width=W, height=H)
        info.k = [float(x) for x in K.ravel()]
        self.pub["depth"].publish(array_to_image(np.round(depth * 1000).astype(np.uint16), "16UC1", header))
        self.pub["info"].publish(info)
        self.pub["color"].publish(array_to_image(rgb, "rgb8", header))

    def publish_static(self, rec) -> None:
        zero = Time(sec=0, nanosec=0)
        self.tf_static.publish(TFMessage(transforms=[_transform("tool0", CAMERA, zero, rec.T_tool_cam)]))

    def play(self, rec, frames, with_tf: bool = True) -> None:
        """Publish frames one by one, each after the node has decided on the previous one."""
        node = self.capture
        for i in frames:
            before = sum(node.counts.values())
            for _ in range(3):  # a first message can be lost before DDS has matched: publish again
                self.publish(rec, i, with_tf)
                deadline = time.monotonic() + 5
                while sum(node.counts.values()) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                if sum(node.counts.values()) > before:
                    break
            assert sum(node.counts.values()) > before, f"frame {i} was never decided: {node.counts}"

    def finish(self, name: str):
        client = self.node.create_client(Trigger, f"/camera/{name}/finish")
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        wait(future.done, 60, "the finish service")
        self.node.destroy_client(client)
        return future.result()

    def close(self) -> None:
        if self.capture is not None:
            self.stop_capture()
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def wait(predicate, timeout, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def player():
    p = Player()
    yield p
    p.close()


@pytest.mark.ros
@pytest.mark.slow
def test_capture_over_dds_writes_a_folder_that_builds(player, recording, tmp_path):
    from sixd_pose_ros.objects.model_free_database import (
        build_model_free_database,
        load_model_free_database,
    )

    rec = recording
    out = tmp_path / "refs"
    node = player.start_capture("capture_ok", output=str(out), min_translation=0.03, min_rotation_deg=10.0,
                                use_sim_time=True, progress_period=0.3)
    player.publish_static(rec)
    t0 = time.perf_counter()
    player.play(rec, range(len(rec.frames)))
    capture_s = time.perf_counter() - t0
    expected = _expected_kept(rec.T_wc, 0.03, 10.0)
    assert expected == [i for i in range(len(rec.frames)) if rec.moved[i]]  # the recording is what it claims
    assert node.counts == {"kept": len(expected), "skipped_motion": len(rec.frames) - len(expected),
                           "no_tf": 0, "bad_frame": 0}
    assert not out.exists()  # nothing before finish
    response = player.finish("capture_ok")
    assert response.success, response.message
    assert out.is_dir() and str(out) in response.message
    wait(lambda: any("progress: kept" in m.msg for m in player.logs), 15, "a progress line")

    poses = json.loads((out / "poses.json").read_text())
    capture = json.loads((out / "capture.json").read_text())
    assert len(poses["images"]) == len(expected)
    stamps = [f["stamp_ns"] for f in capture["frames"]]
    assert stamps == [rec.t0 + i * NS // 10 for i in expected]
    for entry, i in zip(poses["images"], expected):
        np.testing.assert_allclose(np.array(entry["camera_to_world"]), rec.T_wc[i], atol=1e-6)
        assert (out / entry["file"]).is_file() and (out / entry["depth"]).is_file()
    import cv2

    depth0 = cv2.imread(str(out / poses["images"][0]["depth"]), cv2.IMREAD_ANYDEPTH)
    assert depth0.dtype == np.uint16
    np.testing.assert_array_equal(depth0, np.round(rec.frames[0][1] * 1000).astype(np.uint16))
    assert not (out / "mask").exists()  # write_masks is off by default
    obj = poses["object"]
    assert math.degrees(math.acos(np.clip(np.dot(obj["up"], [0, 0, 1]), -1, 1))) < 2.0
    center_err = np.linalg.norm(np.array(obj["center"]) - rec.center)
    assert center_err < 0.005, (obj, rec.center)
    # Extents = the truth box (in forward/left/up axes: world x, y, z here) + 2 x margin, within the
    # depth's resolution (the lowest centimetre counts as table).
    np.testing.assert_allclose(np.array(obj["extents"]) - 0.02, rec.extents, atol=0.012)

    t0 = time.perf_counter()
    db = build_model_free_database(out, "captured", tmp_path / "objects", progress=False)
    build_s = time.perf_counter() - t0
    info = json.loads((db / "object.json").read_text())
    assert info["metric"] and info["references"]["n_views"] == len(expected)
    assert info["object_frame"]["source"] == "axis_hints"
    T_o2w = np.array(info["object_frame"]["to_input"])
    center_db = T_o2w[:3, :3] @ np.array(info["normalization"]["center"]) + T_o2w[:3, 3]
    assert np.linalg.norm(center_db - rec.center) < 0.006, (center_db, rec.center)
    assert math.degrees(math.acos(np.clip(T_o2w[2, 2], -1, 1))) < 2.0  # object +z = table normal
    diameter_true = float(np.linalg.norm(rec.extents))
    assert diameter_true * 0.8 < info["diameter"] < diameter_true + 0.08
    assert len(load_model_free_database(db).references) == len(expected)
    print(f"\ncapture of {len(rec.frames)} frames over DDS: {capture_s:.2f} s; build-object: {build_s:.2f} s; "
          f"centre error {1000 * center_err:.1f} mm (poses.json), {1000 * np.linalg.norm(center_db - rec.center):.1f}"
          f" mm (database)")
    player.stop_capture()
    assert out.is_dir()  # destroying a finished node keeps the folder


@pytest.mark.ros
@pytest.mark.slow
def test_interrupted_capture_leaves_no_folder(player, recording, tmp_path):
    out = tmp_path / "refs"
    node = player.start_capture("capture_cut", output=str(out))
    player.publish_static(recording)
    player.play(recording, [0, 2, 4])
    assert node.counts["kept"] == 3
    assert any(p.name.startswith(".refs.tmp-") for p in tmp_path.iterdir())  # frames are being staged
    player.stop_capture()  # destroyed before finish
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ros
@pytest.mark.slow
def test_without_tf_nothing_is_kept_and_the_fix_is_logged(player, recording, tmp_path):
    out = tmp_path / "refs"
    name = "capture_no_tf"
    node = player.start_capture(name, output=str(out), **{"tf.wait": 0.2})
    n_logs = len(player.logs)
    player.play(recording, [0, 1, 2, 3], with_tf=False)
    assert node.counts == {"kept": 0, "skipped_motion": 0, "no_tf": 4, "bad_frame": 0}
    wait(lambda: any(m.level == Log.WARN and "tf2_echo world camera_color_optical_frame" in m.msg
                     and name in m.name for m in player.logs[n_logs:]), 5, "the TF warning on /rosout")
    warnings = [m.msg for m in player.logs[n_logs:] if m.level == Log.WARN and name in m.name]
    assert len(warnings) == 1, warnings  # throttled: one warning for four frames
    response = player.finish(name)
    assert not response.success and "only 0 frame(s) kept" in response.message
    player.stop_capture()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ros
@pytest.mark.slow
def test_the_program_finishes_on_ctrl_c(player, recording, tmp_path):
    """`capture_references` as a process (what `ros2 run` and .venv/bin/capture_references start):
    frames in, SIGINT, the folder is written and the exit code is 0."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "refs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixd_pose_ros.ros.capture_references", "--ros-args", "-r", "__ns:=/camera",
         "-r", "__node:=capture_proc", "--params-file", str(Path(__file__).parents[1] / "config/capture_references.yaml"),
         "-p", f"output:={out}", "-p", "world_frame:=world", "-p", "write_masks:=true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
        preexec_fn=default_interrupts)
    try:
        wait(lambda: min(p.get_subscription_count() for p in [*player.pub.values(), player.tf]) > 0 or
             proc.poll() is not None, 60, "the capture process to subscribe")
        assert proc.poll() is None, proc.stdout.read()
        player.publish_static(recording)

        def kept(k: int) -> bool:
            return any(f"kept frame {k}/" in m.msg and "capture_proc" in m.name for m in player.logs)

        # The first frame again until it is kept: until DDS has matched every topic of the other
        # process (and /tf_static reached it), a frame can be lost; repeats of a kept frame are
        # skipped (the camera did not move), so the count below does not change.
        deadline = time.monotonic() + 30
        while not kept(1) and time.monotonic() < deadline:
            player.publish(recording, 0)
            time.sleep(0.5)
        for i in range(1, len(recording.frames)):
            player.publish(recording, i)
            time.sleep(0.3)
        n_kept = int(recording.moved.sum())
        wait(lambda: kept(n_kept), 60, f"frame {n_kept} kept by the process")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output[-3000:]
    assert "interrupted: finishing the capture" in output and f"wrote {n_kept} frames" in output
    poses = json.loads((out / "poses.json").read_text())
    assert len(poses["images"]) == n_kept and "object" in poses
    # Masks from the object box agree with the rendered silhouettes (minus the lowest centimetre,
    # which counts as table, and depth holes).
    import cv2

    kept = [i for i in range(len(recording.frames)) if recording.moved[i]]
    ious = []
    for entry, i in zip(poses["images"], kept):
        m = cv2.imread(str(out / entry["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        ious.append((m & recording.masks[i]).sum() / (m | recording.masks[i]).sum())
    assert min(ious) > 0.75, ious
    from sixd_pose_ros.objects.model_free_database import build_model_free_database

    db = build_model_free_database(out, "masked", tmp_path / "objects", progress=False)
    info = json.loads((db / "object.json").read_text())
    assert info["references"]["has_masks"] and info["geometry"]["center_source"] == "depth"
    # build-object trims the masked depth to its 0.5..99.5 percentile box, which cuts the drill's
    # thin bit, and the masks leave out the lowest centimetre: its centre moves ~1 cm.
    T_o2w = np.array(info["object_frame"]["to_input"])
    center_db = T_o2w[:3, :3] @ np.array(info["normalization"]["center"]) + T_o2w[:3, 3]
    assert np.linalg.norm(center_db - recording.center) < 0.02


def _write_capture_bag(rec, path: Path, storage: str = "mcap") -> None:
    """The recording as `ros2 bag record` would store it: colour, depth (16UC1 mm), camera_info,
    /tf (world -> tool0 per frame) and /tf_static (tool0 -> camera), at 10 Hz."""
    from sixd_pose_ros.datasets.rosbag import _MessageFactory, _open_writer  # the bag writer's own helpers

    make = _MessageFactory()
    ts, types = make.ts, make.ts.types

    def tf_message(header, parent: str, child: str, T: np.ndarray):
        x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
        tr = types["geometry_msgs/msg/TransformStamped"](
            header=make.header(header, parent), child_frame_id=child,
            transform=make.Transform(translation=make.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                                     rotation=make.Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))))
        return make.TFMessage(transforms=[tr])

    image, info, tfm = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "tf2_msgs/msg/TFMessage"
    with _open_writer(path, storage) as writer:
        color = writer.add_connection("/camera/color/image_raw", image, typestore=ts)
        depth = writer.add_connection("/camera/aligned_depth_to_color/image_raw", image, typestore=ts)
        cinfo = writer.add_connection("/camera/color/camera_info", info, typestore=ts)
        tf = writer.add_connection("/tf", tfm, typestore=ts)
        tf_static = writer.add_connection("/tf_static", tfm, typestore=ts)
        writer.write(tf_static, rec.t0 - NS // 20, ts.serialize_cdr(tf_message(0, "tool0", CAMERA, rec.T_tool_cam), tfm))
        for i, (rgb, d) in enumerate(rec.frames):
            stamp = rec.t0 + i * NS // 10
            header = make.header(stamp, CAMERA)
            T_world_tool = rec.T_wc[i] @ np.linalg.inv(rec.T_tool_cam)
            writer.write(tf, stamp, ts.serialize_cdr(tf_message(stamp, "world", "tool0", T_world_tool), tfm))
            writer.write(depth, stamp, ts.serialize_cdr(
                make.image(header, np.round(d * 1000).astype(np.uint16), "16UC1"), image))
            writer.write(cinfo, stamp, ts.serialize_cdr(make.camera_info(header, K, W, H), info))
            writer.write(color, stamp, ts.serialize_cdr(make.image(header, rgb, "rgb8"), image))


@pytest.mark.ros
@pytest.mark.slow
def test_capture_from_a_recorded_bag_writes_the_same_references(recording, tmp_path):
    """Issue 5: a rosbag2 recording (camera poses on /tf) played into the capture node on the bag's
    time gives the folder the live capture gives: the frames that moved enough, their poses from
    TF, and the object box from depth; build-object takes it."""
    from sixd_pose_ros.objects.model_free_database import build_model_free_database
    from sixd_pose_ros.ros.capture_bag import capture_from_bag

    rec = recording
    bag = tmp_path / "sweep"
    _write_capture_bag(rec, bag)
    # Half speed: the node's sensor-data subscriptions are best effort, and a loaded CI machine
    # must not drop frames the test counts.
    result = capture_from_bag(bag, tmp_path / "refs", params={"world_frame": "world", "tf.backend": "own"},
                              rate=0.5)
    expected = _expected_kept(rec.T_wc, 0.03, 10.0)
    assert result.counts == {"kept": len(expected), "skipped_motion": len(rec.frames) - len(expected),
                             "no_tf": 0, "bad_frame": 0}, result
    poses = json.loads((result.output / "poses.json").read_text())
    for entry, i in zip(poses["images"], expected):
        np.testing.assert_allclose(np.array(entry["camera_to_world"]), rec.T_wc[i], atol=1e-6)
    assert np.linalg.norm(np.array(poses["object"]["center"]) - rec.center) < 0.005
    t0 = time.perf_counter()
    db = build_model_free_database(result.output, "from_bag", tmp_path / "objects", progress=False)
    info = json.loads((db / "object.json").read_text())
    assert info["metric"] and info["references"]["n_views"] == len(expected)
    print(f"\ncapture from a {result.bag_seconds:.1f} s bag: {result.wall_seconds:.2f} s; build-object "
          f"{time.perf_counter() - t0:.2f} s")


@pytest.mark.ros
def test_capture_from_a_bag_without_tf_writes_nothing_and_says_why(recording, tmp_path):
    from sixd_pose_ros.ros.capture_bag import capture_from_bag

    bag = tmp_path / "sweep"
    _write_capture_bag(recording, bag)
    with pytest.raises(CaptureError, match="no_tf"):
        capture_from_bag(bag, tmp_path / "refs", params={"world_frame": "map", "tf.backend": "own", "tf.wait": 0.1},
                         settle_s=10.0)
    assert not (tmp_path / "refs").exists()
