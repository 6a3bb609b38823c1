"""The compositor thread: for each frame due, blend its bases with the current controls.

Owns choosing which prepared frame is due against the master clock, late drops, buffering
(pausing the clock when the next frame is not ready), the blend itself (engine, on the device
where the bases live) and handing the result to the display through a single slot. It reads the
controls snapshot without a lock; a new snapshot (serial changed) re-blends the frame on screen
at once — while paused, and during playback too when the next frame is not imminent — so an
edit shows without waiting for the next frame and never runs the network.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from engine import compose
from player.decode import EndOfStream
from player.frames import Prepared, Presented
from player.queues import Closed

BLEND_AHEAD_S = 0.012  # blend at least this early so the frame is ready when due (a 720p blend takes a few ms)
# ... and earlier where blends take longer (a 3840×2160 frame's takes 40–120 ms on a 2-core CPU):
# this many times the recent median blend, so a slow blend does not make every frame late.
BLEND_AHEAD_MARGIN = 1.25
LATE_DROP_S = 0.040  # drop a frame this late when the next one is already due
MIN_DISPLAY_RATE_S = 0.100  # never drop so much that the picture freezes: show ≥ 10 fps
REBLEND_IF_NEXT_AFTER_S = 0.008  # re-blend the frame on screen after an edit unless the next is this close
# Prepared frames needed to leave buffering in live mode: the ready queue full (LIVE_READY_FRAMES).
# The first frames' inferences are the slowest of a run (the decoder fills its queues beside them),
# and with 2 the early-drop prediction dropped some in the first second. Measured with the lanes
# warmed up by an extra pass each (01_dog.mp4, live model, 2-core AMD EPYC, 5 runs each,
# alternating): drops in the first second 0 / 1 / 3 / 1 / 0 against 2 / 4 / 5 / 2 / 4 with 2 (and
# 3 / 5 / 6 / 7 / 6 without the warm-up); one more frame interval before the picture starts.
PREROLL_FRAMES = 3
PREROLL_CACHE_S = 0.5  # seconds of prepared frames needed to leave buffering in cache mode
IDLE_SLEEP_S = 0.002


class Slot:
    """One presented frame for the main thread; a newer one replaces an unread older one."""

    def __init__(self):
        self._item: Presented | None = None
        self._taken: Presented | None = None  # the last item taken (being shown, or on screen)
        self._lock = threading.Lock()  # protects _item, _taken and replaced
        self._event = threading.Event()
        self.replaced = 0  # frames blended but never shown (the display was busy): late drops

    def put(self, item: Presented) -> None:
        with self._lock:
            if self._item is not None and self._item.frame.pts != item.frame.pts:
                self.replaced += 1
            self._item = item
        self._event.set()

    @property
    def empty(self) -> bool:
        return not self._event.is_set()

    def held(self) -> tuple[Presented | None, Presented | None]:
        """(the item not taken yet, the one taken last): frames the main thread holds or will."""
        with self._lock:
            return self._item, self._taken

    def take(self, timeout: float) -> Presented | None:
        if not self._event.wait(timeout):
            return None
        with self._lock:
            item, self._item = self._item, None
            self._taken = item
            self._event.clear()
        return item


def _epoch_of(item) -> int:
    return item.epoch if isinstance(item, EndOfStream) else item.frame.epoch


class CompositorThread(threading.Thread):
    def __init__(self, player, ready_q, slot: Slot):
        super().__init__(name="compositor", daemon=True)
        self.player, self.ready_q, self.slot = player, ready_q, slot
        self.current: Prepared | None = None
        self.blend_ms: list[float] = []
        self._blend_ahead_s = BLEND_AHEAD_S  # wall seconds; from the recent blends (_present)
        self.dropped_late = 0
        # Playback starts buffering: the clock (and the sound) stay paused until the first frames
        # are prepared. Started running, the sound played the 0.6 s the quality model takes to
        # its first frames (960×540, 2-core CPU), and the picture started that far behind it.
        self.buffering = True
        self.eos: EndOfStream | None = None
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._serial = -1
        self._last_present = 0.0
        self._out: dict[tuple[int, int], list[np.ndarray]] = {}
        self._out_i = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._loop()
        except Closed:
            pass
        except BaseException as e:  # handed back to the player
            self.error = e

    # ---- helpers ---------------------------------------------------------------------------
    def _buffer(self, h: int, w: int) -> np.ndarray:
        """Rotating preallocated output frames, never one the main thread holds (on screen, being
        shown, or waiting in the slot: at most three of the four). Going round blindly, a main
        thread slower than four blends had its frame overwritten as it drew or recorded it."""
        bufs = self._out.setdefault((h, w), [np.empty((h, w, 3), np.uint8) for _ in range(4)])
        held = {id(x.tuned) for x in (self.player.last, *self.slot.held()) if x is not None}
        for _ in bufs:
            self._out_i = (self._out_i + 1) % len(bufs)
            if id(bufs[self._out_i]) not in held:
                break
        return bufs[self._out_i]

    def _present(self, prep: Prepared) -> None:
        c = self.player.controls
        den = self.player.denoiser
        t0 = time.perf_counter()
        b = prep.bases
        gains = (c.mix.luma, c.mix.chroma)
        if c.bypass:
            tuned = prep.frame.rgb
            coeffs = np.zeros(len(b.levels))
            strength = 0.0
        else:
            coeffs = compose.mix_coefficients_np(c.mix, b.levels, b.auto)  # (L,) float64, before the gains
            tuned = den.blend(b, coeffs=compose.gains_np(coeffs, c.mix), out=self._buffer(*b.size))
            strength = compose.strength_of(coeffs, b.levels)  # the strength knob's value; luma/chroma gains apart
        ms = (time.perf_counter() - t0) * 1000.0
        self.blend_ms.append(ms)
        self._blend_ahead_s = max(BLEND_AHEAD_S, BLEND_AHEAD_MARGIN * statistics.median(self.blend_ms[-9:]) / 1000.0)
        self._serial = c.serial
        self._last_present = time.monotonic()
        self.current = prep
        self.slot.put(Presented(frame=prep.frame, tuned=tuned, serial=c.serial, blend_ms=ms, strength=strength,
                                coeffs=tuple(float(v) for v in coeffs), gains=gains, bases=b))

    def _next(self):
        """Next item of the current epoch at the head of the queue, dropping stale ones."""
        clock = self.player.clock
        while True:
            item = self.ready_q.peek()
            if item is None:
                if self.ready_q.closed:
                    raise Closed
                return None
            if _epoch_of(item) == clock.epoch:
                return item
            self.ready_q.pop_if_head(item)

    def _ahead_s(self) -> float:
        """How long before its time a frame is blended, in media seconds."""
        return self._blend_ahead_s * self.player.clock.speed

    def _ready_ahead_s(self) -> float:
        n = len(self.ready_q)
        return n / max(self.player.info.fps, 1.0)

    # ---- main loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        p = self.player
        clock = p.clock
        while not self._halt.is_set():
            if self.current is not None and self.current.frame.epoch != clock.epoch:
                self.current = None
                self.eos = None
            item = self._next()
            if self.current is not None and item is not None and _epoch_of(item) != self.current.frame.epoch:
                self.current = None  # a seek between the check above and the peek: this is its first frame
                self.eos = None
            if isinstance(item, EndOfStream):
                if self.eos is None:
                    self.eos = item
                    p.on_end_of_stream(item)
                if self.current is not None and p.controls.serial != self._serial:
                    self._present(self.current)  # the last frame stays on screen: an edit re-blends it
                else:  # (paused on a clip's last frame, edits did not show; nor on a still image)
                    time.sleep(IDLE_SLEEP_S)
                continue

            if p.paused:
                if item is not None and (self.current is None or p.take_step()):
                    if not self.ready_q.pop_if_head(item):
                        continue  # a seek cleared the queue since the peek
                    clock.sync(item.frame.pts, epoch=item.frame.epoch)
                    self._present(item)
                    clock.set_waiting(False, epoch=item.frame.epoch)  # the frame is there; the user's pause holds it
                elif self.current is not None and p.controls.serial != self._serial:
                    self._present(self.current)
                else:
                    time.sleep(IDLE_SLEEP_S)
                continue

            if item is None:
                # Out of prepared frames mid-stream. Cache mode, and `auto` while it is still timing
                # the backbone, wait visibly (the clock stops); live mode keeps the clock (and the
                # sound) running: the worker's early drops catch up and the picture degrades to a
                # lower rate instead of stalling.
                if (p.worker.mode == "cache" or p.worker.probing) and not self.buffering and self.current is not None and self.eos is None:
                    self._set_buffering(True, self.current.frame.epoch)
                if self.current is not None and p.controls.serial != self._serial:
                    self._present(self.current)
                time.sleep(IDLE_SLEEP_S)
                continue

            if self.buffering or self.current is None:
                needed = PREROLL_CACHE_S * p.info.fps if p.worker.mode == "cache" else PREROLL_FRAMES
                # ... or all there is before the loop's end (it deadlocked: buffering waited for
                # frames the worker held back until the player's seek to A, which waited for them)
                full = len(self.ready_q) >= min(needed, self.ready_q.maxsize) or p.worker.waiting_at_loop_end
                if not full and not self._decoder_done():
                    self.buffering = True  # the clock already waits (start, seek or underrun)
                    time.sleep(IDLE_SLEEP_S)
                    continue
                # The frame is blended while the clock still waits, so the first frame after a wait
                # is shown on time however long its blend takes (a 4K blend ran the clock 0.1–0.2 s
                # ahead of the picture at every resume: 1.1 s behind after 15, and the next 14
                # frames were dropped late).
                # And where frames came too late before the wait (blends slower than the frames, as
                # at 4K on a CPU), the clock, which ran on, goes back to the picture: each wait ended
                # that far behind, and the lag grew from wait to wait. The sound goes on from where
                # it stopped (from the start of the packet holding that point: ≤ 21 ms again) once
                # the picture gets there, silent till then: sent back with the clock, it repeated
                # 0.2–0.3 s at every resume.
                first = self.current is None
                behind = not first and clock.now() > item.frame.pts + item.frame.duration / 2
                if not self.ready_q.pop_if_head(item):
                    continue  # a seek cleared the queue since the peek
                if first or behind:  # (before the frame goes to the display, which reads the clock)
                    clock.sync(item.frame.pts, epoch=item.frame.epoch)
                if behind:
                    p.restart_sound(item.frame.epoch)
                self.buffering = False
                self._present(item)
                clock.set_waiting(False, epoch=item.frame.epoch)  # (not if a seek came meanwhile)
                continue

            now = clock.now()
            pts = item.frame.pts
            ahead = self._ahead_s()
            if pts > now + ahead:
                if (self.current is not None and p.controls.serial != self._serial
                        and pts > now + ahead + REBLEND_IF_NEXT_AFTER_S):
                    self._present(self.current)
                    continue
                time.sleep(min(IDLE_SLEEP_S * 2, (pts - now - ahead) / clock.speed))
                continue
            if not self.ready_q.pop_if_head(item):
                continue  # a seek cleared the queue since the peek
            if pts + item.frame.duration < now - LATE_DROP_S and time.monotonic() - self._last_present < MIN_DISPLAY_RATE_S:
                nxt = self._next()
                if isinstance(nxt, Prepared) and nxt.frame.pts <= now:
                    self.dropped_late += 1
                    continue
            self._present(item)

    def _decoder_done(self) -> bool:
        return any(isinstance(x, EndOfStream) for x in self.ready_q.snapshot())

    def _set_buffering(self, on: bool, epoch: int) -> None:
        if on != self.buffering:
            self.buffering = on
            self.player.clock.set_waiting(on, epoch=epoch)
