"""Playback speed for the sound: audio played faster or slower at the same pitch.

Owns the time stretch — FFmpeg's `atempo` filter through PyAV's filter graph, as mpv's
`scaletempo` does it — and the bookkeeping that keeps every stretched chunk tied to source time:
a chunk's `pts` is the media time of its first sample, each of its samples advances media time by
`speed / AUDIO_RATE`, and `source` holds the unstretched samples of the same span, so a
recording made at any speed keeps the source's sound.
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


class Tempo:
    """Stretches one contiguous run of chunks (one seek's worth) to `speed`; pitch is kept."""

    def __init__(self, speed: float, rate: int, channels: int):
        self.speed, self.rate, self.channels = float(speed), rate, channels
        layout = "stereo" if channels == 2 else "mono"
        self._layout = layout
        g = av.filter.Graph()
        nodes = [g.add_abuffer(format="flt", layout=layout, sample_rate=rate, time_base=Fraction(1, rate))]
        nodes += [g.add("atempo", f"{f:.6f}") for f in atempo_factors(self.speed)]
        nodes.append(g.add("abuffersink"))
        g.link_nodes(*nodes).configure()
        self._graph = g
        self._pushed = 0  # source samples pushed in
        self._made = 0  # stretched samples handed out
        self._t0: float | None = None  # media time of the first source sample
        self._src = np.zeros((0, channels), np.float32)  # source samples not yet matched to output
        self._src_at = 0  # source index of _src[0]

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
        out = []
        while True:
            try:
                f = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out.append(self._chunk(f.to_ndarray().reshape(-1, self.channels), chunk.epoch))
        return out

    def _chunk(self, pcm: np.ndarray, epoch: int) -> AudioChunk:
        """Output samples [made, made + n) stand for source samples [made·speed, (made + n)·speed)."""
        k0, k1 = self._made, self._made + len(pcm)
        s0, s1 = round(k0 * self.speed), round(k1 * self.speed)
        source = self._src[s0 - self._src_at : s1 - self._src_at]
        self._src, self._src_at = self._src[s1 - self._src_at :], s1  # (a view: the array is freed with it)
        self._made = k1
        return AudioChunk(pts=self._t0 + s0 / self.rate, pcm=pcm, epoch=epoch, speed=self.speed, source=source)


def stretch(chunks: Iterable[AudioChunk], speed: float, rate: int, channels: int) -> Iterator[AudioChunk]:
    """The chunks at `speed` (unchanged at 1)."""
    if speed == 1.0:
        yield from chunks
        return
    tempo = Tempo(speed, rate, channels)
    for c in chunks:
        yield from tempo.push(c)
