"""The noise probe: what the 16×16 square of a frame pair under the pointer holds.

Owns reading the square (luma and chroma σ, mean RGB; original → tuned), its temporal noise over
the frames it has seen, and the probe's command value. A tuning engineer reads noise on flat
patches — a chart's grey patches, a wall, sky — and noise varies over a frame, which one
frame-wide estimate cannot say. On a still shot the temporal σ is the noise from frame to frame
(flicker after denoising: what a per-frame denoiser leaves for video). Pure NumPy: the main
thread reads it for the HUD (two 16×16 patches a frame).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.compose import LUMA_WEIGHTS
from player import controls as ctl

PROBE_SIZE = 16  # the square, pixels a side: 256 samples a channel read σ to about ±4 % (1/√512)
PROBE_FRAMES = 16  # the temporal σ's window: about half a second at 30 fps, 15 degrees of freedom a pixel
PROBE_FRAMES_MIN = 4  # fewer frames than this: no temporal σ yet


def parse_probe(value: str) -> tuple[int, int] | None:
    """`set probe X,Y` (frame pixels) or `set probe no`."""
    if value == "no":
        return None
    try:
        x, y = (int(v) for v in value.split(","))
    except ValueError:
        raise ctl.CommandError(f"probe needs X,Y in frame pixels (e.g. 640,360) or no, got {value!r}") from None
    return x, y


@dataclass(frozen=True)
class ProbeReading:
    """What the noise probe read: the square's centre and size (frame pixels), and original → tuned
    the standard deviation of its luma (BT.709 Y) and of its chroma (RGB − Y, the channels' RMS) —
    on a flat patch, the noise in the two parts the luma and chroma gains scale — and its mean RGB,
    in 8-bit codes."""

    x: int
    y: int
    size: int
    luma_sigma: tuple[float, float]
    chroma_sigma: tuple[float, float]
    mean_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    temporal_sigma: tuple[float, float] | None = None  # luma's σ over frames, RMS over the square's pixels
    frames: int = 1  # the frames the temporal σ is over
    nits: tuple[float, float] | None = None  # HDR video: the mean light on the display it was graded for

    @property
    def lines(self) -> list[str]:
        """The HUD's two lines: the square's σ, then its temporal σ (once there are frames enough)
        and mean."""
        (lo, lt), (co, ct) = self.luma_sigma, self.chroma_sigma
        mo, mt = (" ".join(str(round(v)) for v in m) for m in self.mean_rgb)
        temporal = "" if self.temporal_sigma is None else (
            f"temporal σ {self.temporal_sigma[0]:5.2f} → {self.temporal_sigma[1]:5.2f} ({self.frames} frames)  ")
        nits = "" if self.nits is None else f" ({self.nits[0]:.0f} → {self.nits[1]:.0f} nits)"
        return [f"probe {self.x},{self.y} {self.size}×{self.size}: luma σ {lo:5.2f} → {lt:5.2f}  chroma σ {co:5.2f} → {ct:5.2f}",
                f"      {temporal}mean {mo} → {mt}{nits}"]


class ProbeHistory:
    """The square's luma in the frames the probe has read at one position, for the temporal σ: the
    last PROBE_FRAMES frames, one entry a frame (a frame read again — paused, re-blended — replaces
    its own), cleared by a jump in time (a seek, a loop's wrap: the frame's epoch or an earlier
    time) and by a new position."""

    def __init__(self):
        self._frames: deque = deque(maxlen=PROBE_FRAMES)  # (epoch, pts, (x, y), luma (2, n): original, tuned)

    def add(self, epoch: int, pts: float, at: tuple[int, int], luma: np.ndarray) -> None:
        last = self._frames[-1] if self._frames else None
        if last is not None and (last[0] != epoch or last[2] != at or pts < last[1]):
            self._frames.clear()
        elif last is not None and pts == last[1]:
            self._frames.pop()
        self._frames.append((epoch, pts, at, luma))

    def temporal(self) -> tuple[tuple[float, float] | None, int]:
        """(original, tuned) luma σ over the frames, RMS over the pixels, and how many frames; None
        under PROBE_FRAMES_MIN."""
        n = len(self._frames)
        if n < PROBE_FRAMES_MIN:
            return None, n
        stack = np.stack([f[3] for f in self._frames])  # (frames, 2, n)
        var = stack.var(axis=0, ddof=1)  # (2, n)
        return (round(float(np.sqrt(var[0].mean())), 3), round(float(np.sqrt(var[1].mean())), 3)), n


def probe(original: np.ndarray, tuned: np.ndarray, x: int, y: int, size: int = PROBE_SIZE,
          history: ProbeHistory | None = None, epoch: int = 0, pts: float = 0.0, nits=None) -> ProbeReading:
    """The noise probe's reading of the size × size square of both frames (uint8 (H, W, 3)) around
    (x, y), moved inside the frame; with a history, this frame (epoch, pts) is added to it and the
    temporal σ read from it; with `nits` (HDR video: tonemap.DisplayMap.nits), the mean in nits."""
    h, w = original.shape[:2]
    x0, y0 = min(max(x - size // 2, 0), max(w - size, 0)), min(max(y - size // 2, 0), max(h - size, 0))
    luma, chroma, mean, lumas, light = [], [], [], [], []
    for img in (original, tuned):
        square = img[y0:y0 + size, x0:x0 + size]
        if nits is not None:
            light.append(round(nits(square), 1))
        patch = square.reshape(-1, 3).astype(np.float64)  # (n, 3) codes
        y_ = patch @ np.asarray(LUMA_WEIGHTS)  # (n,)
        lumas.append(y_)
        luma.append(round(float(y_.std()), 3))
        chroma.append(round(float(np.sqrt((patch - y_[:, None]).var(axis=0).mean())), 3))
        mean.append(tuple(round(float(v), 2) for v in patch.mean(axis=0)))
    cx, cy = x0 + size // 2, y0 + size // 2
    temporal, frames = None, 1
    if history is not None:
        history.add(epoch, pts, (cx, cy), np.stack(lumas))
        temporal, frames = history.temporal()
    return ProbeReading(cx, cy, size, tuple(luma), tuple(chroma), tuple(mean), temporal, frames,
                        tuple(light) if light else None)
