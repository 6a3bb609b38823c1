"""The master clock: media time now, from the audio device when there is one, else the wall.

A clock is (pts, time it was read, paused, epoch), like ffplay's Clock. The audio callback
calls `sync(pts_heard_now)` on every buffer; between callbacks `now()` extrapolates with the
monotonic clock. Without audio the player calls `sync` itself at start, seek and unpause, and the
extrapolation *is* the wall clock. One lock protects all fields.
"""

from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self):
        self._lock = threading.Lock()
        self._pts = 0.0
        self._t = time.monotonic()
        self._paused = True
        self.epoch = 0

    def now(self) -> float:
        with self._lock:
            if self._paused:
                return self._pts
            return self._pts + (time.monotonic() - self._t)

    def sync(self, pts: float, at: float | None = None, epoch: int | None = None) -> None:
        """Media time `pts` is being heard/shown at monotonic time `at` (default: now).
        Ignored when `epoch` is given and stale (an audio buffer from before a seek)."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            self._pts = pts
            self._t = time.monotonic() if at is None else at

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            if paused and not self._paused:
                self._pts += time.monotonic() - self._t
            self._t = time.monotonic()
            self._paused = paused

    @property
    def paused(self) -> bool:
        return self._paused

    def reset(self, pts: float, epoch: int) -> None:
        """After a seek: new epoch, time jumps to pts."""
        with self._lock:
            self.epoch = epoch
            self._pts = pts
            self._t = time.monotonic()
