"""The README's first command end to end: synthesize, build the object, play frames into the
real node over DDS, score what comes back (random-init weights here: plumbing, not accuracy)."""
from __future__ import annotations

import json

import pytest
from conftest import torch_single_thread

pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_plays_frames_through_the_node_and_scores_them(tmp_path):
    from sixd_pose_ros.demo import run_demo
    from sixd_pose_ros.errors import SixdPoseError
    from conftest import save_untrained_weights

    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(SixdPoseError, match="sixd-pose train"):
        run_demo(tmp_path / "out", weights=weights, progress=False)
    with torch_single_thread():
        save_untrained_weights(weights)
        summary = run_demo(tmp_path / "out", weights=weights, progress=False,
                           codebook={"subdivisions": 1, "n_inplane": 4, "n_references": 16})
    dds = summary["over_dds"]
    assert dds["frames_published"] == summary["frames"] == 12
    assert dds["poses_received"] >= 1 and dds["latency_ms_median"] > 0
    assert 0.0 <= dds["add_0.1d"] <= 1.0
    assert (tmp_path / "out" / "overlay.png").is_file() and (tmp_path / "out" / "overview.png").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == 12
