"""The backbone worker: decoded frames → RCD bases, once per frame, and the render cache.

Owns the only place the network runs during playback. Two modes:
- live: frames that are already late against the master clock are dropped *before* inference
  (the backbone would otherwise fall behind for good); a short queue of prepared frames feeds
  the compositor.
- cache: the backbone is slower than real time (a CPU with the quality model). Bases are kept
  in a render cache within a memory budget, filled ahead of the playhead; playback waits where
  the cache is not filled, and a looped section plays from the cache in real time on every
  later pass (the worker skips inference for frames already cached).
`auto` first times the backbone without dropping frames (playback waits for them, `probing`; not
once even the first, slowest inferences fit live mode), then plays live, and switches to cache
once the measured backbone time shows it cannot keep up.

On a CPU the worker runs inference on `lanes` frames at once (frame-level parallelism, as FFmpeg's
frame threading), each with cores / lanes of torch's threads, and hands the results on in decode
order. The live backbone's layers are small: run on both cores of a 2-core CPU, every layer is a
parallel region whose two halves wait for each other, and whenever another thread of the player
(decoder, compositor, display) takes a core, the other half waits. One thread per frame has no
such barrier (see LANES_CPU).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from engine.denoiser import NoiseChoice, best_seconds
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
# Inferences left out of `auto`'s timing, per lane: the first ones allocate and fault in every
# buffer (measured, live model at 640×360 in the player: 97, 48, 46 ms, then 24–29 ms), and each
# lane makes oneDNN's kernels for every convolution on its first call. Counting them sent a run
# that plays at 29.7 fps live to the render cache, where it played at 20–25 fps. With two lanes and
# a window opening beside them (01_dog.mp4, 720p, Xvfb, session 21) the first six took 92–172 and
# 97–126 ms, then 50–60: with three left out, one run of two went to the cache at 17 fps where live
# mode plays it at 29. Session 26 (AMD EPYC, AVX2, the same clip in a window): the first 5–6 of each
# lane took 92–167 ms, then 45–100 (fresh pages at 4 µs each in that VM while the heap grows), and
# with three left out two runs of two went to the cache at 15–18 fps where live mode played 28–30.
AUTO_WARMUP_FRAMES = 6
# ... but those first inferences are the slowest of a run, so once this many (warm-up included) have
# a median that already fits live mode, `auto` chooses live at once (and keeps watching, as after the
# full probe); it waits for the full probe only to choose the cache. The full probe held the picture
# about half a second after the first frame (01_dog.mp4, 720p, 2-core AMD EPYC: 24 inferences of
# 41–121 ms; in a window under Xvfb the first six had medians of 76–80 ms, 38–40 ms a frame with
# two lanes, against the 43 ms that AUTO_CACHE_ABOVE allows at 29.97 fps).
AUTO_EARLY_FRAMES = 6
# `auto` keeps the bases of an A-B loop's frames in the render cache once live mode has dropped more
# than this share of them over a pass (see BackboneWorker._keeps): a pass that shows 95 % of its frames
# looks whole; below that, the one slower pass that fills the cache pays off on every pass after it.
LOOP_KEEP_SHARE = 0.05
WARM_UP_GATE_S = 5.0  # how long a lane's warm-up waits for the others (only a stuck pool waits that long)
PREDICT_FRAMES = 9  # recent inference timings whose median predicts the next one
# A demo size must be denoised and blended within this share of a frame interval (see DEMO_SIZES).
# Live mode shows this share of the frames (live model, 640×360 demo, 2-core CPU, backbone ÷
# interval, measured when the worker went by the backbone's time alone): 0.82 → 99 %, 0.77 → 96 %,
# 1.0 → 77 %. At 0.85 the 640×360 demo, whose 12-frame medians spread over 0.72–0.87, went either
# way from run to run.
AUTO_HEADROOM = 0.9
# `auto` plays from the render cache once a frame costs more than this many frame intervals
# (median inference ÷ lanes). The cache's first pass is slower than live mode's frame rate near
# real time: it keeps every frame's bases in fresh memory, and on a CPU each new page costs (4 µs in
# a KVM guest). Measured, live model, 01_dog.mp4 (720p, 29.97 fps), 2-core AMD EPYC, 8 s at
# --speed 1 / 1.15 / 1.3 / 1.5 (cost 1.06 / 1.14 / 1.17 / 1.71 intervals): live mode showed 85 /
# 75 / 70 / 54 % of the frames due, real time; the cache's first pass ran at 56 / 51 / 51 / 39 % of
# real time. At 0.9, as before, 720p there went to the cache at 17 fps where live mode plays it at
# 25–30. Above this, live would drop more than about a third of the frames, and a looped section
# plays whole from the cache on every pass after the first.
AUTO_CACHE_ABOVE = 1.3
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
# Frames in inference at once on a CPU. Measured (live model, 2-core CPU, Denoiser.infer in a loop,
# 8 s each): at 1280×720 one frame at a time on 2 threads gives 25.3–25.4 frames/s, two frames at
# a time on 1 thread each 30.3–31.4; with a thread beside them that keeps ~0.3 of a core busy (as
# the player's other threads do) 15.7–16.6 against 18.2–23.6. Each frame then takes about twice as
# long to come out, which only the early-drop prediction sees (it uses the measured time). On a
# GPU one (its work is queued on one device anyway).
LANES_CPU = 2


# The model played when --weights is not given: the best one the device runs in real time. On a
# CUDA GPU the quality model does (55.6 frames/s at 1920×1080 on an H100, session 6); on a CPU only
# the live one does (quality: 300 ms per 720p frame on 2 cores, so it would play from the cache).
DEFAULT_WEIGHTS = {"cuda": "quality"}
FALLBACK_WEIGHTS = "live"


def default_weights(device_type: str) -> str:
    """The shipped model to load when none is named, for the device the network runs on."""
    return DEFAULT_WEIGHTS.get(device_type, FALLBACK_WEIGHTS)


def plan_lanes(device_type: str, cores: int, lanes: int = 0, threads: int = 0) -> tuple[int, int]:
    """(frames in inference at once, torch threads for each) for `device_type` on `cores` CPUs;
    lanes / threads: what the user asked for (0: choose)."""
    if lanes <= 0:
        lanes = LANES_CPU if device_type == "cpu" and cores >= LANES_CPU else 1
    if threads <= 0:
        threads = max(1, cores // lanes)
    return lanes, threads


def set_up_lanes(device_type: str, lanes: int = 0, threads: int = 0) -> tuple[int, int]:
    """plan_lanes for this machine, with torch's thread count set to the threads per lane where
    they apply (a CPU, or threads given): (lanes, torch threads per lane). For the player and the
    offline render alike."""
    lanes, per_lane = plan_lanes(device_type, os.cpu_count() or 1, lanes, threads)
    if device_type == "cpu" or threads:
        torch.set_num_threads(per_lane)
    return lanes, torch.get_num_threads()


def _frame_ms(denoiser, w: int, h: int, lanes: int = 1) -> float:
    """ms per frame of inference + blend of w×h frames with `lanes` inferences at once (one
    inference's time ÷ lanes, plus a blend): the fastest of DEMO_PROBE_RUNS after the first."""
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    bases = denoiser.infer(frame)
    infer_s = best_seconds(lambda: denoiser.infer(frame), DEMO_PROBE_RUNS - 1)
    return 1000.0 * (infer_s / lanes + best_seconds(lambda: denoiser.blend(bases), DEMO_PROBE_RUNS - 1))


def pick_demo_size(denoiser, fps: float, cores: int | None = None, lanes: int = 1) -> tuple[tuple[int, int], float, float]:
    """(size, ms per frame at the largest size, the budget in ms that a size's time alone had to
    fit) for the demo source on a machine with `cores` CPUs (default: this one's), with `lanes`
    inferences at once (plan_lanes)."""
    cores = cores or os.cpu_count() or 1
    budget_ms = AUTO_HEADROOM * 1000.0 / fps * max(cores - PLAYER_OTHER_CORES, 0.25) / cores
    timings = []
    for size in DEMO_SIZES:
        timings.append(_frame_ms(denoiser, *size, lanes=lanes))
        if timings[-1] <= budget_ms:
            return size, timings[0], budget_ms
    return DEMO_SIZES[-1], timings[0], budget_ms


def in_loop(t: float, loop: tuple[float | None, float | None]) -> bool:
    """Whether time t lies in the A-B loop (with 50 ms to spare at its ends), if one is set."""
    a, b = loop
    return a is not None and b is not None and a - 0.05 <= t <= b + 0.05


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
        looped = in_loop(t, loop)
        if t < playhead - CACHE_KEEP_BEHIND_S and not looped:
            return (0, t)  # long behind: evict oldest first
        if t < playhead and not looped:
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


class _Job:
    """A frame on its way through the worker: its bases, or the inference that will give them."""

    def __init__(self, frame: VideoFrame, key: int, bases=None, future: Future | None = None, timed: bool = True):
        self.frame, self.key, self.bases, self.future = frame, key, bases, future
        self.timed = timed  # its inference counts in the lanes' times (not a lane's first pass: _warm_up)
        self.admitted = self.finished = time.monotonic()
        if future is not None:
            future.add_done_callback(self._finish)

    def _finish(self, _future) -> None:
        self.finished = time.monotonic()

    @property
    def done(self) -> bool:
        return self.future is None or self.future.done()


class BackboneWorker(threading.Thread):
    def __init__(self, denoiser, video_q: ClosableQueue, ready_q: ClosableQueue, player, mode: str, cache_bytes: int,
                 lanes: int = 1, noise: str = "auto"):
        super().__init__(name="backbone", daemon=True)
        self.denoiser, self.video_q, self.ready_q, self.player = denoiser, video_q, ready_q, player
        self.requested_mode = mode
        self.mode = "cache" if mode == "cache" else "live"
        # `auto` before its first decision: no early drops, and playback waits for frames (as in
        # cache mode) instead of dropping them. Else a model headed for the cache dropped every
        # frame it could not make while being timed: 108–110 of the first 3.6 s (quality model,
        # 960×540 demo, 2-core CPU), frames a looped first pass then lacked.
        self.probing = mode == "auto"
        self.lanes = max(1, lanes)  # frames in inference at once (plan_lanes)
        self.cache = RenderCache(cache_bytes)
        self.backbone_ms: list[float] = []  # the network's pass alone (stats, HUD)
        self.noise = NoiseChoice(noise, denoiser.cfg.mono)  # which backbone reads each colour frame (Denoiser.infer's noise)
        self.frames_mono = 0  # frames through the model's monochrome backbone (R = G = B)
        self.frames_luma = 0  # ... on the luma of colour frames whose noise is luma
        self.infer_ms: list[float] = []  # the whole Denoiser.infer: how long a frame takes in its lane
        self.latency_ms: list[float] = []  # from taking a frame to its bases being ready in order (_hand_on)
        self._last_ready = 0.0  # when the last inferred frame's bases were ready in order (monotonic s)
        self.dropped_early = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._cache_frames_set = False
        self._jobs: deque[_Job] = deque()  # in decode order; at most `lanes` of them in inference
        # The first decoded frame past the A-B loop's end, held back rather than inferred (the player
        # is about to seek to A) — and not thrown away: a loop cleared or widened in the meantime
        # plays on from it. Discarding such frames while paused let the decoder run on to the end of
        # the file, so clearing the loop ended playback at the old loop end.
        self._held: VideoFrame | None = None
        self._warm_shape: tuple | None = None  # the frame shape the lanes are warmed up for (_warm_up)
        self._warming: list[Future] = []  # the other lanes' warm-up passes while they run (_warm_up)
        self._loop_full: tuple | None = None  # an A-B loop whose frames the cache could not all take (_keeps)
        self._loop_counted: tuple | None = None  # the A-B loop whose frames are counted here (_count_loop):
        self._loop_seen = self._loop_dropped = 0  # its frames admitted in live mode, and those dropped early
        self._loop_told: tuple | None = None  # the loop the OSD said is being kept
        ready_q.maxsize = LIVE_READY_FRAMES

    def stop(self) -> None:
        self._halt.set()

    def _expected_s(self) -> float:
        """How far ahead (seconds) a frame must be to be shown on time: a pessimistic recent time
        from taking a frame to its bases being ready in order, plus the blend that follows. That
        time is the inference's plus, with lanes, the wait for the frame before it (which may
        finish later). Pessimistic: the upper quartile of the last PREDICT_FRAMES; with lanes, whose
        times spread wider, the 9th decile of the last PREDICT_FRAMES × lanes. Measured at 720p with two lanes (A/V
        offset p95, demo and 01_dog.mp4): 23–43 ms going by the inference time's upper quartile,
        26–44 by the ready time's, 13–25 by its 9th decile (6–8 runs each)."""
        recent = self.latency_ms[-PREDICT_FRAMES * self.lanes:]
        if not recent:
            return 0.0
        q = 10 if self.lanes > 1 else 4  # with lanes the times spread wider: their 9th decile
        backbone = statistics.quantiles(recent, n=q)[q - 2] if len(recent) >= 4 else max(recent)
        blends = self.player.compositor.blend_ms[-PREDICT_FRAMES:]
        return (backbone + (statistics.median(blends) if blends else 0.0)) / 1000.0

    def _decide_mode(self, looped: bool = False) -> None:
        """`auto`'s choice, after each inference. looped: a frame timed before came round again (a
        loop shorter than the warm-up and the probe): nothing new will be timed, so the probe ends
        with the inferences there are, the later half where the warm-up cannot be left out whole."""
        if self.requested_mode != "auto" or self.mode == "cache" or not self.infer_ms:
            return
        warm_up = AUTO_WARMUP_FRAMES * self.lanes
        timed = len(self.infer_ms) - warm_up
        interval_ms = 1000.0 / self.player.info.fps / self.player.clock.speed  # at 2× frames come twice as often
        if (self.probing and timed < AUTO_PROBE_FRAMES and len(self.infer_ms) >= AUTO_EARLY_FRAMES
                and statistics.median(self.infer_ms) / self.lanes <= AUTO_CACHE_ABOVE * interval_ms):
            self.probing = False  # even the warm-up fits: live (the watch below goes on from here)
            return
        if timed >= AUTO_PROBE_FRAMES:
            recent = self.infer_ms[-min(timed, AUTO_WATCH_FRAMES):]
        elif looped and self.probing:
            recent = self.infer_ms[min(warm_up, len(self.infer_ms) // 2):]
        else:
            return
        # what a frame costs: `lanes` frames are in inference at once
        typical = statistics.median(recent) / self.lanes
        if typical > AUTO_CACHE_ABOVE * interval_ms:
            self.mode = "cache"
            self.player.notice(f"inference slower than real time ({typical:.0f} ms/frame): render-cache mode")
        self.probing = False  # after the mode: the compositor never sees live mode without the probe

    def _size_ready_queue(self, bases) -> None:
        if self.mode == "cache" and not self._cache_frames_set:
            self.ready_q.maxsize = max(LIVE_READY_FRAMES, int(self.cache.budget // max(bases.nbytes, 1)))
            self._cache_frames_set = True

    def run(self) -> None:
        try:
            with ThreadPoolExecutor(self.lanes, thread_name_prefix="backbone-lane") as lanes:
                try:
                    self._loop(lanes)
                finally:
                    for job in self._jobs:  # not started yet: never; running: the pool waits for it
                        if job.future is not None:
                            job.future.cancel()
        except BaseException as e:  # handed back to the player
            self.error = e
        finally:
            self.ready_q.close()

    def _in_flight(self) -> int:
        self._warming = [f for f in self._warming if not f.done()]
        return sum(1 for job in self._jobs if not job.done) + len(self._warming)

    def _loop(self, lanes: ThreadPoolExecutor) -> None:
        """Hand on the oldest job once its bases are there; take frames while a lane is free."""
        closed = False
        while not self._halt.is_set():
            head = self._jobs[0] if self._jobs else None
            if head is not None and head.done:
                self._hand_on(head)
                continue
            # A free lane, and not too far ahead of the oldest job (cached frames need no lane).
            if not closed and self._in_flight() < self.lanes and len(self._jobs) <= self.lanes:
                try:  # with a job in inference, only a short look at the queue: its result comes first
                    if self._admit(self._next_frame(timeout=0.002 if head else 0.1), lanes):
                        continue
                    if head is None:  # held past the loop's end, nothing else to do: wait for the seek
                        self._halt.wait(0.005)
                except TimeoutError:
                    pass
                except Closed:
                    closed = True
            if head is not None:
                self._hand_on(head)
            elif closed:
                return

    @property
    def waiting_at_loop_end(self) -> bool:
        """A frame past the loop's end is held and every frame before it handed on: nothing more
        comes until the player seeks back to A (the compositor must not wait for more, and the
        player must seek even if the frames up to B were dropped late). Of the current epoch: held
        from before the seek to A, it made the player seek to A twice."""
        held = self._held
        return held is not None and held.epoch == self.player.clock.epoch and not self._jobs

    def _next_frame(self, timeout: float):
        """The held frame if there is one, else the next decoded item."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        return self.video_q.get(timeout=timeout)

    def _admit(self, item, lanes: ThreadPoolExecutor) -> bool:
        """A decoded frame (or the end of the stream): dropped, found in the cache, or sent to a
        lane — True; or held back past the loop's end (`_held`) — False."""
        clock = self.player.clock
        if item.epoch != clock.epoch:
            return True  # from before a seek
        if isinstance(item, EndOfStream):
            self._jobs.append(_Job(item, -1, bases=item))
            return True
        frame: VideoFrame = item
        a, b = self.player.loop
        if a is not None and b is not None and frame.pts > b + frame.duration:
            self._held = frame  # past the loop's end: the player is about to seek back to A
            return False
        key = int(round(frame.pts * 1000))
        bases = self.cache.get(key)  # (a cached frame needs no inference: never dropped early)
        if bases is None and self.mode == "live" and not self.probing and not clock.paused \
                and self.player.frames_presented_epoch > 0:
            # Late already, or late by the time the backbone would be done with it: skip it
            # and spend the inference on a frame that can still be shown on time.
            ready_at = clock.now() + self._expected_s() * clock.speed  # wall seconds → media seconds
            late = frame.pts < ready_at - EARLY_DROP_S
            self._count_loop(frame, late)
            if late:
                self.dropped_early += 1
                return True  # (taken: returning None, it read as "held", and a free lane waited)
        if bases is not None:
            self._decide_mode(looped=True)
            self._jobs.append(_Job(frame, key, bases=bases))
        else:
            noise = self.noise(frame.rgb)
            # (not for a still image: it has no next frame, and a 12 MP one took 2 GB for both passes)
            if frame.rgb.shape != self._warm_shape and self.requested_mode != "cache" and not self.player.info.still:
                self._jobs.append(_Job(frame, key, future=self._warm_up(frame.rgb, noise, lanes), timed=False))
            else:
                self._jobs.append(_Job(frame, key, future=lanes.submit(self.denoiser.infer, frame.rgb, noise)))
        return True

    def _count_loop(self, frame: VideoFrame, dropped: bool) -> None:
        loop = self.player.loop
        if not in_loop(frame.pts, loop):
            return
        if self._loop_counted != loop:
            self._loop_counted, self._loop_seen, self._loop_dropped = loop, 0, 0
        self._loop_seen += 1
        self._loop_dropped += dropped

    def _keeps(self, frame: VideoFrame) -> bool:
        """Whether live mode keeps this frame's bases: under `auto`, the frames of an A-B loop of
        which live mode dropped more than LOOP_KEEP_SHARE over a pass, while the cache takes them
        all. Its later passes then blend the kept frames and spend the lanes on the rest, so within
        a pass or two it plays every frame. Keeping costs its pass the float16 copy (Denoiser.compact:
        14 ms a 720p frame on one core, most of it fresh pages), so a loop that live mode plays
        nearly whole is left alone: kept from the first pass, 01_dog.mp4 looped at 720p on a 2-core
        CPU played at 27.2–27.6 fps over 12 s where live mode alone played 29.1–29.2. Measured where
        it is kept (the same loop at --speed 1.25, 37.5 frames due a second): from the third second
        of the second pass on 35–38 frames a second, where live mode alone went on at 31–37."""
        loop = a, b = self.player.loop
        if (self.requested_mode != "auto" or not in_loop(frame.pts, loop) or loop == self._loop_full
                or loop != self._loop_counted):
            return False
        keeps = (self._loop_seen >= (b - a) * self.player.info.fps
                 and self._loop_dropped > LOOP_KEEP_SHARE * self._loop_seen)
        if keeps and self._loop_told != loop:  # why the next pass is slower, and the ones after it whole
            self._loop_told = loop
            self.player.message(f"loop: live mode dropped {self._loop_dropped / self._loop_seen:.0%} of its frames; "
                                "keeping them in the render cache")
        return keeps

    def _warm_up(self, rgb: np.ndarray, noise: str, lanes: ThreadPoolExecutor) -> Future:
        """The first frame of a size on every lane at once: each lane's first pass makes its
        buffers and kernels (about twice a later pass), and counted in the lanes' times it made the
        early-drop prediction drop the next frames, which would have been shown on time (01_dog.mp4,
        live model, 2-core CPU: 3–7 in the first second of every run). One pass is the frame's own
        (returned; left out of the times), the others' results are dropped; the lanes take no other
        frame until their pass is done (_in_flight). The clock waits for the first frames meanwhile."""
        self._warm_shape = rgb.shape
        gate = threading.Barrier(self.lanes, timeout=WARM_UP_GATE_S)  # a pass each: no lane takes two

        def warm():
            try:
                gate.wait()
            except threading.BrokenBarrierError:
                pass
            return self.denoiser.infer(rgb, noise)

        own, *others = [lanes.submit(warm) for _ in range(self.lanes)]
        self._warming = others
        return own

    def _hand_on(self, job: _Job) -> None:
        """The oldest job, once done (waits up to 0.1 s for it), to the compositor in decode order."""
        if job.future is not None:
            try:
                job.bases = job.future.result(timeout=0.1)
            except TimeoutError:
                return
            job.future = None
            bases = job.bases
            ready = max(job.finished, self._last_ready)  # in order: not before the frame before it
            self._last_ready = ready
            if job.timed:  # (what the early drops and `auto` go by)
                self.latency_ms.append((ready - job.admitted) * 1000.0)
                self.infer_ms.append(bases.infer_ms)
            self.backbone_ms.append(bases.backbone_ms)
            self.frames_mono += bases.mono
            self.frames_luma += bases.luma
            self._decide_mode()
            if self.mode == "cache":
                job.bases = self.denoiser.compact(bases)  # float16: twice the frames in the budget
                self._size_ready_queue(job.bases)
                self.cache.put(job.key, job.bases, self.player.clock.now(), self.player.loop)
            elif self.probing or self._keeps(job.frame):  # kept as well: were they not, a loop's first
                # frames, played while `auto` timed the backbone, were inferred again on its second pass
                # (a 6 s wait at the wrap); and see _keeps
                loop = self.player.loop
                if not self.cache.put(job.key, self.denoiser.compact(bases), self.player.clock.now(), loop):
                    self._loop_full = loop
        self._jobs.popleft()
        if job.frame.epoch != self.player.clock.epoch:
            return  # a seek came while it was in inference
        self._put(job.bases if isinstance(job.bases, EndOfStream) else Prepared(job.frame, job.bases))

    def _put(self, item) -> None:
        epoch = item.epoch if isinstance(item, EndOfStream) else item.frame.epoch
        while not self._halt.is_set() and epoch == self.player.clock.epoch:
            if self.ready_q.put(item, timeout=0.05):
                return
            if self.ready_q.closed:
                return
