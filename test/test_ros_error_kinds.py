"""Errors carry a kind, and the node files bad frames by that kind, never by their message.

Each ErrorKind reaches the node (from the estimator, or from converting the messages) and must
land under its own /diagnostics key (``warnings/<key>``), count as a bad frame or not, be logged
as a warning with the error's own message, and leave the node processing the next frame. The
messages used here say nothing about their kind on purpose: a node that read them could not
file them right.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_ros_output_frame import stand_in_node  # noqa: E402

from sixd_pose_ros.errors import ErrorKind, SixdPoseError  # noqa: E402
from sixd_pose_ros.pipeline.types import CameraInfoError, DepthError, Estimator, FrameError, ObjectPose  # noqa: E402
from sixd_pose_ros.ros.diagnostics import diagnostic_array  # noqa: E402
from sixd_pose_ros.ros.frame_checks import OversizeError  # noqa: E402
from sixd_pose_ros.ros.frames import intrinsics_from_camera_info  # noqa: E402
from sixd_pose_ros.ros.image_conversion import ImageEncodingError, array_to_image  # noqa: E402

pytestmark = pytest.mark.ros
W, H = 64, 48
K = [60.0, 0, 32.0, 0, 60.0, 24.0, 0, 0, 1.0]

# What the node does with each kind: its /diagnostics key and whether it counts as a bad frame.
# Written out, not derived from the enum, because these keys are what users and monitors read.
NODE_FILES = {
    ErrorKind.IMAGE: ("frame", True),
    ErrorKind.ENCODING: ("encoding", True),
    ErrorKind.CAMERA_INFO: ("camera_info", True),
    ErrorKind.DEPTH: ("depth", True),
    ErrorKind.SIZE: ("size", False),
}
# The class that carries each kind.
CLASSES = {ErrorKind.IMAGE: FrameError, ErrorKind.ENCODING: ImageEncodingError,
           ErrorKind.CAMERA_INFO: CameraInfoError, ErrorKind.DEPTH: DepthError, ErrorKind.SIZE: OversizeError}


def test_every_kind_has_a_class_and_a_place_in_the_node():
    assert set(NODE_FILES) == set(ErrorKind) == set(CLASSES)
    for kind, cls in CLASSES.items():
        assert issubclass(cls, FrameError) and cls.kind is kind


def test_the_node_messages_intrinsics_problems_as_camera_info():
    with pytest.raises(CameraInfoError):
        intrinsics_from_camera_info(CameraInfo(), W, H)
    with pytest.raises(CameraInfoError):
        intrinsics_from_camera_info(CameraInfo(width=W // 2, height=H // 2, k=K), W, H)


class _Estimator(Estimator):
    """Raises ``error`` when it is set, else finds the drill."""

    error: BaseException | None = None

    def estimate(self, frame):
        if self.error is not None:
            raise self.error
        return [ObjectPose("drill", np.eye(3), np.array([0.0, 0.0, 0.5]), 0.8, np.array([0, 0, 10, 10.0]))]


class _Logger:
    def __init__(self, real):
        self.real, self.warnings = real, []

    def warning(self, message, **kwargs):
        self.warnings.append(message)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture(name="s", scope="module")
def node_fixture(tmp_path_factory):
    """A configured, active node with the stand-in estimator, driven by calling its worker's
    function directly (no DDS needed to see how it files an error)."""
    est = _Estimator()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = stand_in_node(ctx, est, tmp_path_factory.mktemp("objects") / "drill", namespace="kinds")
    try:
        assert node.start(), node.configure_error
        logger = _Logger(node.get_logger())
        node.get_logger = lambda: logger
        s = SimpleNamespace(node=node, est=est, logger=logger, stamp=10**9)

        def process(encoding="rgb8", k=K):
            s.stamp += 100_000_000
            header = Header(stamp=Time(sec=s.stamp // 10**9, nanosec=s.stamp % 10**9), frame_id="cam")
            info = CameraInfo(header=header, width=W, height=H, k=k)
            color = array_to_image(np.full((H, W, 3), 90, np.uint8), "rgb8", header)
            color.encoding = encoding
            node._process(((color, info), time.perf_counter()))

        def process_raising(error):
            """Process a good frame with the estimator raising ``error``: the statistics before
            and after."""
            before = node.stats.snapshot()
            est.error = error
            try:
                process()
            finally:
                est.error = None
            return before, node.stats.snapshot()

        s.process, s.process_raising = process, process_raising
        yield s
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _filed(before, after):
    """What changed in the node's statistics between two snapshots, and its /diagnostics values."""
    msg = diagnostic_array(after, name="n", hardware_id="cam", stamp=Time(sec=1))
    values = {kv.key: kv.value for kv in msg.status[0].values}
    grown = {k: n - before["warnings"].get(k, 0) for k, n in after["warnings"].items()
             if n != before["warnings"].get(k, 0)}
    return grown, values, msg.status[0].level


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.name)
def test_an_estimator_error_is_filed_by_its_kind_and_the_node_goes_on(s, kind):
    key, bad_frame = NODE_FILES[kind]
    error = CLASSES[kind]("the input at fault is not named in this message; fix: what the raiser says")
    n_warnings = len(s.logger.warnings)
    before, after = s.process_raising(error)
    grown, values, level = _filed(before, after)
    assert grown == {key: 1}
    assert values[f"warnings/{key}"] == str(after["warnings"][key])
    assert after["bad_frames"] - before["bad_frames"] == int(bad_frame)
    assert after["estimator_errors"] == before["estimator_errors"]
    assert after["last_error"] == str(error) and level == DiagnosticStatus.WARN
    assert s.logger.warnings[n_warnings:] == [str(error)]
    s.process()  # the next good frame is processed as usual
    assert s.node.stats.snapshot()["processed"] == after["processed"] + 1


@pytest.mark.parametrize("error", [RuntimeError("boom"), SixdPoseError("engine gone")], ids=["bug", "user"])
def test_an_error_without_a_frame_kind_is_the_estimators(s, error):
    before, after = s.process_raising(error)
    grown, _, _ = _filed(before, after)
    assert grown == {"estimator": 1} and after["bad_frames"] == before["bad_frames"]
    assert after["estimator_errors"] == before["estimator_errors"] + 1


@pytest.mark.parametrize("kwargs, key", [(dict(k=[0.0] * 9), "camera_info"), (dict(encoding="yuv422"), "encoding")],
                         ids=["zero K", "yuv422"])
def test_a_message_the_node_cannot_convert_is_filed_by_its_kind(s, kwargs, key):
    before = s.node.stats.snapshot()
    s.process(**kwargs)
    grown, _, _ = _filed(before, s.node.stats.snapshot())
    assert grown == {key: 1}


def test_a_refused_parameter_set_is_told_only_its_own_problem(s):
    result = s.node.set_parameters_atomically([Parameter("min_score", value="high"),
                                               Parameter("warn_period", value=0.0)])
    assert not result.successful
    assert result.reason == "min_score: 'high' is not a number; e.g. min_score:=0.3"
