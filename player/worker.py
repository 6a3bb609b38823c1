"""The backbone worker: decoded frames → RCD bases, once per frame, and the render cache.

Owns the only place the network runs during playback. Two modes:
- live: frames that are already late against the master clock are dropped *before* inference
  (the backbone would otherwise fall behind for good); a short queue of prepared frames feeds
  the compositor.
- cache: the backbone is slower than real time (a CPU with the quality model). Bases are kept
  in a render cache within a memory budget, filled ahead of the playhead; playback waits where
  the cache is not filled, and a looped section plays from the cache in real time on every
  later pass (the worker skips inference for frames already cached).
`auto` starts live and switches to cache once the measured backbone time shows it cannot keep up.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections import OrderedDict

import numpy as np

from engine.denoiser import best_seconds
from player.decode import EndOfStream
from player.frames import Prepared, VideoFrame
from player.queues import Closed, ClosableQueue

# Drop before inference a frame that would reach the screen more than this late. Counting from
# the frame's end (pts + duration) instead let a pipeline at capacity settle into a steady lag of
# up to a frame + 20 ms: A/V p95 26–51 ms against 3–23 ms from its start (live model, 640×360
# demo, 2-core CPU, 3 runs each, 29.8–30.7 fps either way; 720p: 79 against 104 ms, 8.6 fps both).
EARLY_DROP_S = 0.020
LIVE_READY_FRAMES = 3  # prepared frames queued in live mode: enough to hide jitter, little latency
AUTO_PROBE_FRAMES = 12  # frames timed before `auto` first decides (a median: one slow frame does not decide)
# After that `auto` keeps watching, over the median of a window that grows to this many frames: a
# sustained slowdown still moves playback to the cache, a few slow frames in a row do not (with a
# fixed 12-frame window, one of the ~300 windows of a 10 s run was enough to switch).
AUTO_WATCH_FRAMES = 60
# Inferences left out of `auto`'s timing: the first ones allocate and fault in every buffer
# (measured, live model at 640×360 in the player: 97, 48, 46 ms, then 24–29 ms). Counting them
# sent a run that plays at 29.7 fps live to the render cache, where it played at 20–25 fps.
AUTO_WARMUP_FRAMES = 3
PREDICT_FRAMES = 9  # recent inference timings whose median predicts the next one
# live only if inference needs under this share of a frame interval. Live mode shows this share
# of the frames (live model, 640×360 demo, 2-core CPU, backbone ÷ interval, measured when the
# worker went by the backbone's time alone): 0.82 → 99 %, 0.77 → 96 %, 1.0 → 77 %. At 0.85 the
# 640×360 demo, whose 12-frame medians spread over 0.72–0.87, went either way from run to run.
AUTO_HEADROOM = 0.9
# The built-in demo's size when none is given: the largest of these whose frames this machine
# denoises and blends within AUTO_HEADROOM of a frame interval (with room for the player's other
# threads, PLAYER_OTHER_CORES), else the smallest. Measured (session 8) on a
# 2-core CPU with the live model (inference + blend): 83, 48 and 27 ms at these sizes, so it
# plays 640×360 live at 29.7 fps where 1280×720 fell back to the render cache at 9 fps.
DEMO_SIZES = ((1280, 720), (960, 540), (640, 360))
# The sizes are timed alone, but in the player the demo source, the compositor's blend and the
# display keep about this much of a core busy beside inference, so a size must fit AUTO_HEADROOM
# of a frame interval after scaling by cores / (cores − this). Measured on a 2-core CPU (live
# model, headless, --mode live, 8 s): timed alone at 14–16 ms, 640×360 plays at 30.0 fps; 720×400
# at 23–26 ms plays at 28.9 fps; 960×540 at 34–37 ms at 18 fps. So about 19 ms alone fits a 33 ms
# interval there (30 ms × 1.25 / 2); without the scaling a 960×540 timed at 30 ms would pass.
PLAYER_OTHER_CORES = 0.75
DEMO_PROBE_RUNS = 3  # per size: the first allocates its buffers; the fastest of the others counts
CACHE_KEEP_BEHIND_S = 1.0  # cached frames this far behind the playhead may be evicted first


def _frame_ms(denoiser, w: int, h: int) -> float:
    """ms of one inference + blend of a w×h frame: the fastest of DEMO_PROBE_RUNS after the first."""
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return 1000.0 * best_seconds(lambda: denoiser.blend(denoiser.infer(frame)), DEMO_PROBE_RUNS - 1)


def pick_demo_size(denoiser, fps: float, cores: int | None = None) -> tuple[tuple[int, int], float, float]:
    """(size, ms of one inference + blend at the largest size, the budget in ms that a size's time
    alone had to fit) for the demo source on a machine with `cores` CPUs (default: this one's)."""
    cores = cores or os.cpu_count() or 1
    budget_ms = AUTO_HEADROOM * 1000.0 / fps * max(cores - PLAYER_OTHER_CORES, 0.25) / cores
    timings = []
    for size in DEMO_SIZES:
        timings.append(_frame_ms(denoiser, *size))
        if timings[-1] <= budget_ms:
            return size, timings[0], budget_ms
    return DEMO_SIZES[-1], timings[0], budget_ms


class RenderCache:
    """Bases by frame time (ms), within a byte budget. Evicts what lies behind the playhead and
    outside the A-B loop first; never evicts frames ahead of the playhead (it refuses instead)."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._items: OrderedDict[int, object] = OrderedDict()  # key → Bases; guarded by _lock
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: int):
        with self._lock:
            return self._items.get(key)

    def put(self, key: int, bases, playhead: float, loop: tuple[float | None, float | None]) -> bool:
        with self._lock:
            if key in self._items:
                return True
            need = bases.nbytes
            if need > self.budget:
                return False
            for k in sorted(self._items, key=lambda k: self._evict_rank(k, playhead, loop)):
                if self._bytes + need <= self.budget:
                    break
                if self._evict_rank(k, playhead, loop)[0] > 1:
                    break  # only frames ahead of the playhead (or in the loop) remain
                self._bytes -= self._items.pop(k).nbytes
            if self._bytes + need > self.budget:
                return False
            self._items[key] = bases
            self._bytes += need
            return True

    @staticmethod
    def _evict_rank(key: int, playhead: float, loop) -> tuple[int, float]:
        t = key / 1000.0
        a, b = loop
        in_loop = a is not None and b is not None and a - 0.05 <= t <= b + 0.05
        if t < playhead - CACHE_KEEP_BEHIND_S and not in_loop:
            return (0, t)  # long behind: evict oldest first
        if t < playhead and not in_loop:
            return (1, t)
        return (2, -t)  # ahead or in the loop: keep

    def ranges(self, gap: float = 0.1) -> list[tuple[float, float]]:
        """Cached spans in seconds, for the HUD's cache bar."""
        with self._lock:
            keys = sorted(self._items)
        out: list[list[float]] = []
        for k in keys:
            t = k / 1000.0
            if out and t - out[-1][1] <= gap:
                out[-1][1] = t
            else:
                out.append([t, t])
        return [(a, b) for a, b in out]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class BackboneWorker(threading.Thread):
    def __init__(self, denoiser, video_q: ClosableQueue, ready_q: ClosableQueue, player, mode: str, cache_bytes: int):
        super().__init__(name="backbone", daemon=True)
        self.denoiser, self.video_q, self.ready_q, self.player = denoiser, video_q, ready_q, player
        self.requested_mode = mode
        self.mode = "cache" if mode == "cache" else "live"
        self.cache = RenderCache(cache_bytes)
        self.backbone_ms: list[float] = []  # the network's pass alone (stats, HUD)
        self.infer_ms: list[float] = []  # the whole Denoiser.infer: what a frame costs this thread
        self.dropped_early = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._cache_frames_set = False
        ready_q.maxsize = LIVE_READY_FRAMES

    def stop(self) -> None:
        self._halt.set()

    def _expected_s(self) -> float:
        """How far ahead (seconds) a frame must be to be shown on time: a pessimistic recent
        inference time (3rd of 4 quartiles) plus the blend that follows it."""
        recent = self.infer_ms[-PREDICT_FRAMES:]
        if not recent:
            return 0.0
        backbone = statistics.quantiles(recent, n=4)[2] if len(recent) >= 4 else max(recent)
        blends = self.player.compositor.blend_ms[-PREDICT_FRAMES:]
        return (backbone + (statistics.median(blends) if blends else 0.0)) / 1000.0

    def _decide_mode(self) -> None:
        timed = len(self.infer_ms) - AUTO_WARMUP_FRAMES
        if self.requested_mode != "auto" or self.mode == "cache" or timed < AUTO_PROBE_FRAMES:
            return
        interval_ms = 1000.0 / self.player.info.fps
        typical = statistics.median(self.infer_ms[-min(timed, AUTO_WATCH_FRAMES):])
        if typical > AUTO_HEADROOM * interval_ms:
            self.mode = "cache"
            self.player.notice(f"inference slower than real time ({typical:.0f} ms/frame): render-cache mode")

    def _size_ready_queue(self, bases) -> None:
        if self.mode == "cache" and not self._cache_frames_set:
            self.ready_q.maxsize = max(LIVE_READY_FRAMES, int(self.cache.budget // max(bases.nbytes, 1)))
            self._cache_frames_set = True

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # handed back to the player
            self.error = e
        finally:
            self.ready_q.close()

    def _loop(self) -> None:
        clock = self.player.clock
        while not self._halt.is_set():
            try:
                item = self.video_q.get(timeout=0.1)
            except TimeoutError:
                continue
            except Closed:
                return
            if item.epoch != clock.epoch:
                continue  # from before a seek
            if isinstance(item, EndOfStream):
                self._put(item)
                continue
            frame: VideoFrame = item
            a, b = self.player.loop
            if a is not None and b is not None and frame.pts > b + frame.duration:
                continue  # past the loop's end: the player is about to seek back to A
            if self.mode == "live" and not clock.paused and self.player.frames_presented_epoch > 0:
                # Late already, or late by the time the backbone would be done with it: skip it
                # and spend the inference on a frame that can still be shown on time.
                ready_at = clock.now() + self._expected_s()
                if frame.pts < ready_at - EARLY_DROP_S:
                    self.dropped_early += 1
                    continue
            key = int(round(frame.pts * 1000))
            bases = self.cache.get(key)
            if bases is None:
                bases = self.denoiser.infer(frame.rgb)
                self.infer_ms.append(bases.infer_ms)
                self.backbone_ms.append(bases.backbone_ms)
                self._decide_mode()
                if self.mode == "cache":
                    bases = self.denoiser.compact(bases)  # float16: twice the frames in the budget
                    self._size_ready_queue(bases)
                    self.cache.put(key, bases, clock.now(), self.player.loop)
            self._put(Prepared(frame, bases))

    def _put(self, item) -> None:
        epoch = item.epoch if isinstance(item, EndOfStream) else item.frame.epoch
        while not self._halt.is_set() and epoch == self.player.clock.epoch:
            if self.ready_q.put(item, timeout=0.05):
                return
            if self.ready_q.closed:
                return
