"""The master clock: media time now, from the audio device when there is one, else the wall.

A clock is (pts, time it was read, paused, epoch, speed), like ffplay's Clock. The audio callback
calls `sync(pts_heard_now)` on every buffer; between callbacks `now()` extrapolates with the
monotonic clock, `speed` media seconds per second. Without audio the player calls `sync` itself
at start, seek and unpause, and the extrapolation *is* the wall clock. One lock protects all fields.

Two things stop it, each set by its owner only: the user's pause (the main thread) and the wait
for frames (set by every seek, released by the compositor when the seek's first frame is ready,
set again when frames run out). The compositor used to write "paused = user's pause or waiting"
itself, from a user's pause it had read a moment before: a pause or a seek made in between was
undone — the clock ran in a new epoch with no frame, or on under a PAUSED badge.
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
        self._paused = True  # = _user_paused or _waiting
        self._user_paused = False
        self._waiting = True  # for frames: playback starts with none
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
        """The user's pause."""
        with self._lock:
            self._user_paused = paused
            self._hold()

    def set_waiting(self, waiting: bool, epoch: int | None = None) -> None:
        """Waiting for frames (or not). Ignored when `epoch` is given and stale: the end of a
        wait from before a seek does not start the seek's clock."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            self._waiting = waiting
            self._hold()

    def _hold(self) -> None:  # (under the lock)
        paused = self._user_paused or self._waiting
        if paused and not self._paused:
            self._pts += (time.monotonic() - self._t) * self.speed
        self._t = time.monotonic()
        self._paused = paused

    @property
    def paused(self) -> bool:
        """Stopped: by the user or waiting for frames."""
        return self._paused

    def reset(self, pts: float, epoch: int) -> None:
        """A seek: new epoch, time jumps to pts, and the clock waits for the seek's first frame."""
        with self._lock:
            self.epoch = epoch
            self._waiting = True
            self._hold()
            self._pts = pts
