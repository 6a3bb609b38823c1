"""Synthetic clean images: the chart-like content that photographs lack.

Owns seeded generators of uint8 (h, w, 3) images built from what ISP test charts are made of —
dead-leaves texture, periodic gratings at any orientation and period down to 2 px, chirped zone
plates and text — for training (`engine.train --synthetic SHARE`) and for the player's built-in
chart (player/demo.py draws its dead-leaves tile with `dead_leaves`).

Why: the training photographs hold almost no high-contrast periodic detail near Nyquist, and a
denoiser trained on them alone reads 1-px line pairs and zone-plate rings as noise and wipes them
(−5 to −6 dB in those tiles of the built-in chart). Dead leaves are a known stand-in for natural
image statistics (scale-invariant occlusions); the gratings, zone plates and text are random in
period, orientation, phase, contrast and colour — never the demo chart's own layout.
"""

from __future__ import annotations

import math

import numpy as np

BACKGROUND = 128  # flat mid-grey behind dead leaves where no disc covers a pixel
# Gratings: periods log-uniform in this range (pixels). 2 px is Nyquist; above ~16 px a grating
# is a set of plain edges, which the photographs already have plenty of.
PERIOD_RANGE = (2.0, 16.0)
AXIS_ALIGNED = 0.5  # share of gratings at 0° or 90°, as on printed charts
SUPERSAMPLE = 4  # per axis, for the anti-aliased gratings and zone plates
# Text: characters drawn from this set at pixel sizes in TEXT_SIZES, Pillow's default font.
TEXT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,:;!?/()[]%#@lI|0Oo"
TEXT_SIZES = (8, 40)


def dead_leaves(h: int, w: int, rng: np.random.Generator, ss: int = 2, background: int = BACKGROUND) -> np.ndarray:
    """Dead-leaves texture: overlapping discs, radii ∝ r^-3 (scale invariant), random grey/colour.

    Vectorised: the top disc of every pixel is found on an ss× supersampled grid with one
    ``np.maximum.at`` per radius (disc j lies above all discs < j), then box-filtered down, which
    anti-aliases the edges.
    """
    if h < 4 or w < 4:
        return np.full((h, w, 3), background, np.uint8)
    rmin = 1.5
    rmax = max(rmin + 0.5, min(h, w) / 5.0)
    # density p(r) ∝ r^-3 on [rmin, rmax] by inverse CDF; the mean area sets the count (~4x coverage)
    e_r2 = 2.0 * math.log(rmax / rmin) / (rmin ** -2 - rmax ** -2)
    n = int(min(500_000, math.ceil(4.0 * h * w / (math.pi * e_r2))))
    u = rng.random(n)
    r = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5
    cy = rng.uniform(-r, h - 1 + r)
    cx = rng.uniform(-r, w - 1 + r)
    grey = rng.uniform(0.06, 0.94, n)
    chroma = rng.uniform(-1.0, 1.0, (n, 3)) * rng.uniform(0.0, 0.35, (n, 1))
    chroma *= rng.random((n, 1)) < 0.6  # 40 % pure greys
    col = np.clip(grey[:, None] + chroma, 0.0, 1.0) * 255.0
    hs, ws = h * ss, w * ss
    qy = np.rint(ss * cy + (ss - 1) / 2).astype(np.int64)  # centres on the supersampled grid
    qx = np.rint(ss * cx + (ss - 1) / 2).astype(np.int64)
    rs = np.maximum(1, np.rint(ss * r)).astype(np.int64)
    top = np.zeros(hs * ws, np.int32)  # 0: background, j + 1: disc j
    order = np.argsort(rs, kind="stable")
    for grp in np.split(order, np.flatnonzero(np.diff(rs[order])) + 1):
        R = int(rs[grp[0]])
        o = np.arange(-R, R + 1)
        dy, dx = np.meshgrid(o, o, indexing="ij")
        inside = dy * dy + dx * dx <= R * R + R // 2
        dy, dx = dy[inside], dx[inside]
        ys = qy[grp, None] + dy[None, :]
        xs = qx[grp, None] + dx[None, :]
        ok = (ys >= 0) & (ys < hs) & (xs >= 0) & (xs < ws)
        val = np.broadcast_to((grp + 1).astype(np.int32)[:, None], ok.shape)
        np.maximum.at(top, (ys * ws + xs)[ok], val[ok])
    lut = np.vstack([np.full((1, 3), float(background)), col]).astype(np.float32)
    img = lut[top].reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    return np.rint(img).astype(np.uint8)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark and a light RGB colour (0..255), contrast from faint to full, mostly near-grey."""
    contrast = rng.uniform(0.15, 1.0)
    mid = rng.uniform(contrast / 2, 1.0 - contrast / 2)
    tint = rng.uniform(-1.0, 1.0, 3) * rng.uniform(0.0, 0.2) * (rng.random() < 0.5)
    lo = np.clip(mid - contrast / 2 + tint, 0.0, 1.0) * 255.0
    hi = np.clip(mid + contrast / 2 + tint, 0.0, 1.0) * 255.0
    return lo, hi


def _supersampled_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (h·S, 1) and (1, w·S) of the sub-samples of an S× supersampled grid."""
    s = SUPERSAMPLE
    y = (np.arange(h * s, dtype=np.float32) + 0.5) / s
    x = (np.arange(w * s, dtype=np.float32) + 0.5) / s
    return y[:, None], x[None, :]


def _paint(profile: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: int, w: int) -> np.ndarray:
    """A supersampled profile in [0, 1] (h·S, w·S) → box-filtered uint8 (h, w, 3) between lo and hi."""
    s = SUPERSAMPLE
    t = profile.reshape(h, s, w, s).mean(axis=(1, 3))[..., None]  # (h, w, 1) in [0, 1]
    return np.rint(lo + t * (hi - lo)).astype(np.uint8)


def grating(h: int, w: int, rng: np.random.Generator, period: float | None = None,
            angle: float | None = None) -> np.ndarray:
    """Square- or sine-wave lines with random phase, duty and colours. period (pixels): log-uniform
    in PERIOD_RANGE unless given; angle (radians, 0 = lines across x, i.e. vertical lines): random."""
    if period is None:
        period = math.exp(rng.uniform(*np.log(PERIOD_RANGE)))
    if angle is None:
        angle = rng.choice([0.0, math.pi / 2]) if rng.random() < AXIS_ALIGNED else rng.uniform(0.0, math.pi)
    y, x = _supersampled_grid(h, w)
    # Axis-aligned lines start on a pixel edge, as rendered test patterns do: a random sub-pixel
    # phase would box-filter a 2-px grating to flat grey.
    shift = float(rng.integers(0, math.ceil(period))) if angle in (0.0, math.pi / 2) else rng.uniform(0, period)
    u = (x * math.cos(angle) + y * math.sin(angle) + shift) / period  # (h·S, w·S) in cycles
    if rng.random() < 0.7:  # square wave, as printed line pairs
        profile = ((u % 1.0) < rng.uniform(0.3, 0.7)).astype(np.float32)
    else:
        profile = 0.5 + 0.5 * np.cos(2.0 * math.pi * u)
    return _paint(profile, *_two_colours(rng), h, w)


def zone_plate(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """cos(k·r² + φ) around a random centre, k such that the local frequency stays ≤ Nyquist in the patch."""
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    r_max = math.hypot(max(cy, h - cy), max(cx, w - cx))
    k = math.pi / (2.0 * r_max) * rng.uniform(0.3, 1.0)  # frequency k·r/π ≤ 0.5 cycles/px at r_max
    y, x = _supersampled_grid(h, w)
    profile = 0.5 + 0.5 * np.cos(k * ((y - cy) ** 2 + (x - cx) ** 2) + rng.uniform(0, 2 * math.pi))
    return _paint(profile, *_two_colours(rng), h, w)


def text(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Lines of random characters, one random size and colour pair per patch."""
    from PIL import Image, ImageDraw, ImageFont

    lo, hi = _two_colours(rng)
    ink, paper = (lo, hi) if rng.random() < 0.6 else (hi, lo)
    img = Image.new("RGB", (w, h), tuple(int(v) for v in paper))
    size = int(rng.integers(*TEXT_SIZES))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    chars = np.array(list(TEXT_CHARS))
    for y in range(int(rng.integers(0, size)) - size // 2, h, int(size * rng.uniform(1.0, 1.5))):
        line = "".join(rng.choice(chars, int(w / (0.4 * size)) + 2))
        draw.text((int(rng.integers(-size, 1)), y), line, fill=tuple(int(v) for v in ink), font=font)
    return np.asarray(img, dtype=np.uint8).copy()


PATTERNS = (grating, grating, zone_plate, text)  # gratings twice: the commonest chart element


def chart_image(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One training image: a dead-leaves ground with one to four random pattern patches on it."""
    img = dead_leaves(h, w, rng)
    for _ in range(int(rng.integers(1, 5))):
        ph, pw = (int(rng.integers(min(s, 24), s + 1)) for s in (h, w))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        img[y : y + ph, x : x + pw] = PATTERNS[int(rng.integers(len(PATTERNS)))](ph, pw, rng)
    return img


def chart_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """n seeded images of size×size (the same n, size and seed give the same images)."""
    rng = np.random.default_rng(seed)
    return [chart_image(size, size, rng) for _ in range(n)]
