"""Size bound (issue 18 item 5): colour images above max_pixels are downscaled before the
estimator (depth too, K scaled to match, so poses in meters are unchanged) or refused with a
message; memory stays bounded after a burst of 4K frames, and SIGINT ends the node within 3 s
even while the estimator is busy."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_until

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_ros_output_frame import session_fixture  # noqa: E402,F401 - fixture
from test_ros_transport import HELPER, ROOT, _env, node_process, run_camera  # noqa: E402

from sixd_pose_ros.pipeline.types import Frame  # noqa: E402
from sixd_pose_ros.ros.frame_checks import downscale_frame, scale_intrinsics  # noqa: E402
from sixd_pose_ros.ros.image_conversion import array_to_image  # noqa: E402

pytestmark = pytest.mark.ros
W4K, H4K = 3840, 2160
K4K = np.array([[2700.0, 0, 1919.5], [0, 2700.0, 1079.5], [0, 0, 1]])


def _project(K, X):
    uv = K @ X
    return uv[:2] / uv[2]


def test_downscale_keeps_the_geometry():
    rgb = np.zeros((H4K, W4K, 3), np.uint8)
    rgb[1000:1100, 2000:2100] = 255
    depth = np.full((H4K, W4K), 0.8, np.float32)
    frame, scale = downscale_frame(Frame(rgb=rgb, K=K4K, depth=depth, stamp_ns=5, frame_id="cam"), 2_073_600)
    w, h = frame.size
    assert w * h <= 2_073_600 and (w, h) == (1920, 1080) and scale == pytest.approx(0.5)
    assert frame.depth.shape == (h, w) and set(np.unique(frame.depth)) == {np.float32(0.8)}  # nearest: no blends
    X = np.array([0.05, -0.02, 0.8])  # a point in the camera frame lands where the image moved it
    u4, v4 = _project(K4K, X)
    u2, v2 = _project(frame.K, X)
    assert (u2, v2) == pytest.approx(((u4 + 0.5) * 0.5 - 0.5, (v4 + 0.5) * 0.5 - 0.5))
    assert frame.rgb[int(round((1050 + 0.5) * 0.5 - 0.5)), int(round((2050 + 0.5) * 0.5 - 0.5))].tolist() == [255] * 3
    same, one = downscale_frame(frame, 2_073_600)
    assert same is frame and one == 1.0
    assert np.allclose(scale_intrinsics(K4K, 1.0, 1.0), K4K)


def _messages(stamp, width=W4K, height=H4K, k=K4K):
    header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
    color = array_to_image(np.zeros((height, width, 3), np.uint8), "rgb8", header)
    info = CameraInfo(header=header, width=width, height=height, k=[float(v) for v in np.asarray(k).ravel()])
    return color, info


def test_a_4k_frame_reaches_the_estimator_downscaled_or_is_refused(session):
    s = session
    color, info = _messages(5 * 10**9)
    s.node._process(((color, info), time.perf_counter()))  # the worker's call, without DDS in between
    frame = s.est.frames[-1]
    assert frame.size == (1920, 1080) and frame.K[0, 0] == pytest.approx(1350.0)
    assert s.node.stats.snapshot()["downscaled"] == 1
    wait_until(lambda: any("downscaled to 1920x1080" in m.msg for m in s.logs), 5, "the downscale warning")
    assert s.node.set_parameters([Parameter("oversize", value="refuse")])[0].successful
    n = len(s.est.frames)
    s.node._process(((color, info), time.perf_counter()))
    assert len(s.est.frames) == n  # refused: never reaches the estimator
    assert "is above max_pixels (2073600) and oversize is refuse" in s.node.stats.snapshot()["last_error"]
    assert s.node.set_parameters([Parameter("max_pixels", value=W4K * H4K)])[0].successful
    s.node._process(((color, info), time.perf_counter()))
    assert s.est.frames[-1].size == (W4K, H4K)  # within the bound now: untouched


def test_shutdown_does_not_wait_for_a_busy_estimator(session):
    s = session
    release = threading.Event()
    s.est.estimate = lambda frame: release.wait(30) and []
    try:
        s.send()
        wait_until(lambda: s.node._worker is not None and s.node._worker.busy, 10, "the estimator to be busy")
        t0 = time.monotonic()
        s.node.on_shutdown(None)  # the shutdown transition's work (the fixture then takes the transition)
        assert time.monotonic() - t0 < 3.0 and s.node.estimator is None
    finally:
        release.set()


def _rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_node_process_after_a_burst_of_4k_frames_memory_and_sigint():
    ns = "sizebound"
    with node_process(ns, "--work", "0.05", "--param", "diagnostics_period:=0.5", "--param",
                      "use_depth:=false") as (node, diags):
        run_camera(ns, 640, 480, 2, 10)  # warm up at a usual size
        time.sleep(1.0)
        before = _rss_mb(node.pid)
        sent = run_camera(ns, W4K, H4K, 3, 3)
        values = wait_until(lambda: next((v for v in reversed(diags) if int(v.get("frames_downscaled", 0)) > 0),
                                         None), 10, "downscaled frames in the diagnostics")
        time.sleep(1.0)
        after = _rss_mb(node.pid)
        print(f"4K burst: {sent['sent']} sent, {values['received/image']} received, "
              f"{values['frames_downscaled']} downscaled; RSS {before:.0f} -> {after:.0f} MB")
        assert after - before < 50.0
        # Ctrl-C while 4K frames arrive: the process ends within 3 s.
        streaming = subprocess.Popen([sys.executable, str(HELPER), "camera", ns, str(W4K), str(H4K), "5", "3"],
                                     env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: int(diags[-1].get("received/image", 0)) > int(values["received/image"]), 30,
                       "the second burst to arrive")
            t0 = time.monotonic()
            node.send_signal(signal.SIGINT)
            output = node.communicate(timeout=20)[0]
            elapsed = time.monotonic() - t0
        finally:
            streaming.kill()
            streaming.wait()
        print(f"SIGINT to exit: {elapsed:.2f} s")
        assert node.returncode == 0, output[-3000:]
        assert elapsed < 3.0
