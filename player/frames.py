"""Records that travel between the player's threads: decoded frames, audio chunks, prepared bases,
presented frames. Plain dataclasses; every record carries the epoch (seek generation) it belongs
to, so stale items are recognised and dropped after a seek (ffplay's serial)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.denoiser import Bases


@dataclass
class VideoFrame:
    index: int  # position in presentation order since the last seek target (for the render cache)
    pts: float  # seconds
    duration: float  # seconds until the next frame (nominal 1/fps)
    rgb: np.ndarray  # (H, W, 3) uint8, the source frame as decoded
    epoch: int
    clean: np.ndarray | None = None  # (H, W, 3) uint8 reference, only for the demo source
    fine: np.ndarray | None = None  # (H, W, 3) float32 in 8-bit units: a source over 8 bits unrounded (renders at 10 bits only)


@dataclass
class AudioChunk:
    pts: float  # seconds of the first sample
    pcm: np.ndarray  # (n, channels) float32 in [-1, 1], as played
    epoch: int
    speed: float = 1.0  # media seconds per played second: each sample advances the pts by speed / rate
    source: np.ndarray | None = None  # at speed ≠ 1: the unstretched samples of the same span (recordings)
    source_pts: float = 0.0  # ... and the time of its first sample
    run: int = 0  # the audio decoder's pass (DecodeThread.serial): a restart without a seek changes only this


@dataclass
class Prepared:
    """A frame after the backbone: everything the compositor needs, for any later blend."""

    frame: VideoFrame
    bases: Bases


@dataclass
class Presented:
    """What the compositor hands to the display through the single slot."""

    frame: VideoFrame
    tuned: np.ndarray  # (H, W, 3) uint8
    serial: int  # controls serial this frame was blended with
    blend_ms: float
    strength: float  # the strength knob's value: removed-noise std of the level mix (8-bit units), gains apart
    coeffs: tuple[float, ...]  # the level coefficients, before the luma and chroma gains
    gains: tuple[float, float] = (1.0, 1.0)  # (luma, chroma) gains applied on top of them
    bases: Bases | None = field(default=None, repr=False)
