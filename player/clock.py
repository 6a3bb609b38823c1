"""The master clock: media time now, from the audio device when there is one, else the wall.

A clock is (pts, time it was read, paused, epoch, speed), like ffplay's Clock. The audio callback
calls `sync(pts_heard_now)` on every buffer; between callbacks `now()` extrapolates with the
monotonic clock, `speed` media seconds per second. Without audio the player calls `sync` itself
at start, seek and unpause, and the extrapolation *is* the wall clock. One lock protects all fields.
"""

from __future__ import annotations

import threading
import time

# Playback speed. Below 0.25× a 30 fps clip shows fewer than 8 frames a second (frame-step is the
# tool there); above 4× speech is a blur and live mode drops most frames.
SPEED_MIN, SPEED_MAX = 0.25, 4.0


class Clock:
    def __init__(self):
        self._lock = threading.Lock()
        self._pts = 0.0
        self._t = time.monotonic()
        self._paused = True
        self.epoch = 0
        self.speed = 1.0  # playback speed: media seconds per wall second

    def now(self) -> float:
        with self._lock:
            if self._paused:
                return self._pts
            return self._pts + (time.monotonic() - self._t) * self.speed

    def set_speed(self, speed: float) -> None:
        """From now on, `speed` media seconds per second (the time now stays where it is)."""
        with self._lock:
            t = time.monotonic()
            if not self._paused:
                self._pts += (t - self._t) * self.speed
            self._t, self.speed = t, float(speed)

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
                self._pts += (time.monotonic() - self._t) * self.speed
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
