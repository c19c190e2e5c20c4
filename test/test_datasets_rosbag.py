"""rosbag2 round trips in both storages and both depth encodings, checked down to the messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from scipy.spatial.transform import Rotation

from sixd_pose_ros.datasets import GTInstance, SceneFrame, read_rosbag, write_rosbag
from sixd_pose_ros.datasets.rosbag import _MessageFactory, _typestore
from sixd_pose_ros.errors import DatasetError, OutputError

H, W = 24, 32
K = np.array([[500.0, 0.0, 13.7], [0.0, 520.0, 10.2], [0.0, 0.0, 1.0]])  # fx != fy, off-center
T0 = 1_700_000_000_123_456_789
FRAME_ID = "test_cam_optical"


def _frames() -> list[SceneFrame]:
    rng = np.random.default_rng(7)
    frames = []
    # frame 0: two instances of object 4 (unique TF names needed) and one of 11;
    # frame 1: no objects; frame 2: one object
    objs = [[4, 11, 4], [], [2]]
    for k, ids in enumerate(objs):
        depth = rng.uniform(0.2, 3.0, (H, W)).astype(np.float32)
        depth[0, :5] = 0.0  # no measurement
        instances = [
            GTInstance(
                obj_id,
                Rotation.random(random_state=10 * k + j).as_matrix(),
                rng.uniform(-0.5, 0.5, 3) + [0, 0, 1.0],
                np.zeros((H, W), bool),
            )
            for j, obj_id in enumerate(ids)
        ]
        frames.append(
            SceneFrame(
                rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                depth=depth,
                K=K,
                instances=instances,
                stamp_ns=T0 + k * 33_333_333,
                frame_id=FRAME_ID,
            )
        )
    return frames


CASES = [
    ("mcap", "32FC1", False),
    ("sqlite3", "16UC1", False),
    ("mcap", "16UC1", True),
    ("sqlite3", "32FC1", True),
]


@pytest.mark.parametrize(("storage", "depth_encoding", "compress"), CASES)
def test_round_trip(tmp_path: Path, storage: str, depth_encoding: str, compress: bool) -> None:
    frames = _frames()
    bag = tmp_path / "rec"
    n = write_rosbag(
        bag, iter(frames), storage=storage, depth_encoding=depth_encoding, compress_images=compress
    )
    assert n == 3
    assert (bag / f"rec.{'mcap' if storage == 'mcap' else 'db3'}").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]

    read = list(read_rosbag(bag))
    assert len(read) == 3
    for got, want in zip(read, frames):
        assert got.stamp_ns == want.stamp_ns and got.frame_id == FRAME_ID
        np.testing.assert_array_equal(got.rgb, want.rgb)
        np.testing.assert_array_equal(got.K, K)
        assert got.depth.dtype == np.float32
        tol = 1e-6 if depth_encoding == "32FC1" else 0.5e-3 + 1e-7
        assert np.abs(got.depth - want.depth).max() <= tol
        assert np.all(got.depth[0, :5] == 0.0)
        assert [i.obj_id for i in got.instances] == [i.obj_id for i in want.instances]
        for g, w in zip(got.instances, want.instances):
            np.testing.assert_allclose(g.R_m2c, w.R_m2c, atol=1e-9)
            np.testing.assert_allclose(g.t_m2c, w.t_m2c, atol=1e-9)
            assert g.mask_visib is None  # bags carry no masks


def test_messages_follow_ros_conventions(tmp_path: Path) -> None:
    frames = _frames()
    bag = tmp_path / "bag"
    write_rosbag(
        bag, frames, namespace="/cam1/", object_frame_prefix="obj_", depth_encoding="16UC1"
    )
    ts = _typestore()
    seen: dict[str, list] = {}
    with Reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            "/cam1/color/image_raw": "sensor_msgs/msg/Image",
            "/cam1/depth/image_raw": "sensor_msgs/msg/Image",
            "/cam1/color/camera_info": "sensor_msgs/msg/CameraInfo",
            "/tf": "tf2_msgs/msg/TFMessage",
        }
        for conn, bag_time, raw in reader.messages():
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            seen.setdefault(conn.topic, []).append((bag_time, msg))
    assert [t for t, _ in seen["/tf"]] == [f.stamp_ns for f in frames]
    for topic in ("/cam1/color/image_raw", "/cam1/depth/image_raw", "/cam1/color/camera_info"):
        for (bag_time, msg), frame in zip(seen[topic], frames):
            assert bag_time == frame.stamp_ns
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == frame.stamp_ns
            assert msg.header.frame_id == FRAME_ID
    color = seen["/cam1/color/image_raw"][0][1]
    assert (color.encoding, color.height, color.width, color.step) == ("rgb8", H, W, 3 * W)
    depth = seen["/cam1/depth/image_raw"][0][1]
    assert (depth.encoding, depth.step) == ("16UC1", 2 * W)
    info = seen["/cam1/color/camera_info"][0][1]
    assert (info.width, info.height, info.distortion_model) == (W, H, "plumb_bob")
    np.testing.assert_array_equal(info.k, K.reshape(-1))
    np.testing.assert_array_equal(info.r, np.eye(3).reshape(-1))
    np.testing.assert_array_equal(info.p, np.hstack([K, np.zeros((3, 1))]).reshape(-1))
    assert not np.any(info.d)
    tf0 = seen["/tf"][0][1].transforms
    assert [t.child_frame_id for t in tf0] == ["obj_4", "obj_11", "obj_4_1"]
    assert all(t.header.frame_id == FRAME_ID for t in tf0)
    q = tf0[0].transform.rotation
    np.testing.assert_allclose(
        [q.x, q.y, q.z, q.w], Rotation.from_matrix(frames[0].instances[0].R_m2c).as_quat()
    )
    assert seen["/tf"][1][1].transforms == []  # frame without objects: empty, but present
    back = list(read_rosbag(bag, "/cam1", "obj_"))
    assert [[i.obj_id for i in f.instances] for f in back] == [[4, 11, 4], [], [2]]


def test_refuses_overwrite_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_rosbag(bag, _frames()[:1])
    with pytest.raises(OutputError, match="--overwrite"):
        write_rosbag(bag, _frames()[:1])
    write_rosbag(bag, _frames(), overwrite=True, storage="sqlite3")
    assert len(list(read_rosbag(bag))) == 3

    def crashing() -> Iterator[SceneFrame]:
        yield _frames()[0]
        raise RuntimeError("simulator crashed")

    with pytest.raises(RuntimeError):
        write_rosbag(tmp_path / "bag2", crashing())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    with pytest.raises(DatasetError, match="/camera/color/image_raw"):
        list(read_rosbag(bag, namespace="/other"))


def test_pairs_skewed_streams_within_tolerance(tmp_path: Path) -> None:
    """A real driver stamps depth slightly apart from color; max_skew_ns decides the pairing."""
    make = _MessageFactory()
    ts = make.ts
    frames = _frames()
    bag = tmp_path / "skewed"
    image_t, info_t = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        color = writer.add_connection("/camera/color/image_raw", image_t, typestore=ts)
        depth = writer.add_connection("/camera/depth/image_raw", image_t, typestore=ts)
        info = writer.add_connection("/camera/color/camera_info", info_t, typestore=ts)
        for f in frames:
            h = make.header(f.stamp_ns, FRAME_ID)
            t_depth = f.stamp_ns + 1_000_000  # depth stamped 1 ms after color
            color_msg = make.image(h, f.rgb, "rgb8")
            depth_msg = make.image(make.header(t_depth, FRAME_ID), f.depth, "32FC1")
            writer.write(color, f.stamp_ns, ts.serialize_cdr(color_msg, image_t))
            writer.write(depth, t_depth, ts.serialize_cdr(depth_msg, image_t))
            if f is frames[0]:  # camera_info only once: later frames reuse it
                info_msg = make.camera_info(h, K, W, H)
                writer.write(info, f.stamp_ns, ts.serialize_cdr(info_msg, info_t))
    exact = list(read_rosbag(bag))
    assert len(exact) == 3 and all(not f.depth.any() for f in exact)  # no depth at the same stamp
    assert all(f.instances == [] for f in exact)  # no /tf topic: no ground truth
    skewed = list(read_rosbag(bag, max_skew_ns=2_000_000))
    for got, want in zip(skewed, frames):
        np.testing.assert_array_equal(got.depth, want.depth)
        np.testing.assert_array_equal(got.K, K)
