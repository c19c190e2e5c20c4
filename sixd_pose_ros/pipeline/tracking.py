"""Tracking: after a confident pose, later frames start from the previous pose.

Plain Python state, one track per object name, no ROS and no networks: the estimator asks
:meth:`Tracker.wants_detection` before each object, runs either full detection or a tracking
step from :meth:`Tracker.track`'s previous pose, and reports the outcome with
:meth:`Tracker.update`. The state machine per object:

- **no track** -> detection. A detected pose starts a track only when it is confident: its score
  is at least ``min_start_score`` *and* its health (how well the model explains the observed
  depth, see ``pipeline.depth_alignment.depth_agreement``) is at least ``min_start_health``
  (a little above ``min_health``: hysteresis, so that a pose barely explained does not start a
  track it loses at once). A pose without a health measure (no depth) never starts one.
- **tracking** -> a tracking step from the last healthy pose. Health >= ``min_health``: the
  track moves to the new pose. Below it, :meth:`Tracker.step` detects in the same frame (an
  answer for every frame the object is seen); :meth:`Tracker.update` alone, given a lost
  frame, keeps the last healthy pose and ends the track after ``max_lost_frames`` of them.
- A stamp more than ``max_frame_gap_s`` after the track's last frame (a bag jump, a stalled
  camera) or before it (a bag restarted, time went back), or :meth:`Tracker.reset`, also ends
  it.

Thread-safe: the node's ``~/reset`` service calls :meth:`reset` while the worker thread is in the
middle of a frame. An update computed from state older than the last reset (the caller passes
the ``epoch`` it read before the frame) is ignored, so a reset always means the next frame
detects.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TrackerConfig", "ObjectTrack", "Tracker"]


@dataclass
class TrackerConfig:
    enabled: bool = True
    # Health (0..1, the fraction of the model's visible surface the depth confirms) below this
    # makes a tracked frame lost.
    min_health: float = 0.5
    # A detected pose starts a track only with at least this health (never below min_health) ...
    min_start_health: float = 0.6
    # ... and this score (detector x codebook, 0..1). 0: the depth is the evidence that counts;
    # the shipped detector's scores are not calibrated (about 0.3 on the demo, right or wrong),
    # and a pose reaches the tracker only when it passed the estimator's own min score.
    min_start_score: float = 0.0
    # This many consecutive lost frames end the track: the next frame runs detection.
    max_lost_frames: int = 2
    # Frames further apart than this (seconds) end the track (a jump in a bag, a stalled camera).
    max_frame_gap_s: float = 0.5
    # Depth agreement tolerance for health: max(depth_tol_m, depth_tol_fraction * distance).
    # Tight on purpose (see pipeline/depth_alignment.py): a looser one lets the table explain a
    # wrong pose.
    depth_tol_m: float = 0.02
    depth_tol_fraction: float = 0.02

    @property
    def depth_tolerance(self) -> tuple[float, float]:
        """``(depth_tol_m, depth_tol_fraction)``: what depth alignment's agreement takes, so that
        ranking, final alignment and tracking share one notion of health."""
        return self.depth_tol_m, self.depth_tol_fraction

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_health <= 1.0:
            raise ValueError(f"min_health {self.min_health} must be in [0, 1]")
        if not 0.0 <= self.min_start_health <= 1.0:
            raise ValueError(f"min_start_health {self.min_start_health} must be in [0, 1]")
        if not 0.0 <= self.min_start_score <= 1.0:
            raise ValueError(f"min_start_score {self.min_start_score} must be in [0, 1]")
        if int(self.max_lost_frames) != self.max_lost_frames or self.max_lost_frames < 1:
            raise ValueError(f"max_lost_frames {self.max_lost_frames} must be an integer >= 1")
        if not self.max_frame_gap_s > 0:
            raise ValueError(f"max_frame_gap_s {self.max_frame_gap_s} must be > 0")


@dataclass
class ObjectTrack:
    """One object's track: its last healthy pose and how the recent frames went."""

    name: str
    R: np.ndarray  # (3, 3) object to camera, of the last healthy frame
    t: np.ndarray  # (3,) meters
    stamp_ns: int  # of the last frame that updated the track (healthy or lost)
    health: float  # of the last frame, 0..1
    score: float  # the detection score that started the track
    lost: int = 0  # consecutive lost frames
    frames: int = 1  # frames in the track, the detection that started it included


class Tracker:
    """Per-object tracks (see the module docstring for the state machine)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self._tracks: dict[str, ObjectTrack] = {}
        self._lock = threading.Lock()
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """Changes at every reset; read it before a frame and pass it to update()."""
        return self._epoch

    def track(self, name: str) -> ObjectTrack | None:
        """The object's current track (a copy is not made: do not modify it), or None."""
        with self._lock:
            return self._tracks.get(name)

    def tracking(self) -> list[str]:
        """Names of the objects being tracked."""
        with self._lock:
            return sorted(self._tracks)

    def wants_detection(self, name: str, stamp_ns: int) -> bool:
        """True when the object's next frame must run full detection; ends a track whose last
        frame is too far from ``stamp_ns`` in time (either way)."""
        if not self.config.enabled:
            return True
        with self._lock:
            track = self._tracks.get(name)
            if track is None:
                return True
            gap = int(stamp_ns) - track.stamp_ns
            if gap < 0 or gap > self.config.max_frame_gap_s * 1e9:
                del self._tracks[name]
                return True
            return False

    def update(self, name: str, pose, health: float | None, stamp_ns: int, *, epoch: int | None = None) -> None:
        """Report one frame's outcome for one object.

        Args:
            pose: the ObjectPose found (``pose.tracked`` says whether a tracking step or a
                detection made it), or None when the object was not found.
            health: 0..1, how well the model explains the observation at ``pose``; None when
                it cannot be measured (no depth): such a pose never starts or continues a track.
            epoch: the ``epoch`` read before the frame; a reset since then discards the update.
        """
        cfg = self.config
        if not cfg.enabled:
            return
        healthy = pose is not None and health is not None and health >= cfg.min_health
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return
            track = self._tracks.get(name)
            if pose is not None and not getattr(pose, "tracked", False):
                # A detection: it (re)starts the track when confident, and ends any other one.
                self._tracks.pop(name, None)
                if healthy and health >= cfg.min_start_health and pose.score >= cfg.min_start_score:
                    self._tracks[name] = ObjectTrack(name, np.array(pose.R, dtype=np.float64),
                                                     np.array(pose.t, dtype=np.float64), int(stamp_ns),
                                                     float(health), float(pose.score))
                return
            if track is None:
                return
            track.stamp_ns = int(stamp_ns)
            track.health = float(health) if health is not None else 0.0
            if healthy:
                track.R = np.array(pose.R, dtype=np.float64)
                track.t = np.array(pose.t, dtype=np.float64)
                track.lost = 0
                track.frames += 1
                return
            track.lost += 1
            if track.lost >= cfg.max_lost_frames:
                del self._tracks[name]

    def step(self, name: str, stamp_ns: int, epoch: int, trackable: bool,
             track_step: Callable[[ObjectTrack], Any], detect_step: Callable[[], Any]):
        """One object's frame, the same way in every estimator: a tracking step from the track's
        pose when there is a track and ``trackable`` (depth and a surface to measure health
        with), else detection; a tracking step below ``min_health`` is followed by a detection
        in the same frame. The outcome is reported. Returns the pose to publish, or None (not
        found). Without ``trackable`` a running track ends: no health, no track."""
        if trackable and not self.wants_detection(name, stamp_ns):
            pose = track_step(self.track(name))
            if pose.health >= self.config.min_health:
                self.update(name, pose, pose.health, stamp_ns, epoch=epoch)
                return pose
            # Lost this frame: detect in the same frame rather than answer nothing (a camera that
            # moves faster than the alignment follows lost every tracked frame of the demo, 8 of
            # 12); the detection restarts the track, or ends it when the object is not found.
        elif not trackable and self.track(name) is not None:
            self.reset(name)
        pose = detect_step()
        self.update(name, pose, pose.health if pose is not None else None, stamp_ns, epoch=epoch)
        return pose

    def withdraw(self, name: str, *, epoch: int | None = None) -> None:
        """Take back this frame's detection of ``name``: a later stage (the exclusion of poses
        that share a place) dropped it after ``update`` may have started a track from it."""
        with self._lock:
            if epoch is None or epoch == self._epoch:
                self._tracks.pop(name, None)

    def reset(self, name: str | None = None) -> None:
        """End one object's track (or all of them): its next frame runs detection."""
        with self._lock:
            self._epoch += 1
            if name is None:
                self._tracks.clear()
            else:
                self._tracks.pop(name, None)
