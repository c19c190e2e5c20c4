"""Approximate-time synchronization of colour, camera_info and (optionally) depth by header stamp.

Two layers:

- :class:`ApproximateTimeSynchronizer`, our matcher with message_filters' semantics: one
  bounded queue per input keyed by stamp; each arriving message is matched against the other
  queues; the set of one message per input whose stamps span at most ``slop`` (closest first)
  is emitted and removed. Unlike message_filters' Python version it also drops every queued
  message at or before an emitted stamp: those can only make sets older than the one already
  emitted, and a pose node wants the newest frame, never a late older one.
- :class:`FrameSynchronizer`, what the node uses: it guards stamp order per input (a message
  at or before the last emitted stamp of its input is out of order and dropped; a jump back by
  more than ``jump_back_s``, a bag restarted or sim time reset, clears the state and starts
  over) and feeds message_filters.ApproximateTimeSynchronizer when it is importable, our
  matcher otherwise.

Depth is optional in the sense that the node synchronizes two inputs (colour, camera_info)
when ``use_depth`` is false and never waits for depth; with ``use_depth`` true depth is one
of the inputs and a set is only complete with it (the diagnostics then show which input is
silent). No ROS import here: stamps are read from ``msg.header.stamp`` (sec, nanosec).
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["stamp_ns", "ApproximateTimeSynchronizer", "FrameSynchronizer", "SyncStats"]

NS = 1_000_000_000


def stamp_ns(msg) -> int:
    """Header stamp of a message in nanoseconds."""
    st = msg.header.stamp
    return int(st.sec) * NS + int(st.nanosec)


class ApproximateTimeSynchronizer:
    """Our approximate-time matcher over ``n_inputs`` inputs (see the module docstring).

    ``callback(*msgs)`` receives one message per input, in input order, called outside the lock.
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float, callback: Callable | None = None) -> None:
        if n_inputs < 1 or queue_size < 1 or slop < 0:
            raise ValueError(f"need n_inputs >= 1, queue_size >= 1, slop >= 0 (got {n_inputs}, {queue_size}, {slop})")
        self.n_inputs, self.queue_size = n_inputs, int(queue_size)
        self.slop_ns = int(round(slop * NS))
        self.callbacks: list[Callable] = [callback] if callback else []
        self.queues: list[dict[int, object]] = [{} for _ in range(n_inputs)]
        self.overflow = 0  # messages pushed out of a full queue
        self.superseded = 0  # queued messages dropped because a newer set was emitted
        self._lock = threading.Lock()

    def registerCallback(self, callback: Callable) -> None:  # noqa: N802 - message_filters' name
        self.callbacks.append(callback)

    def reset(self) -> None:
        with self._lock:
            for q in self.queues:
                q.clear()

    def add(self, index: int, msg, stamp: int | None = None):
        """Queue ``msg`` on input ``index``; returns the emitted set (a tuple) or None."""
        stamp = stamp_ns(msg) if stamp is None else int(stamp)
        with self._lock:
            queue = self.queues[index]
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.overflow += 1
            if stamp not in queue:  # older than everything in a full queue: it was the one dropped
                return None
            chosen = self._match(index, stamp)
            if chosen is None:
                return None
            out = tuple(self.queues[i].pop(s) for i, s in enumerate(chosen))
            for i, s in enumerate(chosen):
                queue_i = self.queues[i]
                older = [k for k in queue_i if k <= s]
                for k in older:
                    del queue_i[k]
                self.superseded += len(older)
        for cb in self.callbacks:
            cb(*out)
        return out

    def _match(self, index: int, stamp: int):
        candidates = []
        for i, queue in enumerate(self.queues):
            if i == index:
                candidates.append([stamp])
                continue
            near = sorted((s for s in queue if abs(s - stamp) <= self.slop_ns), key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        best, best_spread = None, None
        for combo in itertools.product(*candidates):
            spread = max(combo) - min(combo)
            if spread <= self.slop_ns and (best_spread is None or spread < best_spread):
                best, best_spread = combo, spread
        return best


@dataclass
class SyncStats:
    received: list = field(default_factory=list)  # per input
    emitted: int = 0
    out_of_order: int = 0
    time_jumps: int = 0


def _message_filters_backend(n_inputs: int, queue_size: int, slop: float):
    """message_filters.ApproximateTimeSynchronizer fed through SimpleFilters, or None."""
    try:
        import message_filters
    except Exception:  # noqa: BLE001 - not installed (pip environment)
        return None
    inputs = [message_filters.SimpleFilter() for _ in range(n_inputs)]
    sync = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop)
    return inputs, sync


class FrameSynchronizer:
    """Stamp-order guard + approximate matcher; what the node feeds its subscriptions into.

    Args:
        names: input names, in the order the callback receives them (e.g. image, camera_info, depth).
        queue_size, slop: as message_filters' (slop in seconds).
        callback: called with one message per input.
        jump_back_s: a stamp this far before the last emitted one is a time jump (bag loop,
            sim time reset): the state is cleared instead of dropping everything from then on.
        use_message_filters: use message_filters when importable (False forces ours).
    """

    def __init__(self, names: Sequence[str], queue_size: int, slop: float, callback: Callable,
                 jump_back_s: float = 1.0, use_message_filters: bool = True) -> None:
        self.names = list(names)
        self.queue_size, self.slop = int(queue_size), float(slop)
        self.jump_back_ns = int(jump_back_s * NS)
        self._callback = callback
        self.stats = SyncStats(received=[0] * len(self.names))
        self._last = [None] * len(self.names)  # last emitted stamp per input
        self._lock = threading.Lock()
        backend = _message_filters_backend(len(self.names), self.queue_size, self.slop) if use_message_filters \
            else None
        if backend is not None:
            self._inputs, self._sync = backend
            self.backend = "message_filters"
        else:
            self._inputs = None
            self._sync = ApproximateTimeSynchronizer(len(self.names), self.queue_size, self.slop)
            self.backend = "own"
        self._sync.registerCallback(self._emitted)

    def add(self, index: int, msg) -> str:
        """Feed one message; returns 'ok', 'out_of_order' (dropped) or 'time_jump' (state cleared,
        message kept)."""
        stamp = stamp_ns(msg)
        result = "ok"
        with self._lock:
            self.stats.received[index] += 1
            last = self._last[index]
            if last is not None and stamp <= last:
                if last - stamp > self.jump_back_ns:
                    self.stats.time_jumps += 1
                    self._reset_locked()
                    result = "time_jump"
                else:
                    self.stats.out_of_order += 1
                    return "out_of_order"
        if self._inputs is not None:
            self._inputs[index].signalMessage(msg)
        else:
            self._sync.add(index, msg, stamp)
        return result

    def set_slop(self, slop: float) -> None:
        """A new slop (s) for the next match (live parameter change)."""
        with self._lock:
            self.slop = float(slop)
            if self._inputs is None:
                self._sync.slop_ns = int(round(self.slop * NS))
            else:  # message_filters keeps it as a Duration
                from rclpy.duration import Duration

                self._sync.slop = Duration(seconds=self.slop)

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        self._last = [None] * len(self.names)
        if self._inputs is None:
            self._sync.reset()
        else:
            for q in getattr(self._sync, "queues", []):
                q.clear()

    def _emitted(self, *msgs) -> None:
        with self._lock:
            self._last = [stamp_ns(m) for m in msgs]
            self.stats.emitted += 1
        self._callback(*msgs)

    @property
    def dropped(self) -> int:
        """Messages that never made it into a set because of queue overflow or a newer set (ours only)."""
        if self._inputs is None:
            return self._sync.overflow + self._sync.superseded
        return 0
