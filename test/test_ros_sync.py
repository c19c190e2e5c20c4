"""Our approximate-time synchronizer (the one the node uses where message_filters is missing):
pairs within slop, picks the closest, drops stale and late messages, bounds its queues, resets
on a time jump, and runs with or without depth."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 not installed: run `make setup`")
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from sixd_pose_ros.ros.sync import ApproximateTimeSynchronizer, FrameSynchronizer, stamp_ns  # noqa: E402

pytestmark = pytest.mark.ros


def _msg(cls, t: float, tag: str = ""):
    msg = cls()
    ns = int(round(t * 1e9))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
    msg.header.frame_id = tag
    return msg


def _image(t, tag=""):
    return _msg(Image, t, tag)


def _info(t, tag=""):
    return _msg(CameraInfo, t, tag)


def _sync(n=3, slop=0.02, queue=10):
    out = []
    fs = FrameSynchronizer(["image", "camera_info", "depth"][:n], queue, slop,
                           lambda *m: out.append(tuple(stamp_ns(x) for x in m)), use_message_filters=False)
    assert fs.backend == "own"
    return fs, out


def test_a_triple_within_slop_is_emitted_once():
    fs, out = _sync()
    fs.add(0, _image(10.000))
    fs.add(2, _image(10.015))
    assert out == []
    fs.add(1, _info(10.010))
    assert out == [(10_000_000_000, 10_010_000_000, 10_015_000_000)]
    fs.add(1, _info(10.011))  # nothing left to pair with
    assert len(out) == 1


def test_stamps_further_apart_than_slop_never_pair():
    fs, out = _sync(n=2, slop=0.01)
    fs.add(0, _image(1.00))
    fs.add(1, _info(1.02))
    assert out == []


def test_the_closest_candidate_wins():
    fs, out = _sync(n=2, slop=0.05)
    fs.add(1, _info(5.00))
    fs.add(1, _info(5.03))
    fs.add(0, _image(5.029))
    assert out == [(5_029_000_000, 5_030_000_000)]


def test_older_queued_frames_are_dropped_once_a_newer_set_is_emitted():
    fs, out = _sync(n=2, slop=0.001)
    for t in (1.0, 1.1, 1.2):
        fs.add(0, _image(t))
    fs.add(1, _info(1.2))
    assert out == [(1_200_000_000, 1_200_000_000)]
    assert fs.dropped == 2  # images 1.0 and 1.1 can only make older sets: superseded
    # A late camera_info for 1.1 is out of order now: dropped, not paired with anything.
    assert fs.add(1, _info(1.1)) == "out_of_order"
    assert fs.stats.out_of_order == 1 and len(out) == 1
    fs.add(0, _image(1.3))
    fs.add(1, _info(1.3))
    assert out[-1] == (1_300_000_000, 1_300_000_000)


def test_queues_are_bounded():
    matcher = ApproximateTimeSynchronizer(2, queue_size=3, slop=0.01)
    for i in range(10):
        matcher.add(0, _image(i * 1.0))
    assert len(matcher.queues[0]) == 3 and matcher.overflow == 7
    assert sorted(matcher.queues[0]) == [7 * 10**9, 8 * 10**9, 9 * 10**9]



def test_a_message_older_than_a_full_queue_is_dropped_not_matched():
    """It used to be matched after the trim had removed it (KeyError in the subscription
    callback): depth running seconds ahead of colour fills its queue with future stamps."""
    matcher = ApproximateTimeSynchronizer(2, queue_size=3, slop=0.01)
    for i in range(3):
        matcher.add(1, _info(5.0 + i))
    matcher.add(0, _image(1.0))
    assert matcher.add(1, _info(1.0)) is None and matcher.overflow == 1
    assert sorted(matcher.queues[1]) == [5 * 10**9, 6 * 10**9, 7 * 10**9]

def test_without_depth_two_inputs_suffice():
    fs, out = _sync(n=2, slop=0.01)
    fs.add(0, _image(2.0, "cam"))
    fs.add(1, _info(2.0))
    assert out == [(2 * 10**9, 2 * 10**9)]


def test_with_depth_required_a_missing_depth_stream_emits_nothing_and_shows_in_the_counts():
    fs, out = _sync(n=3, slop=0.01)
    for t in (1.0, 1.1, 1.2):
        fs.add(0, _image(t))
        fs.add(1, _info(t))
    assert out == []
    assert fs.stats.received == [3, 3, 0]


def test_a_jump_back_in_time_resets_instead_of_dropping_everything():
    fs, out = _sync(n=2, slop=0.01)
    fs.add(0, _image(100.0))
    fs.add(1, _info(100.0))
    assert fs.add(0, _image(3.0)) == "time_jump"  # bag restarted
    assert fs.stats.time_jumps == 1
    fs.add(1, _info(3.0))
    assert out[-1] == (3 * 10**9, 3 * 10**9)


def test_callback_receives_messages_in_input_order():
    got = []
    fs = FrameSynchronizer(["image", "camera_info"], 5, 0.01, lambda *m: got.append(m), use_message_filters=False)
    img, info = _image(4.0, "img"), _info(4.0, "info")
    fs.add(1, info)
    fs.add(0, img)
    assert got == [(img, info)]
