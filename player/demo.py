"""The built-in synthetic test source: what the player plays when it is given no input file.

Owns the demo scene, its camera-like noise and its tone track, and nothing else (the decoder
thread turns it into a stream, see player/decode.py ``DemoFeed``):

- Scene: an ISP test chart pre-rendered once at init on a canvas 1.25x the frame (dead-leaves
  texture, Macbeth-like ColorChecker, stepped grey scale, R/G/B/grey ramps, 1-px and 2-px line
  pairs, Siemens star, zone plate, text). Each frame is an integer-offset slice of that canvas
  (a slow, smooth sinusoidal pan, so no resampling), one moving object pasted over it (a
  quartered disc on a slow figure-eight), and a small slate fixed to the frame's top-left corner:
  the frame number and a square that flashes white with each audio beep (A/V sync by eye/ear).
  The clean frame is the exact reference the HUD computes PSNR against.
- Noise: Poisson-Gaussian (variance a*x + b, x in [0, 1]), correlated across colour channels
  (shared component, rho = 0.3), stronger toward the bottom and the corners (gain map 1.0 -> 1.8),
  clipped and quantised to uint8 - the model of engine/noise.py ``camera``, done in numpy.
  ``noise_sigma_map`` / ``nominal_sigma`` give the std at mid-grey in 8-bit units.
- Audio: a 440 Hz sine at -12 dBFS, cross-faded into a 50 ms 1 kHz beep at every whole second;
  a pure function of the sample index (continuous across calls, periodic with the video loop).

Speed: ``frame(i)`` at 1280x720 costs a few ms on one core. Everything per-pixel that does not
change is precomputed: the canvas, its noise std (from a 256-entry LUT of the clean value) in
fixed point, and a bank of unit-variance, channel-correlated noise fields already multiplied by
the gain map, a little larger than the frame. Per frame: one copy for the clean frame, then in
int16 fixed point ``noisy = clip((noise[k, dy:, dx:] * std[pan] + (clean*64 + 32)) >> 6)``, i.e.
round(clean + z*std*gain) clipped, in five cheap vectorised passes into preallocated scratch.
The bank index k and its offset (dy, dx) change every frame (deterministically), so the noise is
fresh each frame; the offsets are at most 8 px from the alignment the gain was computed for,
which changes the local gain by about 2 % at most.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.synthetic import dead_leaves

__all__ = ["DemoSource", "SHOT", "READ", "CHANNEL_CORR", "GAIN_MAX", "COLORCHECKER_SRGB"]

# ---------------------------------------------------------------- noise model (x in [0, 1])
SHOT = 2.6e-3  # a: shot-noise variance per unit signal
READ = 2.0e-4  # b: read-noise variance (std ~3.6 in 8-bit units)
CHANNEL_CORR = 0.3  # rho: correlation of the noise across R, G, B
GAIN_MAX = 1.8  # gain map runs from 1.0 (top centre) to this (bottom corners)
# → std at mid-grey: ~9.9 (gain 1) ... ~17.8 (bottom corners), RMS over the frame ~12.2

_Z_BITS = 2  # noise field in fixed point: z*gain*4
_S_BITS = 4  # std in fixed point: std*16 (8-bit units)
_SHIFT = _Z_BITS + _S_BITS  # product scale 64: clean*64 + 32 + z*std*64 fits int16
_BANK_MARGIN = 16  # noise bank is this much larger than the frame: offsets 0..16
_Z_CLIP = 4.5  # unit noise clipped at ±4.5σ (keeps the fixed point in range; p ≈ 7e-6)
# The noisy frame is made in bands of this many rows, on up to BAND_THREADS threads (NumPy
# releases the GIL): one band's int16 scratch (≤ 0.7 MB at 1920 wide) stays in L2 across its five
# passes, and the bands run in parallel. One thread over the whole frame took 13.4 ms per 1080p
# frame here (2 cores), too slow for a 60 fps demo beside the player's other threads.
BAND_ROWS = 64
BAND_THREADS = min(4, os.cpu_count() or 1)
# Below this many pixels the bands run on the calling thread: the pool's hand-offs cost more than
# they save (300×200: 0.26 ms on one thread, 0.72 ms on two).
THREADS_ABOVE = 640 * 360

# ---------------------------------------------------------------- audio
TONE_HZ = 440.0
BEEP_HZ = 1000.0
TONE_DBFS = -12.0
BEEP_S = 0.050
BEEP_RAMP_S = 0.002

# ---------------------------------------------------------------- chart
BACKGROUND = 128  # flat mid-grey between the chart's elements
# The 24 ColorChecker patches, sRGB (D65), row by row (BabelColor averages).
COLORCHECKER_SRGB = np.array([
    [115, 82, 68], [194, 150, 130], [98, 122, 157], [87, 108, 67], [133, 128, 177], [103, 189, 170],
    [214, 126, 44], [80, 91, 166], [193, 90, 99], [94, 60, 108], [157, 188, 64], [224, 163, 46],
    [56, 61, 150], [70, 148, 73], [175, 54, 60], [231, 199, 31], [187, 86, 149], [8, 133, 161],
    [243, 243, 242], [200, 200, 200], [160, 160, 160], [122, 122, 121], [85, 85, 85], [52, 52, 52],
], dtype=np.uint8)

_TEXT_LINES = (  # the first six on the white card in decreasing sizes, the last two on the dark strip
    "RCD live denoise",
    "built-in demo  {w}x{h}  {fps:g} fps  seed {seed}",
    "The quick brown fox jumps over the lazy dog.",
    "Sphinx of black quartz, judge my vow. 0123456789",
    "Pack my box with five dozen liquor jugs. ISO 3200 f/2.8 1/60 s",
    "fine print: 1 l I | 0 O o  rn m  cl d  ,.;:!?  (%) [#] {{@}}",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "abcdefghijklmnopqrstuvwxyz 0123456789",
)


def _font(size: int):
    """Pillow's default font at a pixel size (scalable with FreeType, else the fixed bitmap)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(6, int(size)))
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


def _draw_text(region: np.ndarray, lines, fill, size, x: int = 0, y: int = 0, spacing: float = 1.3) -> None:
    """Draw lines of text into a uint8 (h, w, 3) region in place, top to bottom.

    size: one pixel size for all lines or one per line; each line's font shrinks until it fits
    the width, and lines that do not fit the height are left out.
    """
    from PIL import Image, ImageDraw

    h, w = region.shape[:2]
    if h < 6 or w < 6 or not lines:
        return
    sizes = list(size) if isinstance(size, (list, tuple)) else [size] * len(lines)
    img = Image.fromarray(np.ascontiguousarray(region))
    draw = ImageDraw.Draw(img)
    yy = y
    for line, sz in zip(lines, sizes):
        sz = max(6, int(sz))
        font = _font(sz)
        while sz > 6 and hasattr(font, "getlength") and font.getlength(line) > w - x - 1:
            sz = max(6, int(sz * 0.92))
            font = _font(sz)
        if yy + sz > h:
            break
        draw.text((x, yy), line, fill=tuple(int(c) for c in fill), font=font)
        yy += max(1, int(round(sz * spacing)))
    region[...] = np.asarray(img)


# ---------------------------------------------------------------- chart elements (uint8 (h, w, 3))
def _color_checker(h: int, w: int) -> np.ndarray:
    out = np.full((h, w, 3), 24, np.uint8)  # the chart's black surround
    gap = max(1, int(round(min(h / 4, w / 6) * 0.12)))
    s = int(min((w - 7 * gap) / 6, (h - 5 * gap) / 4))
    if s < 1:
        return np.full((h, w, 3), BACKGROUND, np.uint8)
    oy = (h - (4 * s + 3 * gap)) // 2
    ox = (w - (6 * s + 5 * gap)) // 2
    for k, c in enumerate(COLORCHECKER_SRGB):
        row, colm = divmod(k, 6)
        y = oy + row * (s + gap)
        x = ox + colm * (s + gap)
        out[y:y + s, x:x + s] = c
    return out


def _grey_steps(h: int, w: int, n: int = 12) -> np.ndarray:
    levels = np.rint(np.linspace(0, 255, n)).astype(np.uint8)
    idx = np.minimum((np.arange(w) * n) // max(w, 1), n - 1)
    return np.broadcast_to(levels[idx][None, :, None], (h, w, 3)).copy()


def _ramps(h: int, w: int) -> np.ndarray:
    """Four horizontal 0→255 bars, top to bottom: grey, red, green, blue."""
    out = np.full((h, w, 3), BACKGROUND, np.uint8)
    ramp = np.rint(np.linspace(0, 255, max(w, 1))).astype(np.uint8)[:w]
    bars = [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    bh = h / 4.0
    for k, m in enumerate(bars):
        a, b = int(round(k * bh)), int(round((k + 1) * bh))
        gap = 1 if b - a > 4 else 0
        out[a:b - gap] = ramp[None, :, None] * np.array(m, np.uint8)[None, None, :]
    return out


_LINE_GROUPS = ((1, 1), (1, 2), (1, 4), (2, 2), (2, 3), (2, 4), (3, 3), (4, 4))  # (line px, gap px)


def _line_pairs(h: int, w: int) -> np.ndarray:
    """Black lines on white at several widths/spacings; vertical lines on top, horizontal below."""
    out = np.full((h, w, 3), BACKGROUND, np.uint8)
    ng = len(_LINE_GROUPS)
    label_h = max(0, int(h * 0.12)) if h >= 60 else 0
    cell_w = w // ng
    row_h = (h - label_h) // 2
    pad = max(1, cell_w // 10)
    if cell_w - 2 * pad < 4 or row_h - 2 * pad < 4:
        return out
    labels = []
    for g, (lw, gap) in enumerate(_LINE_GROUPS):
        period = lw + gap
        x0, x1 = g * cell_w + pad, (g + 1) * cell_w - pad
        for row in range(2):
            y0, y1 = row * row_h + pad, (row + 1) * row_h - pad
            block = np.full((y1 - y0, x1 - x0), 255, np.uint8)
            if row == 0:
                block[:, (np.arange(x1 - x0) % period) < lw] = 0
            else:
                block[(np.arange(y1 - y0) % period) < lw, :] = 0
            out[y0:y1, x0:x1] = block[..., None]
        labels.append((x0, f"{lw}/{gap}"))
    if label_h:
        strip = out[2 * row_h:]
        for x0, text in labels:
            _draw_text(strip[:, x0:x0 + cell_w - pad], [text], (0, 0, 0), label_h * 0.8)
    return out


def _siemens_star(h: int, w: int, spokes: int = 36, ss: int = 3) -> np.ndarray:
    out = np.full((h, w, 3), BACKGROUND, np.uint8)
    d = min(h, w)
    if d < 8:
        return out
    R = d / 2.0 - 1.0
    sub = (np.arange(d * ss, dtype=np.float32) + 0.5) / ss - d / 2.0
    yy, xx = sub[:, None], sub[None, :]
    theta = np.arctan2(yy, xx)
    white = np.sin(theta * (spokes / 2)) > 0
    inside = (yy * yy + xx * xx) <= R * R
    val = np.where(inside, np.where(white, 255.0, 0.0), float(BACKGROUND)).astype(np.float32)
    val = val.reshape(d, ss, d, ss).mean(axis=(1, 3))
    oy, ox = (h - d) // 2, (w - d) // 2
    out[oy:oy + d, ox:ox + d] = np.rint(val).astype(np.uint8)[..., None]
    return out


def _zone_plate(h: int, w: int) -> np.ndarray:
    """Circular zone plate cos(k r²), reaching Nyquist (0.5 cycles/px) at the square's edge."""
    out = np.full((h, w, 3), BACKGROUND, np.uint8)
    d = min(h, w)
    if d < 8:
        return out
    half = d / 2.0
    c = np.arange(d, dtype=np.float64) + 0.5 - half
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    val = 127.5 + 127.5 * np.cos(math.pi / (2.0 * half) * r2)
    oy, ox = (h - d) // 2, (w - d) // 2
    out[oy:oy + d, ox:ox + d] = np.rint(val).astype(np.uint8)[..., None]
    return out


def _text_panel(h: int, w: int, lines) -> np.ndarray:
    """Black text on a white card in decreasing sizes, then white text on a dark strip."""
    out = np.full((h, w, 3), 235, np.uint8)
    if h < 10 or w < 20:
        return out
    split = int(h * 0.72)
    out[split:] = 30
    m = max(1, int(min(h, w) * 0.04))
    n_top = len(lines) - 2
    rel = [1.0, 0.8, 0.7, 0.6, 0.5, 0.42][:n_top]
    unit = (split - 2 * m) / (1.45 * sum(rel))
    _draw_text(out[m:split, m:w - m], lines[:n_top], (0, 0, 0), [unit * f for f in rel], spacing=1.45)
    _draw_text(out[split + m:, m:w - m], lines[n_top:], (240, 240, 240), (h - split - 2 * m) / (2 * 1.3))
    return out


# ---------------------------------------------------------------- the source
def _gain(y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Noise gain at frame coords (broadcasting y (n,1), x (1,m)): 1.0 top centre → GAIN_MAX at
    the bottom corners (vignetting-like plus a vertical gradient), clipped to [1, GAIN_MAX]."""

    def f(yy, xx):
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        ny = (yy - cy) / max(cy, 0.5)
        nx = (xx - cx) / max(cx, 0.5)
        v = yy / max(h - 1, 1)
        return 0.6 * (nx * nx + ny * ny) / 2.0 + 0.4 * v

    fy = f(np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :])
    lo, hi = float(fy.min()), float(fy.max())
    if hi - lo < 1e-12:
        return np.ones(np.broadcast_shapes(np.shape(y), np.shape(x)), np.float32)
    g = 1.0 + (GAIN_MAX - 1.0) * (f(y, x) - lo) / (hi - lo)
    return np.clip(g, 1.0, GAIN_MAX).astype(np.float32)


class DemoSource:
    """Synthetic ISP test-chart video with realistic noise, plus a sync tone track.

    ``frame(i)`` → (noisy, clean), both fresh uint8 (H, W, 3) arrays; ``audio(start, n)`` →
    float32 (n, channels). Deterministic in (seed, i) / sample index. Frame indices wrap modulo
    ``num_frames`` (``loop=True``, the default); with ``loop=False`` an index outside the clip
    raises IndexError and audio past the end is silence. Calls are serialised by a lock (shared
    scratch buffers), so one instance may be used from several threads.
    """

    name = "demo"

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0, duration: float = 20.0,
                 seed: int = 0, sample_rate: int = 48000, channels: int = 2, *, loop: bool = True,
                 shot: float = SHOT, read: float = READ, channel_corr: float = CHANNEL_CORR,
                 bank_size: int | None = None, slate: bool = True):
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if fps <= 0 or duration <= 0 or sample_rate <= 0 or channels < 1:
            raise ValueError("fps, duration, sample_rate and channels must be positive")
        if not 0.0 <= channel_corr <= 1.0 or shot < 0 or read < 0:
            raise ValueError("need shot >= 0, read >= 0, 0 <= channel_corr <= 1")
        self.width, self.height = int(width), int(height)
        self.fps, self.duration = float(fps), float(duration)
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.seed, self.loop = int(seed), bool(loop)
        self.num_frames = max(1, int(round(self.duration * self.fps)))
        self.shot, self.read, self.channel_corr = float(shot), float(read), float(channel_corr)
        H, W = self.height, self.width
        self._lock = threading.Lock()

        # ---- the chart canvas (1.25x the frame) and the pan path
        self._my, self._mx = int(round(H * 0.125)), int(round(W * 0.125))
        self.canvas = self._render_canvas(H + 2 * self._my, W + 2 * self._mx)
        t = np.arange(self.num_frames, dtype=np.float64) / self.num_frames  # loop phase
        cycles = max(1, int(round(self.duration / 20.0)))  # ~20 s per pan cycle, seamless loop
        self._pan_x = (self._mx + np.rint(self._mx * np.sin(2 * np.pi * cycles * t))).astype(np.int64)
        self._pan_y = (self._my + np.rint(self._my * np.sin(2 * np.pi * 2 * cycles * t + 0.7))).astype(np.int64)

        # ---- the moving object: a quartered disc on a figure-eight over the frame
        self._obj_color, self._obj_alpha, self._obj_r = self._render_object(max(2, int(round(0.07 * min(H, W)))))
        ro = self._obj_r
        ax, ay = max(0.0, W / 2.0 - ro - 1) * 0.85, max(0.0, H / 2.0 - ro - 1) * 0.8
        self._obj_x = np.rint(W / 2.0 + ax * np.sin(2 * np.pi * cycles * t + 1.3)).astype(np.int64) - ro
        self._obj_y = np.rint(H / 2.0 + ay * np.sin(2 * np.pi * 2 * cycles * t)).astype(np.int64) - ro

        # ---- the slate: frame number + A/V sync flash, fixed to the frame's top-left corner
        self._slate = self._render_slate_glyphs(H, W) if slate else None

        # ---- noise: std LUT of the clean value, fixed-point canvas std, gain, noise bank
        x = np.arange(256, dtype=np.float64) / 255.0
        self.std_lut = (np.sqrt(self.shot * x + self.read) * 255.0).astype(np.float32)  # 8-bit units
        self._sq_lut = np.rint(self.std_lut * (1 << _S_BITS)).astype(np.int16)
        self._c_lut = (np.arange(256, dtype=np.int16) << _SHIFT) + np.int16(1 << (_SHIFT - 1))
        z_clip = _Z_CLIP
        limit = 32767 - int(self._c_lut[-1])  # the product z*std*64 must leave room for clean*64+32
        zmax = limit / (float(self._sq_lut.max()) * GAIN_MAX * (1 << _Z_BITS) + 1e-9)
        if zmax < 2.0:
            raise ValueError(f"noise too strong for the fixed-point path (std at white {self.std_lut[-1]:.1f})")
        z_clip = min(z_clip, zmax - 0.5)
        self._sq_canvas = self._sq_lut[self.canvas]  # (CH, CW, 3) int16
        self._c_canvas = self._c_lut[self.canvas]

        self.gain_map = _gain(np.arange(H, dtype=np.float64)[:, None], np.arange(W, dtype=np.float64)[None, :], H, W)
        self.noise_sigma_map = (float(np.sqrt(self.shot * 0.5 + self.read) * 255.0) * self.gain_map).astype(np.float32)
        self.nominal_sigma = float(np.sqrt(np.mean(self.noise_sigma_map.astype(np.float64) ** 2)))

        M = _BANK_MARGIN
        K = bank_size if bank_size else (6 if H * W <= 1920 * 1088 else 3)
        rng = np.random.default_rng([self.seed, 1])
        half = M // 2
        gain_ext = _gain(np.arange(-half, H + M - half, dtype=np.float64)[:, None],
                         np.arange(-half, W + M - half, dtype=np.float64)[None, :], H, W)
        gain_ext = (gain_ext * np.float32(1 << _Z_BITS))[..., None]
        a, b = np.float32(math.sqrt(1.0 - self.channel_corr)), np.float32(math.sqrt(self.channel_corr))
        self._bank = np.empty((K, H + M, W + M, 3), np.int16)
        for k in range(K):
            z = rng.standard_normal((H + M, W + M, 3), dtype=np.float32)
            z *= a
            z += b * rng.standard_normal((H + M, W + M, 1), dtype=np.float32)
            np.clip(z, -z_clip, z_clip, out=z)
            z *= gain_ext
            np.rint(z, out=z)
            self._bank[k] = z
        # per frame: bank index (never the same twice in a row) and offset within the margin
        step = rng.integers(1, K, self.num_frames) if K > 1 else np.zeros(self.num_frames, np.int64)
        self._nk = np.cumsum(step) % K
        self._ndy = rng.integers(0, M + 1, self.num_frames)
        self._ndx = rng.integers(0, M + 1, self.num_frames)
        self._scratch = np.empty((H, W, 3), np.int16)
        self._bands = [(r, min(H, r + BAND_ROWS)) for r in range(0, H, BAND_ROWS)]
        self._pool = None  # ThreadPoolExecutor, made on first use (close() ends it)

        # ---- audio
        self._loop_samples = max(1, int(round(self.num_frames / self.fps * self.sample_rate)))
        self._amp = 10.0 ** (TONE_DBFS / 20.0)

    # ------------------------------------------------------------ rendering at init
    def _render_canvas(self, ch: int, cw: int) -> np.ndarray:
        canvas = np.full((ch, cw, 3), BACKGROUND, np.uint8)
        rng = np.random.default_rng([self.seed, 0])

        def rect(u0, v0, u1, v1):
            return int(round(v0 * ch)), int(round(v1 * ch)), int(round(u0 * cw)), int(round(u1 * cw))

        def place(r, img_fn):
            y0, y1, x0, x1 = r
            if y1 - y0 >= 1 and x1 - x0 >= 1:
                canvas[y0:y1, x0:x1] = img_fn(y1 - y0, x1 - x0)

        lines = [s.format(w=self.width, h=self.height, fps=self.fps, seed=self.seed) for s in _TEXT_LINES]
        place(rect(0.02, 0.03, 0.40, 0.60), lambda h, w: dead_leaves(h, w, rng, background=BACKGROUND))
        place(rect(0.42, 0.03, 0.72, 0.40), _color_checker)
        place(rect(0.74, 0.03, 0.98, 0.40), lambda h, w: _text_panel(h, w, lines))
        place(rect(0.42, 0.43, 0.98, 0.52), _grey_steps)
        place(rect(0.42, 0.55, 0.98, 0.71), _ramps)
        place(rect(0.42, 0.74, 0.98, 0.97), _line_pairs)
        place(rect(0.02, 0.63, 0.20, 0.97), _siemens_star)
        place(rect(0.22, 0.63, 0.40, 0.97), _zone_plate)
        return canvas

    @staticmethod
    def _render_object(r: int, ss: int = 4):
        """Quartered disc (black / orange) with a white rim: premultiplied colour and 1-alpha."""
        d = 2 * r + 1
        sub = (np.arange(d * ss, dtype=np.float32) + 0.5) / ss - d / 2.0
        yy, xx = sub[:, None], sub[None, :]
        rr = np.sqrt(yy * yy + xx * xx)
        inside = (rr <= r).astype(np.float32)
        rim = (rr > r * 0.86).astype(np.float32)
        quad = ((yy > 0) ^ (xx > 0)).astype(np.float32)
        orange = np.array([245, 130, 20], np.float32)
        rgb = quad[..., None] * orange + (1 - quad[..., None]) * np.float32(15)
        rgb = rgb * (1 - rim[..., None]) + rim[..., None] * np.float32(250)
        pre = (rgb * inside[..., None]).reshape(d, ss, d, ss, 3).mean(axis=(1, 3))
        alpha = inside.reshape(d, ss, d, ss).mean(axis=(1, 3))
        return pre.astype(np.float32), (1.0 - alpha)[..., None].astype(np.float32), r

    @staticmethod
    def _render_slate_glyphs(H: int, W: int):
        """Pre-rendered white-on-black digits for the frame counter; None if the frame is too small."""
        hb = max(10, int(round(H * 0.045)))
        dw = max(6, int(round(hb * 0.62)))
        ndig = 5
        m = max(1, hb // 8)
        bw = hb + m + ndig * dw + m
        if hb + 2 * m > H // 3 or bw > W // 2:
            return None
        glyphs = np.zeros((10, hb, dw, 3), np.uint8)
        for g in range(10):
            tile = np.zeros((hb, dw, 3), np.uint8)
            _draw_text(tile, [str(g)], (235, 235, 235), hb * 0.8, x=max(0, dw // 8), y=max(0, hb // 12))
            glyphs[g] = tile
        return {"hb": hb, "dw": dw, "m": m, "ndig": ndig, "glyphs": glyphs, "w": bw}

    # ------------------------------------------------------------ per frame
    def _index(self, i: int) -> int:
        i = int(i)
        if self.loop:
            return i % self.num_frames
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} outside 0..{self.num_frames - 1}")
        return i

    def pts(self, i: int) -> float:
        return i / self.fps

    def flash(self, i: int) -> bool:
        """Whether frame i's display interval overlaps a beep (the slate's square is white)."""
        t = self._index(i) / self.fps
        frac = t - math.floor(t)
        return frac < BEEP_S - 1e-9 or frac > 1.0 - 1.0 / self.fps + 1e-9

    def _compose_clean(self, j: int, out: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Write clean frame j into out; return the frame rectangles not taken from the canvas."""
        H, W = self.height, self.width
        oy, ox = int(self._pan_y[j]), int(self._pan_x[j])
        np.copyto(out, self.canvas[oy:oy + H, ox:ox + W])
        dirty = []
        # moving object, clipped to the frame
        d = self._obj_color.shape[0]
        y0, x0 = int(self._obj_y[j]), int(self._obj_x[j])
        a0, a1, b0, b1 = max(0, y0), min(H, y0 + d), max(0, x0), min(W, x0 + d)
        if a1 > a0 and b1 > b0:
            patch = out[a0:a1, b0:b1]
            sl = (slice(a0 - y0, a1 - y0), slice(b0 - x0, b1 - x0))
            blended = patch * self._obj_alpha[sl] + self._obj_color[sl]
            np.copyto(patch, np.rint(blended), casting="unsafe")
            dirty.append((a0, a1, b0, b1))
        s = self._slate
        if s is not None:
            hb, dw, m = s["hb"], s["dw"], s["m"]
            y, x = m, m
            box = out[y - m:y + hb + m, x - m:x - m + s["w"] + m]
            box[...] = 0
            box[m:m + hb, m:m + hb] = 255 if self.flash(j) else 40
            gx = x + hb + m
            for n, ch in enumerate(f"{j:0{s['ndig']}d}"[-s["ndig"]:]):
                out[y:y + hb, gx + n * dw:gx + (n + 1) * dw] = s["glyphs"][ord(ch) - 48]
            dirty.append((0, hb + 2 * m, 0, s["w"] + m))
        return dirty

    def clean(self, i: int) -> np.ndarray:
        """The clean reference frame i only (uint8 (H, W, 3), a fresh array)."""
        out = np.empty((self.height, self.width, 3), np.uint8)
        self._compose_clean(self._index(i), out)
        return out

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(noisy, clean) for frame i: fresh uint8 (H, W, 3) arrays; clean is the exact reference."""
        j = self._index(i)
        H, W = self.height, self.width
        clean = np.empty((H, W, 3), np.uint8)
        noisy = np.empty((H, W, 3), np.uint8)
        with self._lock:
            dirty = self._compose_clean(j, clean)
            args = (j, clean, noisy, dirty)
            if BAND_THREADS == 1 or H * W < THREADS_ABOVE:
                for band in self._bands:
                    self._noisy_rows(*band, *args)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(BAND_THREADS, thread_name_prefix="demo-noise")
                for f in [self._pool.submit(self._noisy_rows, *band, *args) for band in self._bands]:
                    f.result()
        return noisy, clean

    def _noisy_rows(self, r0: int, r1: int, j: int, clean: np.ndarray, noisy: np.ndarray, dirty) -> None:
        """Rows r0:r1 of noisy frame j from the canvas, the noise bank and the LUTs."""
        W = self.width
        oy, ox = int(self._pan_y[j]), int(self._pan_x[j])
        k, dy, dx = int(self._nk[j]), int(self._ndy[j]), int(self._ndx[j])
        z = self._bank[k, dy + r0:dy + r1, dx:dx + W]
        t = self._scratch[r0:r1]
        # t = z*gain*4 · std*16 + clean*64 + 32  (int16 fixed point, no overflow by construction)
        np.multiply(z, self._sq_canvas[oy + r0:oy + r1, ox:ox + W], out=t)
        np.add(t, self._c_canvas[oy + r0:oy + r1, ox:ox + W], out=t)
        for a0, a1, b0, b1 in dirty:  # pixels not from the canvas: std and offset from the LUTs
            a0, a1 = max(a0, r0), min(a1, r1)
            if a1 > a0:
                c = clean[a0:a1, b0:b1]
                tt = t[a0 - r0:a1 - r0, b0:b1]
                np.multiply(z[a0 - r0:a1 - r0, b0:b1], self._sq_lut[c], out=tt)
                tt += self._c_lut[c]
        np.right_shift(t, _SHIFT, out=t)  # floor((.. + 32) / 64) = round
        np.clip(t, 0, 255, out=t)
        np.copyto(noisy[r0:r1], t, casting="unsafe")

    def sigma_at(self, value: float) -> np.ndarray:
        """Noise std map (H, W) in 8-bit units for a flat clean value in 0..255 (before clipping)."""
        return (float(np.sqrt(self.shot * value / 255.0 + self.read) * 255.0) * self.gain_map).astype(np.float32)

    # ------------------------------------------------------------ audio
    def audio(self, start_sample: int, n: int) -> np.ndarray:
        """Samples [start_sample, start_sample + n) of the tone track: float32 (n, channels).

        440 Hz at -12 dBFS, cross-faded (2 ms raised-cosine ramps) into a 1 kHz beep for the
        first 50 ms of every whole second of the loop. Periodic with the video loop (loop=True);
        silence before 0 and, with loop=False, after the end.
        """
        n = max(0, int(n))
        idx = np.arange(int(start_sample), int(start_sample) + n, dtype=np.int64)
        valid = idx >= 0
        if self.loop:
            idx = idx % self._loop_samples
        else:
            valid &= idx < self._loop_samples
        sr = self.sample_rate
        t = idx.astype(np.float64) / sr
        tone = np.sin(2.0 * np.pi * TONE_HZ * t)
        beep = np.sin(2.0 * np.pi * BEEP_HZ * t)
        pos = (idx % sr).astype(np.float64) / sr  # seconds into the current second
        ramp = BEEP_RAMP_S
        env = np.clip(np.minimum(pos, BEEP_S - pos) / ramp, 0.0, 1.0)
        env = np.where(pos < BEEP_S, 0.5 - 0.5 * np.cos(np.pi * env), 0.0)
        mono = self._amp * (tone * (1.0 - env) + beep * env) * valid
        return np.repeat(mono.astype(np.float32)[:, None], self.channels, axis=1)

    # ------------------------------------------------------------ misc
    def __len__(self) -> int:
        return self.num_frames

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __repr__(self) -> str:
        return (f"DemoSource({self.width}x{self.height}, {self.fps:g} fps, {self.num_frames} frames, "
                f"seed={self.seed}, nominal_sigma={self.nominal_sigma:.1f})")
