"""Denoiser: uint8 RGB frames in, RCD bases out, and the blend of bases back to uint8 RGB.

Owns device and precision choice, padding, memory layout and preallocation for frame-by-frame
use. It knows nothing of players, threads or files beyond the checkpoint it loads.

How a frame is stored (the `Bases` record). The network's last layer is a 1×1 convolution at
half resolution, so the L raw maps are an affine function of the c1 features beneath it:
raw_p = A·d_p + b at every half-size pixel p (12·L values: 4 sub-pixels × L levels × RGB).
Noise Decorrelation is an L×L matrix T on the maps, and the blend is linear. So a frame is kept as
one matrix X = [d | 1 | noisy] of shape (h/2 · w/2, c1 + 13) — the features, a column of ones and
the noisy frame's 2×2 sub-pixels in 8-bit units — plus T and the AutoTune coefficients:
- the statistics ND and AutoTune need are [d | 1]ᵀ·X and the noisy frame's sum of squares (one
  pass, no map materialised; the noisy × noisy block of Xᵀ·X would be 40 % more work for a number);
- any blend is one product X·W with W (c1 + 13, 12) built from (A, b, T, coefficients);
- the maps themselves are the same numbers: `maps()` materialises them for inspection.
Storing c1 + 13 values per half-pixel instead of 12·L (+12) cuts the memory and the bytes each
blend reads by 2–3× — it is what makes every-frame blending and a deep render cache cheap.
On a CPU the two per-frame passes over X (filling its [1 | noisy] columns with the statistics
computed on the way, and the blend) run as C kernels where they build (engine/native.py), and the
backbone (float32 or bfloat16) runs with its elementwise passes fused (engine/fused.py); torch
computes the same numbers elsewhere. A model with a backbone for monochrome frames (RCDConfig.mono) runs it on
frames whose three channels are equal; it shares the colour one's head, so the bases are the same
kind of record and blend alike.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import math
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine import checkpoint, compose, fused, heads_np, native
from engine import decorrelate as nd
from engine.model import (MAD_TO_STD, MONO_WEIGHTS, PAD_MULTIPLE, RCDNet, estimate_noise_sigma, noise_grid_step,
                          sigma_from_detail_histogram, to_full_res)


def keep_freed_memory() -> None:
    """Tell glibc malloc to reuse freed frame-sized blocks instead of returning them to the OS.

    Every frame allocates tens of MB of activations; by default glibc maps and unmaps them, and
    the page faults on re-touching fresh pages cost more than the convolutions (measured 2.5× on
    the live model at 720p). Other threads get arenas of their own, grown in heaps of at most
    64 MB, where these settings did not keep the backbone fast (the mechanism is inferred, the
    effect measured: the live backbone at 960×540, 25 ms on the main thread and 38 ms on another
    thread, 27 ms there with a single arena; at 1280×720, 41–44, 63–68 and 44–47 ms). Hence one
    arena for every thread started from now on. No-op where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    libc.mallopt(m_arena_max, 1)


@dataclass
class Bases:
    """One frame's RCD bases (see the module docstring for the layout)."""

    x: torch.Tensor  # (h2·w2, c1 + 13) float32 on the device: [features | 1 | noisy sub-pixels, 0..255]
    transform: torch.Tensor  # (L, L) float64, CPU: Ñ = transform · raw (maps in 0..1 units)
    auto: torch.Tensor  # (L,) float64, CPU: AutoTune coefficients, sum to 1
    levels: tuple[float, ...]  # 8-bit units
    size: tuple[int, int]  # (h, w) of the frame
    padded: tuple[int, int]  # (hp, wp), multiples of 8
    sigma_est: float  # estimated noise std of the input, 8-bit units
    backbone_ms: float  # the network's pass (with the input's padding)
    infer_ms: float = 0.0  # the whole infer(): network, X's other columns, statistics, ND, AutoTune
    stats_ms: float = 0.0  # of which the statistics (covariance), Router, ND and AutoTune
    mono: bool = False  # the model's monochrome backbone made them (a frame with R = G = B)
    luma: bool = False  # ... from the frame's luma, its noise being luma only (see luma_noise)

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size()


# X's 12 noisy columns of a half-pixel are its 2×2 pixels' RGB, (dy, dx, colour) in that order:
# all of them, those of its left pixels (dx = 0) and those of its top pixels (dy = 0).
SUB_PIXELS = np.arange(12)
SUB_PIXELS_LEFT = np.array([0, 1, 2, 6, 7, 8])
SUB_PIXELS_TOP = np.arange(6)
# Free X buffers kept for reuse: what the frames in flight and queued at once in playback need
# (two lanes, the ready queue, the compositor's frame), not what a render cache holds (float16 copies).
X_POOL_MAX = 8


def is_mono_frame(rgb: np.ndarray) -> bool:
    """uint8 (H, W, 3) with R = G = B at every pixel. A sample of pixels first: a colour frame is
    told at once, a monochrome one is checked whole (2.4 ms at 720p on one core)."""
    return _grey(rgb[::16, ::16]) and _grey(rgb)


def _grey(rgb: np.ndarray) -> bool:
    return np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


# A colour frame whose noise is (nearly) the same in R, G and B at every pixel — luma noise, what a
# camera's chroma noise reduction leaves, and what 4:2:0 video holds at its finest scale (its chroma
# is sampled at half size, so its pixel-to-pixel noise is all luma) — is denoised from its luma by
# the monochrome backbone. The colour backbone reads noise shared by the three channels as picture
# and leaves most of it: CSet14's colour images with luma noise at σ 15 / 25 / 50, `live`, AutoTune:
# 26.94 / 23.04 / 17.61 dB from inputs 24.91 / 20.62 / 15.10, through the luma 29.93 / 27.17 /
# 23.07; with noise in Y, Cb and Cr and 4:2:0 chroma, 26.16 / 22.44 / 17.16 against 27.31 / 24.18 /
# 19.57 (weights/README.md). Told by the noise estimate (model.estimate_noise_sigma's: the median
# 2×2 diagonal detail) of G against that of (R − G)/√2 and (B − G)/√2: about 1 for noise drawn per
# channel, √(1 − c) for channels correlated by c (training's camera noise: c ≤ 0.5, 0.7 and up),
# under 0.12 for luma noise on CSet14 at σ ≥ 5 (quantisation and colour edges give the chroma
# planes a little), 0 for 4:2:0 video.
LUMA_NOISE_RATIO_MAX = 0.25
# ... and only where there is noise to speak of: on clean images the detail of G is texture (median
# σ̂ 3.0 on CSet14's, ratio 0 to 1), and below this the choice would flip on picture content.
LUMA_NOISE_SIGMA_MIN = 3.5
# The 2×2 blocks read: every 8th in each direction from 640×360 up (14 k at 720p: 0.6 ms on one
# core, where every 4th took 3), every one below.
LUMA_NOISE_GRID, LUMA_NOISE_GRID_FROM = 8, 640 * 360
# The luma the monochrome backbone reads (MONO_WEIGHTS, what it was trained on) in 16-bit fixed point:
# the weights × 2¹⁶, rounded so that they sum to 2¹⁶ (white stays 255). Exact in integers, so the
# native kernel (rcd_luma) and NumPy give the same bytes; within one 8-bit step of the float formula
# (one step apart on 0.03 % of CSet14's pixels, 0.05 % of uniform random ones).
LUMA_FIXED = (19595, 38470, 7471)


def noise_estimates(rgb: np.ndarray) -> tuple[float, float]:
    """(σ̂ of G, σ̂ of the chroma differences (R − G)/√2 and (B − G)/√2, their mean) of a uint8
    frame (H, W, 3) in 8-bit units, from the 2×2 blocks on a grid (LUMA_NOISE_GRID): median
    |diagonal detail| / MAD_TO_STD, as model.estimate_noise_sigma. (0, 0) for frames under 2×2."""
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return 0.0, 0.0
    step = LUMA_NOISE_GRID if h * w >= LUMA_NOISE_GRID_FROM else 2
    c = [rgb[dy:h:step, dx:w:step].astype(np.int16) for dy in (0, 1) for dx in (0, 1)]  # 4 × (n0, n1, 3)
    detail = (c[0] - c[1] - c[2] + c[3]).reshape(-1, 3)  # 2 × the Haar diagonal detail, per channel

    def sigma(v: np.ndarray) -> float:  # np.partition: one middle value, half np.median's time here
        return float(np.partition(np.abs(v), len(v) // 2)[len(v) // 2]) * 0.5 / MAD_TO_STD

    chroma = [sigma(detail[:, k] - detail[:, 1]) / math.sqrt(2.0) for k in (0, 2)]
    return sigma(detail[:, 1]), 0.5 * (chroma[0] + chroma[1])


# Hysteresis for a clip's frames in order (NoiseChoice): a frame of a clip read from its luma keeps
# that backbone until its estimates leave the band by these margins. σ̂ moves in steps of 0.74
# (half the median of integer details / MAD_TO_STD), so a clip whose noise sits at the threshold
# reads 2.97 and 3.71 by turns: luma noise σ 2.5 on a 720p clip switched backbones on 17 of 30
# frames, a flicker between two denoisers. One step of σ̂ more and 0.1 of the ratio (training's
# most correlated camera noise reads 0.7 and up) keep it on one.
LUMA_KEEP_SIGMA_MARGIN = 1.0
LUMA_KEEP_RATIO_MARGIN = 0.1


def luma_noise(rgb: np.ndarray, before: bool = False) -> bool:
    """Whether a colour frame's noise is luma only (see LUMA_NOISE_RATIO_MAX). before: the decision
    for the clip's previous frame; True widens the band by the LUMA_KEEP margins."""
    g, chroma = noise_estimates(rgb)
    if before:
        return (g >= LUMA_NOISE_SIGMA_MIN - LUMA_KEEP_SIGMA_MARGIN
                and chroma <= (LUMA_NOISE_RATIO_MAX + LUMA_KEEP_RATIO_MARGIN) * g)
    return g >= LUMA_NOISE_SIGMA_MIN and chroma <= LUMA_NOISE_RATIO_MAX * g


NOISE_MODES = ("auto", "rgb", "luma")  # Denoiser.infer's noise: which backbone reads a colour frame


class NoiseChoice:
    """Denoiser.infer's `noise` for each frame of one clip, called in display order: "auto" is
    decided here with the previous frame's decision (luma_noise's hysteresis), so the clip does not
    flicker between backbones; "rgb" and "luma" pass through. A model without a monochrome
    backbone has no choice to make (and skips the estimate)."""

    def __init__(self, noise: str = "auto", model_has_mono: bool = True):
        assert noise in NOISE_MODES, f"noise must be one of {NOISE_MODES}, got {noise!r}"
        self.noise, self.active = noise, noise == "auto" and model_has_mono
        self.luma = False  # the last frame's decision

    def __call__(self, rgb: np.ndarray) -> str:
        if not self.active:
            return self.noise
        if _grey(rgb[::16, ::16]):  # grey by its sample: infer takes the mono backbone whatever this says
            return "luma" if self.luma else "rgb"
        self.luma = luma_noise(rgb, before=self.luma)
        return "luma" if self.luma else "rgb"


def luma_frame(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W, 3) with R = G = B = the frame's BT.601 luma (LUMA_FIXED), into `out` where given
    (uint8, rgb's shape, C-contiguous): what the monochrome backbone reads."""
    out = np.empty(rgb.shape, np.uint8) if out is None else out
    if rgb.flags.c_contiguous and native.library() is not None:
        return native.luma(rgb, out)
    y = rgb[..., 0].astype(np.uint32) * LUMA_FIXED[0]  # (H, W)
    y += rgb[..., 1].astype(np.uint32) * LUMA_FIXED[1]
    y += rgb[..., 2].astype(np.uint32) * LUMA_FIXED[2]
    y += 1 << 15
    y >>= 16
    out[...] = y[..., None]
    return out


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch sees no CUDA device (torch.cuda.is_available() is False)")
    return torch.device(device)


F16_MAX = 65504.0  # the largest finite float16

# bfloat16 backbone on a CPU only when a timing probe finds it at least this much faster than
# float32: oneDNN runs bf16 natively with AVX-512-BF16 or AMX (about 5× for a 3×3 conv), but
# emulates it slowly on plain AVX-512 and not at all on AVX2 (20× slower on a Zen 3). Where it is
# native, a small margin is enough: bf16 costs at most 0.008 dB (CSet14, both models, σ 15–50,
# uint8 noisy frames through infer and an AutoTune blend; the fused bf16 path as torch's autocast
# within 0.001 dB). On a 2-core Xeon with AMX the live model's plain bf16 forward was 1.11–1.26×
# faster than the fused float32 one on one thread, so the earlier margin of 1.25 was a coin toss
# there; the fused bf16 forward is about 2× faster (engine/fused.py).
BF16_MIN_SPEEDUP = 1.05
# The probe times the model's own backbone on a frame this size: big enough for the convolutions
# to run as they do on video, small enough to cost well under a second even where bf16 is slow.
PROBE_SIZE = (256, 448)


def best_seconds(fn, runs: int = 2) -> float:
    """Fastest of `runs` calls of fn(), after one untimed call (it allocates and faults in buffers)."""
    fn()
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 convolutions on this CPU at all (AVX-512 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the query: stay in float32
        return False


def pick_winograd(dtype: torch.dtype, probe=None) -> bool:
    """Whether the fused backbone runs its residual blocks as native Winograd convolutions
    (engine/fused.py): where the kernels run AVX2, measured 1.5–2.2× oneDNN's convolutions; where
    they run AVX-512, only if `probe(wino) → seconds per backbone pass` finds it faster than
    oneDNN's AVX-512 convolutions (not measured on such a CPU here; no probe: oneDNN)."""
    if not fused.winograd_possible(dtype):
        return False
    default = fused.winograd(dtype)
    if default or probe is None:
        return default
    return probe(True) < probe(False)


def pick_dtype(device: torch.device, precision: str = "auto", probe=None) -> torch.dtype:
    """Backbone precision. CUDA: float16. CPU: float32, or bfloat16 where oneDNN supports it and
    `probe(dtype) → seconds per backbone pass` finds it BF16_MIN_SPEEDUP faster (no probe: float32).
    The statistics, ND and the blend stay in float32/float64 whatever the backbone runs in."""
    if precision != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cuda":
        return torch.float16
    if probe is None or not cpu_has_bf16():
        return torch.float32
    return torch.bfloat16 if probe(torch.float32) >= BF16_MIN_SPEEDUP * probe(torch.bfloat16) else torch.float32


class Denoiser:
    """A loaded model on a device: `infer(rgb) → Bases`, `blend(bases, mix) → uint8 RGB`."""

    def __init__(self, model: RCDNet, device: str = "auto", precision: str = "auto", meta: dict | None = None,
                 name: str = "model"):
        keep_freed_memory()
        self.device = pick_device(device)
        # Per-frame statistics (covariance → Router, ND, AutoTune) are a few float64 L×L matrices:
        # they run on the CPU whatever the device, from a copy of the heads' weights, in C where the
        # native kernels build (engine/csrc/heads.c), else in NumPy (engine/heads_np.py).
        model = model.eval()
        self.native_algebra = native.library() is not None
        self._heads = heads_np.StatsHeads(model, use_native=self.native_algebra)
        self.model = copy.deepcopy(model).to(self.device).to(memory_format=torch.channels_last)
        with torch.no_grad():  # the backbone reads 0..255 frames: the 1/255 lives in its first layer,
            for bb in self._backbones():  # which saves a pass over every input
                bb.inp.weight.mul_(1.0 / 255.0)
        # The blend on a CPU: the one-pass C kernel where it builds here (engine/native.py), else torch.
        self.native_blend = self.device.type == "cpu" and native.library() is not None
        self.native_stats = self.native_blend  # the fill of X and the statistics from the same library
        # The fused forward (engine/fused.py) where its kernels are here, in float32 or bfloat16; its
        # features go into X with the native fill, so it runs only beside native_stats. The precision
        # probe times what each precision would really run.
        # The residual blocks' kernel in float32 first: the precision probe times float32 with it.
        fused_fp32 = self.device.type == "cpu" and precision in ("auto", "fp32") and self._fused_runs(torch.float32)
        self.winograd = fused_fp32 and pick_winograd(torch.float32, lambda on: self._time_backbone(torch.float32, wino=on))
        self.dtype = pick_dtype(self.device, precision, probe=self._time_backbone)
        self.fused_backbone = self._fused_runs(self.dtype)
        self.winograd = self.winograd and self.fused_backbone and self.dtype == torch.float32
        self.cfg = model.cfg
        self.meta = dict(meta or {})
        self.name = name
        self.levels = tuple(float(v) for v in self.cfg.levels)
        head = self.model.backbone.head
        self.c1 = head.in_channels
        self._head_w = head.weight.detach().double().cpu().reshape(12 * self.cfg.num_levels, self.c1)  # (12L, c1)
        self._head_b = head.bias.detach().double().cpu()  # (12L,)
        # The padded-input buffers (the torch path's) per thread: the player infers several frames
        # at once from as many threads (player/worker.py); everything else infer() uses is per call.
        self._local = threading.local()
        # Freed X buffers of the last frame size, for the next frames (see _x_buffer).
        self._x_free: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._x_lock = threading.Lock()
        # The head as an affine map from X's first columns [d | 1] to every raw map value of a
        # half-pixel, indexed (sub-pixel·colour k = 3s + c, level i, column), in 0..1 units.
        l, c1 = self.cfg.num_levels, self.c1
        head = torch.cat([self._head_w, self._head_b[:, None]], dim=1).view(4, l, 3, c1 + 1)  # (s, i, c, d|1)
        self._raw_from_x_np = np.ascontiguousarray(head.permute(0, 2, 1, 3).reshape(12, l, c1 + 1).numpy(),
                                                   np.float64)  # (12, L, c1+1)
        # For blends (see _feature_weights), 255 × the head arranged for one product per coefficient
        # vector: by level (s, colour, d | 1), and by level with its colours mixed by the luma weights.
        h = 255.0 * head.numpy()  # (s, j, c, d|1)
        self._blend_h1 = np.ascontiguousarray(h.transpose(1, 0, 2, 3).reshape(l, 12 * (c1 + 1)))  # (L, 12(c1+1))
        luma = np.asarray(compose.LUMA_WEIGHTS)
        self._blend_h2 = np.ascontiguousarray(np.einsum("sjcf,c->jsf", h, luma).reshape(l, 4 * (c1 + 1)))  # (L, 4(c1+1))

    def _fused_runs(self, dtype: torch.dtype) -> bool:
        """Whether the fused forward can run in `dtype` here (beside the native fill, which takes its features)."""
        return self.native_stats and fused.available(self.model.backbone, dtype) == ""

    def _backbones(self) -> list:
        return [self.model.backbone] + ([self.model.backbone_mono] if self.model.cfg.mono else [])

    @property
    def backbone_kernel(self) -> str:
        """How the backbone runs, in words (bench, stats): fused, or torch's plain forward and why."""
        if self.fused_backbone and self.native_stats:
            blocks = "native Winograd 3×3 blocks" if self.winograd else "oneDNN conv + add"
            return f"fused ({blocks}, native skip joins; {str(self.dtype).replace('torch.', '')})"
        if self.device.type != "cpu" or self.dtype != torch.float32:
            return f"torch ({self.device.type}, {str(self.dtype).replace('torch.', '')})"
        return f"torch; fused path not used: {fused.available(self.model.backbone) or 'off'}"

    @property
    def blend_kernel(self) -> str:
        """Which code blends, in words (bench, HUD): the native kernel, or torch and why."""
        if self.native_blend:
            return f"native one-pass C kernel ({native.vector_isa()})"
        return "torch" if self.device.type != "cpu" else f"torch; native kernel not used: {native.why_not or 'off'}"

    @property
    def stats_kernel(self) -> str:
        """Where the statistics ND and AutoTune read are summed, in words (bench): in the native fill
        (on AMX tiles where the fused backbone's features are bfloat16), or by torch."""
        if not self.native_stats:
            return "torch"
        if self.fused_backbone and native.stats_on_tiles(self.c1, self.dtype):
            return "native fill, AMX tiles (bfloat16 features)"
        return f"native fill ({native.vector_isa()})"

    @torch.no_grad()
    def _time_backbone(self, dtype: torch.dtype, runs: int = 2, wino: bool | None = None) -> float:
        """Best of `runs` seconds for one backbone pass at PROBE_SIZE in `dtype` (after a warm-up);
        float32 through the fused path with its residual blocks on the Winograd kernel or not (wino;
        None: the choice made, self.winograd)."""
        g = torch.Generator().manual_seed(0)  # not the global RNG: loading a model must not move it
        x = torch.rand(1, 3, *PROBE_SIZE, generator=g).mul_(255.0).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        rgb = np.ascontiguousarray(x[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy())  # the same frame, uint8

        def once():
            if self._fused_runs(dtype):
                fused.features(self.model.backbone, rgb, *PROBE_SIZE, dtype,
                               wino=self.winograd if wino is None else wino)
                return
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
                self.model.backbone.features(x)

        return best_seconds(once, runs)

    @classmethod
    def load(cls, weights: str = "live", device: str = "auto", precision: str = "auto") -> "Denoiser":
        model, meta = checkpoint.load(weights)
        return cls(model, device, precision, meta, name=str(weights))

    # ---- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, rgb: np.ndarray, noise: str = "auto", fine: np.ndarray | None = None) -> Bases:
        """uint8 (H, W, 3) → Bases. One backbone pass, then statistics only.

        fine: the same frame at more than 8 bits, float32 (H, W, 3) in 8-bit units (a 10-bit
        source's, unrounded), where rgb is it rounded: the network and the statistics read rgb, and the
        blend's base is fine, so that a blend (blend(fine=True)) keeps the source's finer steps.

        noise: which backbone reads a colour frame, where the model has one for monochrome frames:
        "auto" the monochrome one on the frame's luma where its noise is luma only (luma_noise),
        "luma" always so, "rgb" never (the colour one). Monochrome frames take the monochrome one
        whatever this says. From the luma the bases hold luma residuals (R = G = B, as the
        monochrome backbone makes them) beside the colour frame: the blend adds them to it."""
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, f"need uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}"
        assert noise in NOISE_MODES, f"noise must be one of {NOISE_MODES}, got {noise!r}"
        t0 = time.perf_counter()
        h, w = rgb.shape[:2]
        hp, wp = h + (-h % PAD_MULTIPLE), w + (-w % PAD_MULTIPLE)
        if self.native_stats:  # the native fill (and the fused pass) read the uint8 frame as C-contiguous
            rgb = np.ascontiguousarray(rgb)
        mono = self.cfg.mono and is_mono_frame(rgb)
        luma = self.cfg.mono and not mono and (noise == "luma" or (noise == "auto" and luma_noise(rgb)))
        colour = rgb
        if luma:  # everything below reads the luma frame; X's noisy columns get the colour frame (the fill, or at the end)
            rgb = luma_frame(rgb, out=self._thread_buffer("luma", rgb.shape, lambda shape: np.empty(shape, np.uint8)))
        backbone = self.model.backbone_mono if mono or luma else self.model.backbone
        fused_pass = self.fused_backbone and self.native_stats  # reads the uint8 frame itself
        frame = None if fused_pass else self._padded_input(rgb, hp, wp)  # (hp, wp, 3) float32 0..255
        x_in = None if fused_pass else frame.permute(2, 0, 1)[None]  # (1, 3, hp, wp) channels_last view
        h2, w2 = hp // 2, wp // 2
        x = self._x_buffer(h2 * w2, self.c1 + 13)  # X = [d | 1 | noisy]
        d_view = x[:, : self.c1].view(1, h2, w2, self.c1).permute(0, 3, 1, 2)  # (1, c1, h2, w2) into X
        d1 = None  # features that native.fill copies into X, from the fused backbone
        if fused_pass:
            d1, feats = fused.features(backbone, rgb, hp, wp, self.dtype, wino=self.winograd)  # (1, c1, h2, w2), (1, F)
        elif self.dtype == torch.float32:
            _, feats = backbone.features(x_in, out=d_view)  # features land in X, uncopied
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                d_low, feats = backbone.features(x_in)  # (1, c1, hp/2, wp/2), (1, F)
            d_view.copy_(d_low)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        backbone_ms = (time.perf_counter() - t0) * 1000.0  # the network's pass; what follows is bookkeeping
        gram = None  # the statistics, where the fill computes them on its way (even sizes)
        colour_in_x = False  # X's noisy columns already hold the colour frame (the luma path)
        if self.native_stats:  # [1 | noisy] from the uint8 frame, the noise estimate and the statistics, one pass
            even = h % 2 == 0 and w % 2 == 0
            colour_in_x = luma and even  # (odd sizes: the statistics are read off X below, so X holds the luma till then)
            detail, gram = native.fill(x, self.c1, rgb, hp, wp, noise_grid_step(h, w), torch.get_num_threads(),
                                       d=d1, gram=True, head=self._raw_from_x_np if self.native_algebra and even else None,
                                       store=colour if colour_in_x else None)
            sigma = float(np.float32(sigma_from_detail_histogram(detail)))  # 8-bit units, float32 as the torch path's
        else:
            self._copy_noisy(x, frame, hp, wp)
            # 8-bit units: on a CPU the exact uint8 path (a histogram median), on a GPU where the frame is
            green = torch.from_numpy(rgb[None, :, :, 1]) if self.device.type == "cpu" else frame[None, :h, :w, 1]
            sigma = float(estimate_noise_sigma(green)[0])
        t_stats = time.perf_counter()
        cov = self._covariance(x, frame, h, w, hp, wp, gram)  # (L+1, L+1) of [raw maps; noisy], [0, 1] units
        # Router, ND and AutoTune: ~150 operations on L×L matrices (engine/heads_np.py)
        t, auto = self._heads(cov, feats[0].float().cpu().numpy(), sigma)
        t, auto = torch.from_numpy(t), torch.from_numpy(auto)  # (L, L), (L,) float64
        if fine is not None:  # the blend's base at the source's precision (the residuals barely see a quarter code)
            assert fine.shape == colour.shape and fine.dtype == np.float32, f"fine must be float32 {colour.shape}"
            if self.native_stats and fine.flags.c_contiguous:
                native.put_noisy(x, self.c1, fine, hp, wp, torch.get_num_threads())
            else:
                self._copy_noisy(x, self._padded_input(fine, hp, wp), hp, wp)
        elif luma and not colour_in_x:  # the statistics are the luma frame's, as the monochrome backbone was trained; the blend's base is the colour frame
            self._fill_noisy(x, colour, h, w, hp, wp)
        return Bases(x=x, transform=t, auto=auto, levels=self.levels, size=(h, w), padded=(hp, wp),
                     sigma_est=sigma, backbone_ms=backbone_ms, mono=mono, luma=luma,
                     infer_ms=(time.perf_counter() - t0) * 1000.0,
                     stats_ms=(time.perf_counter() - t_stats + (gram.seconds if gram else 0.0)) * 1000.0)

    def _x_buffer(self, rows: int, cols: int) -> torch.Tensor:
        """An uninitialised float32 X (rows, cols) on the device. On a CPU, the storage of an X that
        is no longer referenced anywhere, where one of this size is free: X is the largest thing a
        frame allocates (27 MB at 720p with `live`), and fresh memory is page-faulted in as it is
        first written — in 720p playback three quarters of the player's page faults, with the kernel
        zeroing pages 4–5 % of the CPU time, fell in the fill of X. The X handed out is a view of a
        pooled buffer; when the view's last reference goes (the Bases, the caches, the queues
        dropped it), a finaliser gives the buffer back."""
        if self.device.type != "cpu":
            return torch.empty(rows, cols, dtype=torch.float32, device=self.device)
        key = (rows, cols)
        with self._x_lock:
            free = self._x_free.get(key)
            buf = free.pop() if free else None
        if buf is None:
            buf = torch.empty(rows, cols, dtype=torch.float32)
        x = buf.view(rows, cols)  # its own Python object: when it dies, buf is free again
        weakref.finalize(x, self._x_release, key, buf)
        return x

    def _x_release(self, key: tuple[int, int], buf: torch.Tensor) -> None:
        with self._x_lock:
            if key not in self._x_free:  # a new frame size: the old size's buffers go
                self._x_free = {key: []}
            if len(self._x_free[key]) < X_POOL_MAX:
                self._x_free[key].append(buf)

    def _fill_noisy(self, x: torch.Tensor, rgb: np.ndarray, h: int, w: int, hp: int, wp: int) -> None:
        """X's [1 | noisy] columns from the uint8 frame rgb (replicate-padded to hp × wp)."""
        if self.native_stats:
            native.fill(x, self.c1, rgb, hp, wp, noise_grid_step(h, w), torch.get_num_threads())
            return
        self._copy_noisy(x, self._padded_input(rgb, hp, wp), hp, wp)

    def _copy_noisy(self, x: torch.Tensor, frame: torch.Tensor, hp: int, wp: int) -> None:
        """X's [1 | noisy] columns from the padded frame (hp, wp, 3) float32 0..255 (the torch path)."""
        h2, w2 = hp // 2, wp // 2
        x[:, self.c1] = 1.0
        noisy = x[:, self.c1 + 1 :].view(h2, w2, 2, 6)  # sub-pixel rows dy = 0, 1 of (dx, RGB)
        for dy in (0, 1):  # one copy per row parity: 6 contiguous floats at a time (1.4× faster than one 5-D copy)
            noisy[:, :, dy].copy_(frame.view(h2, 2, w2, 6)[:, dy])

    def _thread_buffer(self, name: str, shape: tuple[int, ...], make):
        """This thread's buffer `name` of `shape`, made by make(shape) once per shape (the last
        shape's is dropped): a frame-sized array made anew every frame is fresh pages, each a fault."""
        bufs = self._local.__dict__.setdefault(name, {})
        buf = bufs.get(shape)
        if buf is None:
            bufs.clear()
            buf = bufs[shape] = make(shape)
        return buf

    def _padded_input(self, rgb: np.ndarray, hp: int, wp: int) -> torch.Tensor:
        """Replicate-pad into a reused buffer: (hp, wp, 3) float32 in 0..255."""
        h, w = rgb.shape[:2]
        buf = self._thread_buffer("in_buf", (hp, wp, 3),
                                  lambda shape: torch.empty(shape, dtype=torch.float32, device=self.device))
        src = torch.from_numpy(rgb).to(self.device, non_blocking=True)
        buf[:h, :w].copy_(src)
        if hp > h:
            buf[h:, :w].copy_(buf[h - 1 : h, :w].expand(hp - h, w, 3))
        if wp > w:
            buf[:, w:].copy_(buf[:, w - 1 : w].expand(hp, wp - w, 3))
        return buf

    def _covariance(self, x: torch.Tensor, frame: torch.Tensor | None, h: int, w: int, hp: int, wp: int,
                    gram: native.Gram | None = None) -> np.ndarray:
        """Covariance (L+1, L+1) float64 of the L raw maps and the noisy frame over the real
        (unpadded) pixels, in [0, 1] units, from [d | 1]ᵀ·X (`gram` where the native fill has
        computed it; for an odd size, where padding splits the last row's or column's half-pixels,
        see _odd_moments). frame: the padded input buffer (hp, wp, 3), 0..255, which only the torch
        path reads (None beside the fused backbone)."""
        c1 = self.c1
        if gram is not None and gram.cov is not None:  # the fill computed the rest too (native.fill, head)
            return gram.cov
        h2, w2, wp2 = h // 2, w // 2, wp // 2
        m = float(h * w * 3)  # ([Σd; n] is the ones column)
        if gram is not None:  # from the native fill: [d | 1]ᵀ·X and Σ X² per column over the frame
            g = gram.g
            sq_noisy = float(gram.sq.numpy()[c1 + 1 :].sum()) / 255.0**2  # NumPy: a torch op costs more, run cold
        if h % 2 or w % 2:
            whole = None if gram is None else (g.numpy(), sq_noisy, SUB_PIXELS)
            return self._covariance_from_moments(self._odd_moments(x, h, w, wp, whole), m)
        if gram is None:
            g = _cross_gram(x[: h2 * wp2], c1 + 1)  # (c1+1, c1+13): over whole rows, padding columns too
            if wp2 > w2:  # minus the padding columns (at most 3 half-pixels per row)
                g -= _cross_gram(x[: h2 * wp2].view(h2, wp2, -1)[:, w2:].reshape(-1, c1 + 13), c1 + 1)
            rows = frame[:h, :w].reshape(h, w * 3)  # a view: each row of the buffer is contiguous
            # float32 per row (torch sums pairwise), float64 across rows; one float64 norm took 5× as long
            sq_noisy = float(torch.linalg.vecdot(rows, rows).double().sum()) / 255.0**2
        # The rest is L×L algebra on the host, float64: in C where it builds (0.37 → 0.02 ms a frame,
        # engine/csrc/heads.c; each NumPy call here runs cold, after the frame's passes: the fill runs
        # it in its own call, above), else NumPy (as torch ops it took 0.8 ms a frame).
        gn = g.numpy()
        if self.native_algebra:
            return native.gram_cov(gn, c1, self._raw_from_x_np, sq_noisy, m)
        return self._covariance_from_moments([(gn, sq_noisy, SUB_PIXELS)], m)

    def _odd_moments(self, x: torch.Tensor, h: int, w: int, wp: int,
                     whole: tuple[np.ndarray, float, np.ndarray] | None) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """_covariance_from_moments' groups for an odd h or w: the half-pixels whose 2×2 pixels are
        all in the frame (`whole`, from the fill's statistics where it ran), then, from X's rows, the last
        column's (their left pixels only), the last row's (top pixels only) and the corner's
        (top-left only): h/2 + w/2 rows at most. Materialising the maps instead took 0.5 s a 720p
        frame on one core, 12× the whole inference at the even size."""
        c1, k = self.c1, x.shape[1]
        h2, w2, wp2 = h // 2, w // 2, wp // 2
        xv = x[: (h2 + h % 2) * wp2].view(-1, wp2, k)  # (h2 [+ 1], wp2, k)

        def group(rows: torch.Tensor, subs: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
            rows = rows.reshape(-1, k).double()
            noisy = rows[:, c1 + 1 :][:, subs]
            return (rows[:, : c1 + 1].T @ rows).cpu().numpy(), float((noisy * noisy).sum()) / 255.0**2, subs

        groups = [whole if whole is not None else group(xv[:h2, :w2], SUB_PIXELS)]
        if w % 2:
            groups.append(group(xv[:h2, w2], SUB_PIXELS_LEFT))
        if h % 2:
            groups.append(group(xv[h2, :w2], SUB_PIXELS_TOP))
        if h % 2 and w % 2:
            groups.append(group(xv[h2, w2], SUB_PIXELS_LEFT[:3]))
        return groups

    def _covariance_from_moments(self, groups: list[tuple[np.ndarray, float, np.ndarray]], m: float) -> np.ndarray:
        """_covariance from groups of half-pixels, each (g = [d | 1]ᵀ·X over them (c1 + 1, k), Σ of
        their noisy values² in [0, 1] units, the sub-pixels of theirs that are in the frame), over
        m values in all."""
        l, c1 = self.cfg.num_levels, self.c1
        sq, total = np.zeros((l + 1, l + 1)), np.zeros(l + 1)
        for g, sq_noisy, subs in groups:
            a = self._raw_from_x_np[subs]  # (sub-pixel·colour, L, c1+1): the raw maps from [d | 1]
            sq[:l, :l] += (a @ g[:, : c1 + 1] @ a.transpose(0, 2, 1)).sum(0)  # Σ raw_i raw_j
            cross = (a * g[:, c1 + 1 + subs].T[:, None, :]).sum((0, 2)) / 255.0  # Σ raw_i · noisy
            sq[:l, l] += cross
            sq[l, :l] += cross
            sq[l, l] += sq_noisy
            total += np.append((a @ g[:, c1]).sum(0), g[c1, c1 + 1 + subs].sum() / 255.0)  # (L+1,) Σ of each map
        mean = total / m
        return (sq - m * mean[:, None] * mean[None, :]) / max(m - 1.0, 1.0)

    def compact(self, bases: Bases) -> Bases:
        """The same bases with X in float16, half the bytes: what the render cache keeps. The noisy
        frame and the ones column are exact in float16 and the features round to 11 bits, so a blend
        of compact bases is within a level of the float32 blend (tested). Unchanged where the native
        blend is not used (torch would convert X back on every blend) or where a feature exceeds
        float16's range."""
        if not self.native_blend or bases.x.dtype != torch.float32:
            return bases
        lo, hi = torch.aminmax(bases.x)  # NaN fails both tests below; on float16, isfinite took 10× as long
        if not (float(lo) > -F16_MAX and float(hi) < F16_MAX):
            return bases
        return dataclasses.replace(bases, x=bases.x.half())

    # ---- blending --------------------------------------------------------------------------
    def _feature_weights(self, bases: Bases, c_luma: np.ndarray | torch.Tensor,
                         c_chroma: np.ndarray | torch.Tensor) -> np.ndarray:
        """[W; b] (c1 + 1, 12) float64: a blend's output sub-pixels (0..255, +0.5 for rounding) are
        noisy + [d | 1]·[W; b].

        Level i's colour matrix is cc_i·I + (cy_i − cc_i)·1·yᵀ (compose.colour_matrices_np) on the
        decorrelated map Ñ_i = Σ_j T[i, j]·raw_j, so on the raw maps it is u_j·I + v_j·1·yᵀ with
        u = Tᵀ·cc and v = Tᵀ·(cy − cc): the weights are u·H1 + v·H2, H1 the head by level and H2 the
        head's luma by level (both built once, _blend_h1/_blend_h2). Four small products in NumPy: this
        runs before every blend, cold (the previous blend has streamed the frame through the
        caches), where each NumPy call costs tens of µs; the per-level 3×3 matrices took twice as many."""
        c1 = self.c1
        t = bases.transform.numpy()  # (L, L): Ñ_i = Σ_j T[i, j] raw_j
        cy, cc = compose.as_float64(c_luma), compose.as_float64(c_chroma)  # (L,) each
        k1 = (cc @ t) @ self._blend_h1  # (12(c1+1),): [s, c, feature | 1]
        k2 = ((cy - cc) @ t) @ self._blend_h2  # (4(c1+1),): [s, feature | 1], the same for every colour
        wb = (k1.reshape(4, 3, c1 + 1) + k2.reshape(4, 1, c1 + 1)).reshape(12, c1 + 1).T.copy()  # (c1+1, 12): 3s + c
        wb[c1] += 0.5  # the uint8 conversion truncates, so this rounds to nearest
        return wb

    def blend_matrix(self, bases: Bases, c_luma: np.ndarray | torch.Tensor,
                     c_chroma: np.ndarray | torch.Tensor) -> torch.Tensor:
        """W (c1 + 13, 12) float32 on the device: output sub-pixels (0..255, +0.5 for rounding) = X·W."""
        c1 = self.c1
        wmat = np.zeros((c1 + 13, 12))
        wmat[: c1 + 1] = self._feature_weights(bases, c_luma, c_chroma)
        wmat[c1 + 1 :] = np.eye(12)  # the noisy sub-pixels pass through
        return torch.from_numpy(wmat).float().to(self.device)

    @torch.no_grad()
    def blend(self, bases: Bases, mix: compose.Mix | None = None, out: np.ndarray | None = None,
              coeffs: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor] | None = None,
              fine: bool = False) -> np.ndarray:
        """Bases + mix (or explicit (luma, chroma) coefficients (L,), NumPy or torch) → uint8
        (H, W, 3), clipped to 0..255. fine: float32 (H, W, 3) in 8-bit units instead, clipped to
        0..255 and not rounded (a render at more than 8 bits)."""
        if coeffs is None:
            coeffs = compose.coefficients_np(mix or compose.Mix(), bases.levels, bases.auto)
        hp, wp = bases.padded
        h, w = bases.size
        if out is None:
            out = np.empty((h, w, 3), np.float32 if fine else np.uint8)
        assert out.dtype == (np.float32 if fine else np.uint8), f"out must be {'float32' if fine else 'uint8'}"
        if self.native_blend and out.flags.c_contiguous:
            wm = np.zeros((self.c1 + 1, 16), np.float32)  # [W; b], 16 columns: the kernel's two SIMD rows
            wb = self._feature_weights(bases, *coeffs)
            if fine:
                wb[self.c1] -= 0.5  # unrounded: no rounding offset
            wm[:, :12] = wb
            native.blend(bases.x, wp // 2, self.c1, torch.from_numpy(wm), out, torch.get_num_threads())
            return out
        wmat = self.blend_matrix(bases, *coeffs)
        x = bases.x.float()  # compact (float16) bases only reach here if the native blend was turned off
        if fine:  # a plain product: full float32 on a GPU too, where cuDNN's convolutions default to TF32
            # (10 bits of mantissa: an eighth of an 8-bit code at the top, half a 10-bit code)
            y = (x @ wmat).clamp_(0.0, 255.5)  # (h2·w2, 12) in 0..255.5 (+0.5, taken off below)
        else:
            # X·W as a 1×1 convolution over X seen as a channels_last image: oneDNN runs this
            # tall-skinny product faster than the BLAS matmul does (measured 1.3× at 720p).
            x_img = x.view(1, hp // 2, wp // 2, x.shape[1]).permute(0, 3, 1, 2)  # (1, K, h2, w2)
            y = _conv1x1_clamped(x_img, wmat.T.contiguous()[:, :, None, None], 255.49)  # (1, 12, h2, w2) channels_last
            y = y.permute(0, 2, 3, 1).reshape(-1, 12)  # (h2·w2, 12) in 0..255.49 (+0.5: 255.49 truncates to 255), a view
        src = y.view(hp // 2, wp // 2, 2, 2, 3).permute(0, 2, 1, 3, 4)  # (hp/2, dy, wp/2, dx, 3)
        if fine:
            torch.from_numpy(out).copy_(src.reshape(hp, wp, 3)[:h, :w])
            out -= np.float32(0.5)
            return np.maximum(out, 0.0, out=out)  # 0..255
        if self.device.type == "cuda":
            out[...] = src.reshape(hp, wp, 3)[:h, :w].to(torch.uint8).cpu().numpy()
        elif h % 2 == 0 and w % 2 == 0:  # depth-to-space, crop and uint8 conversion in one copy
            torch.from_numpy(out).view(h // 2, 2, w // 2, 2, 3).copy_(src[: h // 2, :, : w // 2])
        else:
            torch.from_numpy(out).copy_(src.reshape(hp, wp, 3)[:h, :w])
        return out  # float → uint8 truncates: with the +0.5 in W that rounds to nearest

    # ---- materialising (tests, evaluation, screenshots) -----------------------------------
    def _raw_maps(self, x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
        """Raw maps (L, 3, hp, wp) in 0..1 from X (padded size)."""
        l, c1 = self.cfg.num_levels, self.c1
        raw = x[:, :c1].float() @ self._head_w.T.float().to(x.device) + self._head_b.float().to(x.device)  # (N2, 12L)
        raw = raw.view(1, hp // 2, wp // 2, 12 * l).permute(0, 3, 1, 2)  # (1, 12L, hp/2, wp/2)
        return to_full_res(raw, l)[0]

    def _noisy_planes(self, x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
        n = x[:, self.c1 + 1 :].float().view(hp // 2, wp // 2, 2, 2, 3)
        return n.permute(4, 0, 2, 1, 3).reshape(3, hp, wp)  # (3, hp, wp) 0..255

    def maps(self, bases: Bases) -> torch.Tensor:
        """The decorrelated maps Ñ (L, 3, H, W) float32 in 8-bit units, each with std l_i."""
        hp, wp = bases.padded
        h, w = bases.size
        raw = self._raw_maps(bases.x, hp, wp)[..., :h, :w]
        l = raw.shape[0]
        t = bases.transform.float().to(raw.device) * 255.0
        return (t @ raw.reshape(l, -1)).reshape(raw.shape)

    def noisy(self, bases: Bases) -> torch.Tensor:
        """The input frame (3, H, W) float32, 0..255, exactly as given."""
        hp, wp = bases.padded
        h, w = bases.size
        return self._noisy_planes(bases.x, hp, wp)[:, :h, :w]

def _fused_clamp_works() -> bool:
    """Whether oneDNN's 1×1 convolution with a fused clamp (torch's own CPU fusion op, as used by
    torch.compile) runs here and agrees with conv2d + clamp_ (to float rounding). It saves a read and a write of the
    float output per blend: measured 16.0 → 13.2 ms at 1080p."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
        wt = torch.linspace(-2.0, 2.0, 5 * 3).view(5, 3, 1, 1)
        got = op(x, wt, None, [0, 0], [1, 1], [1, 1], 1, "hardtanh", [0.0, 30.0], "")
        return torch.allclose(got, F.conv2d(x, wt).clamp_(0.0, 30.0), rtol=1e-5, atol=1e-4)  # summation order differs
    except (AttributeError, RuntimeError, TypeError):
        return False


_FUSED_CLAMP: bool | None = None  # decided on the first CPU blend


def _conv1x1_clamped(x: torch.Tensor, weight: torch.Tensor, hi: float) -> torch.Tensor:
    """clamp(conv2d(x, weight), 0, hi): fused on CPUs where oneDNN's fusion op works, else two ops."""
    global _FUSED_CLAMP
    if x.device.type == "cpu":
        if _FUSED_CLAMP is None:
            _FUSED_CLAMP = _fused_clamp_works()
        if _FUSED_CLAMP:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, None, [0, 0], [1, 1], [1, 1], 1, "hardtanh",
                                                           [0.0, hi], "")
    return F.conv2d(x, weight).clamp_(0.0, hi)


# Row blocks of X per Gram product: a batched product over blocks keeps both cores busy and each
# block's float32 partial sum short (summed in float64); one (c1+1)×N by N×K product measured
# 6.5 ms against 4.5 at 720p.
GRAM_BLOCKS = 8
GRAM_MIN_ROWS = 4096  # below this many rows per block, one plain product


def _cross_gram(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[:, :k]ᵀ · x (k, K) float64 on the CPU, for x (N, K) float32."""
    n = x.shape[0]
    nb = max(1, min(GRAM_BLOCKS, n // GRAM_MIN_ROWS))
    m = n // nb * nb
    xb = x[:m].view(nb, m // nb, -1)  # (nb, N/nb, K)
    g = torch.bmm(xb[:, :, :k].transpose(1, 2), xb).double().sum(0)  # (k, K)
    if m < n:
        g += (x[m:, :k].T @ x[m:]).double()
    return g.cpu()


def frame_bytes_per_blend(bases: Bases) -> int:
    """Bytes one blend must move: read X once, write the uint8 frame once."""
    h, w = bases.size
    return bases.nbytes + h * w * 3


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
