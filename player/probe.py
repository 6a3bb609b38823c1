"""The noise probe: what the 16×16 square of a frame pair under the pointer holds.

Owns reading the square (luma and chroma σ, mean RGB; original → tuned) and the probe's command
value. A tuning engineer reads noise on flat patches — a chart's grey patches, a wall, sky — and
noise varies over a frame, which one frame-wide estimate cannot say. Pure NumPy: the main thread
reads it for the HUD (two 16×16 patches a frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.compose import LUMA_WEIGHTS
from player import controls as ctl

PROBE_SIZE = 16  # the square, pixels a side: 256 samples a channel read σ to about ±4 % (1/√512)


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

    @property
    def text(self) -> str:
        (lo, lt), (co, ct) = self.luma_sigma, self.chroma_sigma
        mo, mt = (" ".join(str(round(v)) for v in m) for m in self.mean_rgb)
        return (f"probe {self.x},{self.y} {self.size}×{self.size}: luma σ {lo:5.2f} → {lt:5.2f}  chroma σ "
                f"{co:5.2f} → {ct:5.2f}  mean {mo} → {mt}")


def probe(original: np.ndarray, tuned: np.ndarray, x: int, y: int, size: int = PROBE_SIZE) -> ProbeReading:
    """The noise probe's reading of the size × size square of both frames (uint8 (H, W, 3)) around
    (x, y), moved inside the frame."""
    h, w = original.shape[:2]
    x0, y0 = min(max(x - size // 2, 0), max(w - size, 0)), min(max(y - size // 2, 0), max(h - size, 0))
    luma, chroma, mean = [], [], []
    for img in (original, tuned):
        patch = img[y0:y0 + size, x0:x0 + size].reshape(-1, 3).astype(np.float64)  # (n, 3) codes
        y_ = patch @ np.asarray(LUMA_WEIGHTS)  # (n,)
        luma.append(round(float(y_.std()), 3))
        chroma.append(round(float(np.sqrt((patch - y_[:, None]).var(axis=0).mean())), 3))
        mean.append(tuple(round(float(v), 2) for v in patch.mean(axis=0)))
    return ProbeReading(x0 + size // 2, y0 + size // 2, size, tuple(luma), tuple(chroma), tuple(mean))
