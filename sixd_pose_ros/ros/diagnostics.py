"""Pipeline statistics (rates, per-stage latency, drops, last error) and their DiagnosticArray.

The level says what a robot operator needs to know, in this order: inactive (WARN); a stream
that stopped (ERROR: no frame for STALE_S) or never started (WARN); an input that never arrives
while the others do (ERROR); colour and depth that arrive but never pair, or stopped pairing
(ERROR, with the stamps that do not meet); a recent bad-input warning, e.g. frames stamped 0
(WARN); else OK with the rate and what was found.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["PipelineStats", "diagnostic_array"]

WINDOW_S = 5.0  # rates are averaged over this many seconds
STALE_S = 2.0  # no frame (or no synchronized set) for this long is an error
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
            self.started = time.monotonic()
            self.last_sync_time = -float("inf")
            self.input_times: dict[str, float] = {}
            self.input_stamps: dict[str, int] = {}
            self.zero_stamps = 0
            self.zero_stamp_time = -float("inf")
            self.zero_stamp_message = ""
            self.objects_found: dict[str, float] = {}
            self._in, self._out = _Rate(), _Rate()
            self._latency: dict[str, collections.deque] = {}

    def input(self, topic: str, stamp_ns: int | None = None) -> None:
        with self._lock:
            self.received[topic] += 1
            self.last_input_time = self.input_times[topic] = time.monotonic()
            if stamp_ns is not None:
                self.input_stamps[topic] = int(stamp_ns)

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
                "objects_found": dict(self.objects_found),
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
    elif snap["last_error_age_s"] < warn_window_s:
        level, message = DiagnosticStatus.WARN, snap["last_error"]
    else:
        found = snap["objects_found"]
        level = DiagnosticStatus.OK
        message = (f"{snap['output_rate_hz']:.1f} Hz, found " + (", ".join(sorted(found)) if found else "nothing"))
        if snap["synchronized"] == 0:
            message = "waiting for the first synchronized frame"
    status.level, status.message = level, message
    values = [
        ("input_rate_hz", f"{snap['input_rate_hz']:.2f}"), ("output_rate_hz", f"{snap['output_rate_hz']:.2f}"),
        ("frames_synchronized", snap["synchronized"]), ("frames_processed", snap["processed"]),
        ("frames_dropped", snap["dropped_busy"]), ("bad_frames", snap["bad_frames"]),
        ("estimator_errors", snap["estimator_errors"]), ("last_error", snap["last_error"]),
        ("zero_stamps", snap.get("zero_stamps", 0)),
    ]
    values += [(f"received/{k}", v) for k, v in sorted(snap["received"].items())]
    values += [(f"input_age_s/{k}", f"{v:.2f}") for k, v in sorted(snap.get("input_ages_s", {}).items())]
    values += [(f"warnings/{k}", v) for k, v in sorted(snap["warnings"].items())]
    values += [(f"latency_ms/{k}", f"{v:.1f}") for k, v in sorted(snap["latency_ms"].items())]
    values += [(f"score/{k}", f"{v:.3f}") for k, v in sorted(snap["objects_found"].items())]
    values += list(dict(extra).items())
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg
