"""Honest /diagnostics (issue 18 item 6): colour and depth that never pair, a stream that stops,
an input that never comes and frames stamped 0 are errors or warnings that say what to fix,
never OK with a stale "found drill". Levels from controlled clocks first, then over DDS."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
from conftest import wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_ros_output_frame import H, K, OUT, W, _rgb, _tf_for, session_fixture  # noqa: E402,F401 - fixture

from sixd_pose_ros.ros.diagnostics import STALE_S, PipelineStats, diagnostic_array  # noqa: E402
from sixd_pose_ros.ros.image_conversion import array_to_image  # noqa: E402
from sixd_pose_ros.ros.sync import stamp_ns  # noqa: E402

pytestmark = pytest.mark.ros
INPUTS = ("image", "camera_info", "depth")


def _status(stats, now, **kwargs):
    return diagnostic_array(stats.snapshot(now=now), name="n", hardware_id="cam", stamp=Time(), inputs=INPUTS,
                            slop=0.05, **kwargs).status[0]


def test_levels_for_streams_that_never_pair_stop_or_never_come():
    stats = PipelineStats()
    status = _status(stats, stats.started + 3)
    assert status.level == DiagnosticStatus.WARN and "no input since activation" in status.message
    for name, stamp in (("image", 10**9), ("camera_info", 10**9), ("depth", 2 * 10**9)):
        stats.input(name, stamp)
    now = stats.last_input_time
    assert _status(stats, now).message == "waiting for the first synchronized frame"  # not judged yet
    stats.started -= STALE_S + 1.0  # inputs have flowed since activation, never paired
    status = _status(stats, now)
    assert status.level == DiagnosticStatus.ERROR and "never pair" in status.message
    assert "1.000 s apart, slop 0.05 s" in status.message and "depth 2.000" in status.message
    status = _status(stats, now + STALE_S + 1.0)
    assert status.level == DiagnosticStatus.ERROR and "no frame for 3.0 s (stream stopped)" in status.message

    stats = PipelineStats()  # depth never comes while the others do
    stats.started -= 5
    stats.input("image", 10**9)
    stats.input("camera_info", 10**9)
    status = _status(stats, stats.last_input_time, topics={"depth": "/cam/depth"})
    assert status.level == DiagnosticStatus.ERROR and status.message.startswith("nothing on /cam/depth")

    stats = PipelineStats()  # pairing that worked, then stopped (e.g. depth lost its clock)
    stats.started -= 5
    for name in INPUTS:
        stats.input(name, 10**9)
    stats.synced(False)
    stats.done({}, {"drill": 0.8})
    now = stats.last_sync_time
    assert _status(stats, now).level == DiagnosticStatus.OK
    stats.last_sync_time -= 3
    for name in INPUTS:
        stats.input(name, 5 * 10**9 if name == "depth" else 4 * 10**9)
    status = _status(stats, stats.last_input_time)
    assert status.level == DiagnosticStatus.ERROR and "stopped pairing" in status.message and "found" not in status.message

    stats.zero_stamp("messages on /cam/image are stamped 0 and are dropped")
    status = _status(stats, stats.zero_stamp_time)
    assert status.level == DiagnosticStatus.ERROR and "stamped 0" in status.message
    assert {kv.key: kv.value for kv in status.values}["zero_stamps"] == "1"


def diagnostics_and_depth(s):
    """The node's /diagnostics statuses (a list that fills as they come) and a depth publisher the
    node has discovered, for a ``session`` with use_depth."""
    diags = []
    s.probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.extend(
        st for st in m.status if st.name.startswith(f"{OUT}:")), 100)
    pub_depth = s.probe.create_publisher(Image, "/of/aligned_depth_to_color/image_raw", 10)
    wait_until(lambda: pub_depth.get_subscription_count(), 10, "discovery of depth")
    return diags, pub_depth


@pytest.mark.parametrize("session", [{"use_depth": True, "diagnostics_period": 0.2}], indirect=True)
def test_over_dds_unpaired_zero_stamped_and_stopped_streams(session):
    s = session
    diags, pub_depth = diagnostics_and_depth(s)

    def publish(stamp, depth_offset=0):
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
        s.pub_info.publish(CameraInfo(header=header, width=W, height=H, k=K))
        s.pub_raw.publish(array_to_image(_rgb(), "rgb8", header))
        d = stamp + depth_offset
        pub_depth.publish(array_to_image(np.full((H, W), 0.5, np.float32), "32FC1",
                                         Header(stamp=Time(sec=d // 10**9, nanosec=d % 10**9), frame_id="cam")))

    def status_where(predicate, timeout, what):
        return wait_until(lambda: next((d for d in reversed(diags) if predicate(d)), None), timeout, what)

    # Depth stamped 5 s after colour (beyond what the 10-message queues hold at 10 Hz): never pairs.
    start = time.monotonic()
    stamp = 100 * 10**9
    while time.monotonic() - start < STALE_S + 1.0:
        stamp += 100_000_000
        publish(stamp, depth_offset=5 * 10**9)
        time.sleep(0.1)
    status = status_where(lambda d: d.level == DiagnosticStatus.ERROR and "never pair" in d.message, 3,
                          "the never-pair error")
    # The newest colour and depth stamps are 5 s apart, give or take the one message by which
    # either stream may lead the other on a loaded machine.
    apart = re.search(r"(\d+\.\d+) s apart", status.message)
    assert apart and abs(float(apart.group(1)) - 5.0) <= 0.2 + 1e-6, status.message
    assert not s.est.frames

    # Frames stamped 0: dropped (no pose, no TF), and said so.
    for _ in range(3):
        publish(0)
        time.sleep(0.05)
    status_where(lambda d: d.level >= DiagnosticStatus.WARN and "stamped 0" in d.message, 3, "the zero-stamp status")
    time.sleep(0.3)
    assert not s.est.frames and not [m for m in s.poses if stamp_ns(m) == 0] and _tf_for(s, 0) is None

    # Paired frames: OK; then the stream stops: ERROR, not a stale "found drill".
    diags.clear()
    stamp += 10 * 10**9  # past the unpaired depth still queued
    for _ in range(3):
        stamp += 100_000_000
        publish(stamp)
        time.sleep(0.1)
    wait_until(lambda: s.est.frames, 5, "a paired frame")
    status_where(lambda d: d.level == DiagnosticStatus.ERROR and "stream stopped" in d.message, STALE_S + 4,
                 "the stream-stopped error")
