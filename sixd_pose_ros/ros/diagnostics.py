"""Pipeline statistics (rates, per-stage latency, drops, last error) and their DiagnosticArray."""
from __future__ import annotations

import collections
import threading
import time
from typing import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["PipelineStats", "diagnostic_array"]

WINDOW_S = 5.0  # rates are averaged over this many seconds
LATENCY_SAMPLES = 20


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
            self.objects_found: dict[str, float] = {}
            self._in, self._out = _Rate(), _Rate()
            self._latency: dict[str, collections.deque] = {}

    def input(self, topic: str) -> None:
        with self._lock:
            self.received[topic] += 1
            self.last_input_time = time.monotonic()

    def synced(self, replaced_pending: bool) -> None:
        with self._lock:
            self.synchronized += 1
            self.dropped_busy += int(replaced_pending)
            self._in.tick(time.monotonic())

    def error(self, kind: str, message: str) -> None:
        with self._lock:
            self.warnings[kind] += 1
            if kind == "estimator":
                self.estimator_errors += 1
            elif kind in ("frame", "camera_info", "encoding", "depth"):
                self.bad_frames += 1
            self.last_error = message
            self.last_error_time = time.monotonic()

    def done(self, stage_ms: Mapping[str, float], found: Mapping[str, float]) -> None:
        with self._lock:
            self.processed += 1
            self._out.tick(time.monotonic())
            self.objects_found = dict(found)
            for stage, ms in stage_ms.items():
                self._latency.setdefault(stage, collections.deque(maxlen=LATENCY_SAMPLES)).append(float(ms))

    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._lock:
            return {
                "received": dict(self.received), "synchronized": self.synchronized, "processed": self.processed,
                "dropped_busy": self.dropped_busy, "bad_frames": self.bad_frames,
                "estimator_errors": self.estimator_errors, "warnings": dict(self.warnings),
                "last_error": self.last_error, "last_error_age_s": now - self.last_error_time,
                "input_age_s": now - self.last_input_time,
                "input_rate_hz": self._in.hz(now), "output_rate_hz": self._out.hz(now),
                "latency_ms": {k: sum(v) / len(v) for k, v in self._latency.items() if v},
                "objects_found": dict(self.objects_found),
            }


def diagnostic_array(snap: dict, *, name: str, hardware_id: str, stamp, extra: Mapping[str, object] = (),
                     warn_window_s: float = 5.0, active: bool = True) -> DiagnosticArray:
    """One DiagnosticStatus summarizing a PipelineStats snapshot (plus ``extra`` key/values)."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if not active:
        level, message = DiagnosticStatus.WARN, "inactive (configure + activate to process frames)"
    elif snap["last_error_age_s"] < warn_window_s:
        level, message = DiagnosticStatus.WARN, snap["last_error"]
    elif snap["input_age_s"] > warn_window_s:
        level, message = DiagnosticStatus.WARN, "no input: check the image / depth / camera_info topics"
    elif snap["synchronized"] == 0:
        level, message = DiagnosticStatus.WARN, ("inputs arrive but never synchronize: check that every topic is "
                                                 "published with matching stamps (or raise slop)")
    else:
        found = snap["objects_found"]
        level = DiagnosticStatus.OK
        message = (f"{snap['output_rate_hz']:.1f} Hz, found " + (", ".join(sorted(found)) if found else "nothing"))
    status.level, status.message = level, message
    values = [
        ("input_rate_hz", f"{snap['input_rate_hz']:.2f}"), ("output_rate_hz", f"{snap['output_rate_hz']:.2f}"),
        ("frames_synchronized", snap["synchronized"]), ("frames_processed", snap["processed"]),
        ("frames_dropped", snap["dropped_busy"]), ("bad_frames", snap["bad_frames"]),
        ("estimator_errors", snap["estimator_errors"]), ("last_error", snap["last_error"]),
    ]
    values += [(f"received/{k}", v) for k, v in sorted(snap["received"].items())]
    values += [(f"warnings/{k}", v) for k, v in sorted(snap["warnings"].items())]
    values += [(f"latency_ms/{k}", f"{v:.1f}") for k, v in sorted(snap["latency_ms"].items())]
    values += [(f"score/{k}", f"{v:.3f}") for k, v in sorted(snap["objects_found"].items())]
    values += list(dict(extra).items())
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg
