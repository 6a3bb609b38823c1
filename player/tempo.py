"""Playback speed for the sound: audio played faster or slower at the same pitch.

Owns the time stretch — FFmpeg's `atempo` filter through PyAV's filter graph, as mpv's
`scaletempo` does it — and the bookkeeping that keeps every stretched chunk tied to source time:
a chunk's `pts` is the media time of its first sample, each of its samples advances media time by
`speed / AUDIO_RATE`, and `source` holds the unstretched samples of the same span, so a
recording made at any speed keeps the source's sound.

atempo's output runs a little ahead of or behind `k · speed` (it overlaps windows of ~40 ms and
aligns each to the last): measured with white noise, the source under output sample k lies
+7..+13 ms from k · speed below 1×, −11..−14 ms at 1.25–1.5×, about 0 at 2–4×. The sound then
led or trailed the picture by that much (20–50 ms of wall time at 0.5–0.25×). `source_offset`
measures it once per speed (15–40 ms of work) and the chunks' times carry it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterable, Iterator

import av
import numpy as np

from player.frames import AudioChunk

ATEMPO_MIN = 0.5  # FFmpeg's atempo takes 0.5..100 per instance: slower speeds chain several


def atempo_factors(speed: float) -> list[float]:
    """`speed` as a product of factors atempo accepts (0.25 → [0.5, 0.5])."""
    factors = []
    while speed < ATEMPO_MIN - 1e-9:
        factors.append(ATEMPO_MIN)
        speed /= ATEMPO_MIN
    return factors + [speed]


_OFFSETS: dict[tuple[float, int], float] = {}  # (speed, rate) → source_offset's answer
OFFSET_PROBE_S = 0.6  # white noise put through the filter to measure its offset ...
OFFSET_PROBES = 48  # ... at this many output positions (their median: WSOLA's alignment spreads ±8 ms)
OFFSET_SEG = 240  # samples of output each probe looks for in the source (5 ms)
OFFSET_SEARCH_S = 0.05  # how far from k · speed it looks


def source_offset(speed: float, rate: int) -> float:
    """Seconds of source time by which atempo's output at `speed` lies after k · speed (cached)."""
    key = (float(speed), rate)
    if key not in _OFFSETS:
        rng = np.random.default_rng(0)
        n = int(rate * OFFSET_PROBE_S)
        x = rng.standard_normal(n).astype(np.float32)
        t = Tempo(speed, rate, 1, offset=0.0)
        y = np.concatenate([c.pcm[:, 0] for c in t.push(AudioChunk(pts=0.0, pcm=x[:, None], epoch=0)) + t.flush()])
        r = int(OFFSET_SEARCH_S * rate)
        offsets = []
        for k in np.linspace(r, len(y) - OFFSET_SEG - r / speed - 1, OFFSET_PROBES).astype(int):
            ideal = int(k * speed)
            lo, hi = max(0, ideal - r), min(n, ideal + r + OFFSET_SEG)
            offsets.append(lo + int(np.argmax(np.correlate(x[lo:hi], y[k:k + OFFSET_SEG], "valid"))) - ideal)
        _OFFSETS[key] = float(np.median(offsets)) / rate
    return _OFFSETS[key]


class Tempo:
    """Stretches one contiguous run of chunks (one seek's worth) to `speed`; pitch is kept.
    `offset`: source_offset's (None: measured)."""

    def __init__(self, speed: float, rate: int, channels: int, offset: float | None = None):
        self.speed, self.rate, self.channels = float(speed), rate, channels
        self.offset = source_offset(self.speed, rate) if offset is None else offset
        self._layout = "stereo" if channels == 2 else "mono"
        g = av.filter.Graph()
        nodes = [g.add_abuffer(format="flt", layout=self._layout, sample_rate=rate, time_base=Fraction(1, rate))]
        nodes += [g.add("atempo", f"{f:.6f}") for f in atempo_factors(self.speed)]
        nodes.append(g.add("abuffersink"))
        g.link_nodes(*nodes).configure()
        self._graph = g
        self._pushed = 0  # source samples pushed in
        self._made = 0  # stretched samples handed out
        self._t0: float | None = None  # media time of the first source sample
        self._src = np.zeros((0, channels), np.float32)  # source samples not yet matched to output
        self._src_at = 0  # source index of _src[0]
        self._epoch = 0  # of the chunks pushed

    def push(self, chunk: AudioChunk) -> list[AudioChunk]:
        """Source chunk in, the stretched chunks that are ready out (the filter holds ~40 ms)."""
        if self._t0 is None:
            self._t0 = chunk.pts
        pcm = np.ascontiguousarray(chunk.pcm, dtype=np.float32)  # (n, channels)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="flt", layout=self._layout)
        frame.sample_rate, frame.time_base, frame.pts = self.rate, Fraction(1, self.rate), self._pushed
        self._pushed += len(pcm)
        self._src = np.concatenate([self._src, pcm])
        self._graph.push(frame)
        self._epoch = chunk.epoch
        return self._pull()

    def flush(self) -> list[AudioChunk]:
        """At the end of the stream: what the filter still holds (its last ~40–75 ms)."""
        if self._t0 is None:
            return []
        self._graph.push(None)
        return self._pull()

    def rest_of_source(self) -> np.ndarray:
        """After flush(): the source samples the filter's output fell short of (up to ~40 ms)."""
        rest, self._src = self._src, self._src[:0]
        return rest

    def _pull(self) -> list[AudioChunk]:
        out = []
        while True:
            try:
                f = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out.append(self._chunk(f.to_ndarray().reshape(-1, self.channels), self._epoch))
        return out

    def _chunk(self, pcm: np.ndarray, epoch: int) -> AudioChunk:
        """Output samples [made, made + n) stand for source samples [made·speed, (made + n)·speed)."""
        k0, k1 = self._made, self._made + len(pcm)
        s0, s1 = round(k0 * self.speed), round(k1 * self.speed)
        source = self._src[s0 - self._src_at : s1 - self._src_at]
        self._src, self._src_at = self._src[s1 - self._src_at :], s1  # (a view: the array is freed with it)
        self._made = k1
        t = self._t0 + s0 / self.rate
        return AudioChunk(pts=t + self.offset, pcm=pcm, epoch=epoch, speed=self.speed, source=source, source_pts=t)


def stretch(chunks: Iterable[AudioChunk], speed: float, rate: int, channels: int) -> Iterator[AudioChunk]:
    """The chunks at `speed` (unchanged at 1)."""
    if speed == 1.0:
        yield from chunks
        return
    tempo = Tempo(speed, rate, channels)
    last: list[AudioChunk] = []  # held back one: at the end it takes the rest of the source
    for c in chunks:
        out = last + tempo.push(c)
        yield from out[:-1]
        last = out[-1:]
    out = last + tempo.flush()
    if out:
        out[-1].source = np.concatenate([out[-1].source, tempo.rest_of_source()])
    yield from out
