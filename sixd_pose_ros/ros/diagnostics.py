"""Pipeline statistics (rates, per-stage latency, drops, last error) and their DiagnosticArray.

The level says what a robot operator needs to know, in this order: inactive (WARN); a stream
that stopped (ERROR: no frame for STALE_S) or never started (WARN); an input that never arrives
while the others do (ERROR); colour and depth that arrive but never pair, or stopped pairing
(ERROR, with the stamps that do not meet); frames missing before the node, read from gaps in
each input's stamps (WARN, with the received and the expected rate); a recent bad-input
warning, e.g. frames stamped 0 or an RGB-only estimate (WARN); else OK with the rate and what
was found.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from sixd_pose_ros.errors import ErrorKind

__all__ = ["PipelineStats", "diagnostic_array"]

WINDOW_S = 5.0  # rates are averaged over this many seconds
STALE_S = 2.0  # no frame (or no synchronized set) for this long is an error
LATENCY_SAMPLES = 20
# Frames missing on an input (from its stamps) above this fraction of the window's frames: WARN.
MISSING_TOLERANCE = 0.02
# Error kinds counted in bad_frames (besides warnings/<kind>); a frame refused for its size is
# counted under warnings/size only.
BAD_FRAME_KINDS = frozenset(k.value for k in (ErrorKind.IMAGE, ErrorKind.ENCODING, ErrorKind.CAMERA_INFO,
                                              ErrorKind.DEPTH))


class _Rate:
    def __init__(self) -> None:
        self.times: collections.deque = collections.deque()

    def tick(self, now: float) -> None:
        self.times.append(now)

    def hz(self, now: float) -> float:
        while self.times and now - self.times[0] > WINDOW_S:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(now - self.times[0], 1e-6)


class _StampGaps:
    """Frames that never arrived on one input, read from its header stamps: the camera's period is
    a low percentile of the recent stamp steps (robust to heavy loss, where most steps span
    several periods); a step of k periods means k - 1 frames went missing between the camera and
    this subscription (or at the camera). Counts per arrival time, for a sliding window."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.steps: collections.deque = collections.deque(maxlen=64)
        self.events: collections.deque = collections.deque()  # (arrival time, frames missing before it)
        self.missing_total = 0
        self._period: float | None = None
        self._since_period = 0

    def period_ns(self) -> float | None:
        if len(self.steps) < 3:
            return None
        if self._period is None or self._since_period >= 16:  # a percentile per message is wasted CPU
            ordered = sorted(self.steps)
            self._period, self._since_period = float(ordered[len(ordered) // 10]), 0
        return self._period

    def add(self, now: float, stamp: int) -> None:
        missing = 0
        if self.last is not None and stamp > self.last:
            step = stamp - self.last
            period = self.period_ns()
            self.steps.append(step)
            self._since_period += 1
            if period and step > 1.5 * period:
                missing = int(round(step / period)) - 1
                self.missing_total += missing
        elif self.last is not None and stamp < self.last:  # time went back (bag restarted): start over
            self.steps.clear()
            self._period = None
        self.last = stamp
        self.events.append((now, missing))

    def window(self, now: float) -> dict:
        while self.events and now - self.events[0][0] > WINDOW_S:
            self.events.popleft()
        received = len(self.events)
        missing = sum(m for _, m in self.events)
        period = self.period_ns()
        span = now - self.events[0][0] if received else 0.0
        return {"received": received, "missing": missing, "missing_total": self.missing_total,
                "expected_hz": 1e9 / period if period else 0.0,
                "received_hz": (received - 1) / span if received > 1 and span > 0 else 0.0}


class PipelineStats:
    """Thread-safe counters the node's callbacks and worker update and the diagnostics read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.received: dict[str, int] = collections.defaultdict(int)
            self.synchronized = 0
            self.processed = 0
            self.dropped_busy = 0  # replaced while the estimator was busy (newest frame wins)
            self.bad_frames = 0
            self.estimator_errors = 0
            self.warnings: dict[str, int] = collections.defaultdict(int)
            self.last_error = ""
            self.last_error_time = -float("inf")
            self.last_input_time = -float("inf")
            self.started = time.monotonic()
            self.last_sync_time = -float("inf")
            self.input_times: dict[str, float] = {}
            self.input_stamps: dict[str, int] = {}
            self._gaps: dict[str, _StampGaps] = {}
            self.zero_stamps = 0
            self.zero_stamp_time = -float("inf")
            self.zero_stamp_message = ""
            self.objects_found: dict[str, float] = {}
            self.rgb_only_frames = 0  # processed without usable depth (frame or an object's box)
            self.rgb_only_objects: list[str] = []  # of the last processed frame
            self.downscaled = 0  # frames above max_pixels, downscaled
            self._in, self._out = _Rate(), _Rate()
            self._latency: dict[str, collections.deque] = {}

    def input(self, topic: str, stamp_ns: int | None = None) -> None:
        with self._lock:
            self.received[topic] += 1
            self.last_input_time = self.input_times[topic] = time.monotonic()
            if stamp_ns is not None:
                self.input_stamps[topic] = int(stamp_ns)
                if stamp_ns > 0:
                    self._gaps.setdefault(topic, _StampGaps()).add(self.input_times[topic], int(stamp_ns))

    def zero_stamp(self, message: str) -> None:
        """A message stamped 0 was dropped at the input."""
        with self._lock:
            self.zero_stamps += 1
            self.zero_stamp_time = time.monotonic()
            self.zero_stamp_message = message

    def synced(self, replaced_pending: bool) -> None:
        with self._lock:
            self.synchronized += 1
            self.dropped_busy += int(replaced_pending)
            self.last_sync_time = time.monotonic()
            self._in.tick(self.last_sync_time)

    def error(self, kind: str, message: str) -> None:
        """Count one problem under ``warnings/<kind>``: an ErrorKind value for a frame the node
        could not use, else the node's own ("estimator", "stamps", "tf", "rgb_only", "internal")."""
        with self._lock:
            self.warnings[kind] += 1
            if kind == "estimator":
                self.estimator_errors += 1
            elif kind in BAD_FRAME_KINDS:
                self.bad_frames += 1
            self.last_error = message
            self.last_error_time = time.monotonic()

    def downscaled_frame(self) -> None:
        with self._lock:
            self.downscaled += 1

    def done(self, stage_ms: Mapping[str, float], found: Mapping[str, float], *, rgb_only: bool = False,
             rgb_only_objects: Sequence[str] = ()) -> None:
        with self._lock:
            self.processed += 1
            self.rgb_only_frames += int(rgb_only)
            self.rgb_only_objects = list(rgb_only_objects)
            self._out.tick(time.monotonic())
            self.objects_found = dict(found)
            for stage, ms in stage_ms.items():
                self._latency.setdefault(stage, collections.deque(maxlen=LATENCY_SAMPLES)).append(float(ms))

    def snapshot(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        with self._lock:
            return {
                "active_s": now - self.started, "sync_age_s": now - self.last_sync_time,
                "input_ages_s": {k: now - v for k, v in self.input_times.items()},
                "input_stamps": dict(self.input_stamps), "zero_stamps": self.zero_stamps,
                "zero_stamp_age_s": now - self.zero_stamp_time, "zero_stamp_message": self.zero_stamp_message,
                "received": dict(self.received), "synchronized": self.synchronized, "processed": self.processed,
                "dropped_busy": self.dropped_busy, "bad_frames": self.bad_frames,
                "estimator_errors": self.estimator_errors, "warnings": dict(self.warnings),
                "last_error": self.last_error, "last_error_age_s": now - self.last_error_time,
                "input_age_s": now - self.last_input_time,
                "input_rate_hz": self._in.hz(now), "output_rate_hz": self._out.hz(now),
                "latency_ms": {k: sum(v) / len(v) for k, v in self._latency.items() if v},
                "objects_found": dict(self.objects_found), "rgb_only_frames": self.rgb_only_frames,
                "rgb_only_objects": list(self.rgb_only_objects), "downscaled": self.downscaled,
                "streams": {k: g.window(now) for k, g in self._gaps.items()},
            }


def _stream_problem(snap: dict, inputs: Sequence[str], slop: float | None, topics: Mapping[str, str]):
    """(level, message) for inputs that stopped, never came, or never pair; None when they flow."""
    def shown(name):
        return topics.get(name, name)

    ages = snap.get("input_ages_s", {})
    if snap["input_age_s"] > STALE_S:
        if not ages:
            return DiagnosticStatus.WARN, (f"no input since activation ({snap.get('active_s', 0.0):.0f} s): check "
                                           f"that the camera runs and the remapping of "
                                           f"{', '.join(shown(n) for n in inputs) or 'image, depth, camera_info'}")
        return DiagnosticStatus.ERROR, (f"no frame for {snap['input_age_s']:.1f} s (stream stopped): check the "
                                        f"camera driver and its connection")
    missing = [n for n in inputs if n not in ages or ages[n] > STALE_S]
    if missing and snap.get("active_s", 0.0) > STALE_S:
        arriving = [n for n in inputs if n not in missing]
        return DiagnosticStatus.ERROR, (f"nothing on {', '.join(shown(n) for n in missing)} for over {STALE_S:.0f} s "
                                        f"while {', '.join(shown(n) for n in arriving)} arrive: check that topic's "
                                        f"remapping (and that the driver publishes it, e.g. align_depth.enable:=true)")
    never = snap["synchronized"] == 0 and snap.get("active_s", 0.0) > STALE_S
    stopped = snap["synchronized"] > 0 and snap.get("sync_age_s", 0.0) > STALE_S
    if inputs and (never or stopped):
        stamps = snap.get("input_stamps", {})
        known = {n: stamps[n] for n in inputs if n in stamps}
        spread = (max(known.values()) - min(known.values())) / 1e9 if len(known) > 1 else 0.0
        newest = ", ".join(f"{shown(n)} {v / 1e9:.3f}" for n, v in known.items())
        what = "never pair" if never else f"stopped pairing {snap['sync_age_s']:.1f} s ago"
        return DiagnosticStatus.ERROR, (f"the inputs arrive but {what}: newest stamps {newest} s ({spread:.3f} s "
                                        f"apart{f', slop {slop:g} s' if slop is not None else ''}); the colour, depth "
                                        f"and camera_info of one frame must carry the same stamp (depth registered "
                                        f"to colour, one clock), or raise slop")
    return None


def _missing_frames(snap: dict, inputs: Sequence[str], topics: Mapping[str, str]):
    """A warning when an input's stamps show frames that never arrived in the last window."""
    lines = []
    for name in inputs:
        w = snap.get("streams", {}).get(name)
        if not w or w["missing"] < 2:
            continue
        expected = w["received"] + w["missing"]
        if w["missing"] <= MISSING_TOLERANCE * expected:
            continue
        lines.append(f"{topics.get(name, name)}: {w['missing']} of {expected} frames missing in the last "
                     f"{WINDOW_S:.0f} s (received {w['received_hz']:.1f} Hz, the stamps say {w['expected_hz']:.1f} Hz)")
    if not lines:
        return None
    return ("frames go missing before the node: " + "; ".join(lines) + ". Between processes on one machine, large "
            "images need the shipped DDS profile (FASTRTPS_DEFAULT_PROFILES_FILE=<share>/sixd_pose_ros/config/"
            "fastdds_large_images.xml for the camera driver and the node; README 'Transport'); else the camera "
            "itself drops frames (USB bandwidth, CPU)")


def diagnostic_array(snap: dict, *, name: str, hardware_id: str, stamp, extra: Mapping[str, object] = (),
                     warn_window_s: float = 5.0, active: bool = True, inputs: Sequence[str] = (),
                     slop: float | None = None, topics: Mapping[str, str] = {}) -> DiagnosticArray:
    """One DiagnosticStatus summarizing a PipelineStats snapshot (plus ``extra`` key/values).
    ``inputs``: the input names the node subscribed to (image, camera_info, depth), ``topics``
    their resolved topic names for the messages, ``slop`` the synchronizer's."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    problem = _stream_problem(snap, inputs, slop, topics) if active else None
    if not active:
        level, message = DiagnosticStatus.WARN, "inactive (configure + activate to process frames)"
    elif snap.get("zero_stamp_age_s", float("inf")) < warn_window_s:
        # Frames stamped 0 are dropped: an error while nothing else gets through, else a warning.
        level = DiagnosticStatus.ERROR if problem is not None or snap["synchronized"] == 0 else DiagnosticStatus.WARN
        message = snap["zero_stamp_message"]
    elif problem is not None:
        level, message = problem
    elif _missing_frames(snap, inputs, topics) is not None:
        level, message = DiagnosticStatus.WARN, _missing_frames(snap, inputs, topics)
    elif snap["last_error_age_s"] < warn_window_s:
        level, message = DiagnosticStatus.WARN, snap["last_error"]
    else:
        found = snap["objects_found"]
        level = DiagnosticStatus.OK
        rgb_only = set(snap.get("rgb_only_objects", ()))
        message = (f"{snap['output_rate_hz']:.1f} Hz, found " + (", ".join(
            f"{n} (RGB-only)" if n in rgb_only else n for n in sorted(found)) if found else "nothing"))
        if snap["synchronized"] == 0:
            message = "waiting for the first synchronized frame"
    status.level, status.message = level, message
    values = [
        ("input_rate_hz", f"{snap['input_rate_hz']:.2f}"), ("output_rate_hz", f"{snap['output_rate_hz']:.2f}"),
        ("frames_synchronized", snap["synchronized"]), ("frames_processed", snap["processed"]),
        ("frames_dropped", snap["dropped_busy"]), ("bad_frames", snap["bad_frames"]),
        ("estimator_errors", snap["estimator_errors"]), ("last_error", snap["last_error"]),
        ("zero_stamps", snap.get("zero_stamps", 0)), ("frames_rgb_only", snap.get("rgb_only_frames", 0)),
        ("frames_downscaled", snap.get("downscaled", 0)),
    ]
    values += [(f"received/{k}", v) for k, v in sorted(snap["received"].items())]
    for k, w in sorted(snap.get("streams", {}).items()):
        values += [(f"received_rate_hz/{k}", f"{w['received_hz']:.2f}"),
                   (f"expected_rate_hz/{k}", f"{w['expected_hz']:.2f}"), (f"missing/{k}", w["missing_total"])]
    values += [(f"input_age_s/{k}", f"{v:.2f}") for k, v in sorted(snap.get("input_ages_s", {}).items())]
    values += [(f"warnings/{k}", v) for k, v in sorted(snap["warnings"].items())]
    values += [(f"latency_ms/{k}", f"{v:.1f}") for k, v in sorted(snap["latency_ms"].items())]
    values += [(f"score/{k}", f"{v:.3f}") for k, v in sorted(snap["objects_found"].items())]
    values += [(f"depth/{k}", "rgb_only" if k in snap.get("rgb_only_objects", ()) else "rgbd")
               for k in sorted(snap["objects_found"])]
    values += list(dict(extra).items())
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg
