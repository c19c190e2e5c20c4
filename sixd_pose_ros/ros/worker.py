"""One background thread that processes the newest submitted item: a slow estimator never builds
a queue, and callbacks never block.

``submit`` puts an item in a single pending slot; an item still pending when a newer one
arrives is replaced and counted as dropped. The thread takes the pending item, waits if
``max_rate_hz`` says it is too early (newer items may replace it meanwhile), and calls
``process(item)``; an exception there is handed to ``on_error`` and the loop goes on.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["LatestWorker"]


class LatestWorker:
    def __init__(self, process: Callable[[object], None], *, max_rate_hz: float = 0.0,
                 on_error: Callable[[BaseException], None] | None = None, name: str = "sixd_pose_worker") -> None:
        self._process, self._on_error = process, on_error
        self.min_interval = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
        self._cond = threading.Condition()
        self._pending = None
        self._has_pending = False
        self._stop = False
        self._busy = False
        self._last_start = -float("inf")
        self.submitted = self.dropped = self.processed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "LatestWorker":
        self._thread.start()
        return self

    def submit(self, item) -> bool:
        """Offer an item; True when it replaced a pending one (that one is dropped)."""
        with self._cond:
            replaced = self._has_pending
            self._pending, self._has_pending = item, True
            self.submitted += 1
            if replaced:
                self.dropped += 1
            self._cond.notify()
        return replaced

    def clear(self) -> None:
        """Forget the pending item (not counted as dropped)."""
        with self._cond:
            self._pending, self._has_pending = None, False

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def has_pending(self) -> bool:
        """An item is queued and not started yet."""
        return self._has_pending

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread after the item in progress; True when it ended within ``timeout``."""
        with self._cond:
            self._stop = True
            self._pending, self._has_pending = None, False
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    if self._has_pending:
                        wait = self._last_start + self.min_interval - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stop:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
                self._last_start = time.monotonic()
            try:
                self._process(item)
            except BaseException as exc:  # noqa: BLE001 - the loop must survive anything
                if self._on_error is not None:
                    try:
                        self._on_error(exc)
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                item = None  # a processed frame (a 4K one is 25 MB) is not kept until the next one
                with self._cond:
                    self._busy = False
                    self.processed += 1
