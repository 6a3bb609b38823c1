"""The display's picture of HDR and wide-gamut video: tone and gamut mapping to an SDR BT.709 screen.

Owns the tables of one mapping (DisplayMap) and applying them to a frame, natively
(engine/csrc/view.c, `tonemap`) or in NumPy. Only what the window shows goes through it: the
denoiser, the blend, recordings, renders and the original/tuned screenshot pairs keep the coded
values and the file's colour tags. Before it, an iPhone's HLG clip or an HDR10 grade was shown as
if its codes were BT.709: flat, greyish and desaturated.

What it does, as mpv (libplacebo) does by default for HDR on an SDR screen:
- the codes to linear light through the file's transfer (PQ: SMPTE ST 2084 in nits; HLG: the
  inverse OETF, then BT.2100's OOTF for a display of the content's peak, on its luminance);
- BT.2020 primaries to BT.709 in linear light, out-of-gamut colours clipped;
- BT.2390's EETF (a knee, then a Hermite spline in PQ) on the largest channel, from the content's
  peak (HDR10's MaxCLL, else the mastering display's, else 1000 nits) to SDR white at 203 nits
  (BT.2408's reference white): the midtones stay, the highlights roll off, hues are kept;
- out in BT.1886's gamma 2.4, how a screen shows the SDR codes this player shows unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from engine import native
from player import colour as col

SDR_WHITE_NITS = 203.0  # BT.2408's HDR reference white: shown as the screen's white (libplacebo's too)
HDR_PEAK_NITS = 1000.0  # a PQ stream's peak where it carries no light level (HDR10's usual grade), and
                        # HLG's nominal display peak, for which BT.2100's OOTF gamma is 1.2
PEAK_RANGE = (SDR_WHITE_NITS, 10000.0)  # metadata outside it is taken as its nearest end (PQ tops at 10 000)
SDR_GAMMA = 2.4  # BT.1886: how a screen shows SDR codes, which the player puts on screen as they are
TONE_SAMPLES = 1024  # the tone curve's gain over [0, peak]: 1 below the knee, smooth above, so linear is enough
OOTF_SAMPLES = 1024  # HLG's OOTF gain over the fourth root of luminance (Y^0.2 is steep at 0; s^0.8 is not)
ENC_SAMPLES = 4096  # the output codes over √L: the first step is a quarter of a code (over L it was 8)

# SMPTE ST 2084 (PQ).
PQ_M1, PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
PQ_C1, PQ_C2, PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
# ARIB STD-B67 (HLG), BT.2100.
HLG_A = 0.17883277
HLG_B = 1 - 4 * HLG_A
HLG_C = 0.5 - HLG_A * np.log(4 * HLG_A)
# CIE xy of the red, green and blue primaries, and of the D65 white they all use (P3-D65: Apple's
# and some HDR10 grades'; other primaries are taken as BT.709's).
PRI_P3_D65 = 12  # AVCOL_PRI_SMPTE432
PRIMARIES = {col.PRI_BT709: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
             col.PRI_BT2020: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
             PRI_P3_D65: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))}
D65 = (0.3127, 0.3290)
BT2020_LUMA = (0.2627, 0.6780, 0.0593)  # the luminance of BT.2020 linear RGB (HLG's OOTF reads it)


def pq_to_nits(e: np.ndarray) -> np.ndarray:
    """PQ's EOTF: code values in [0, 1] to nits."""
    p = np.power(np.clip(e, 0.0, 1.0), 1 / PQ_M2)
    return 10000.0 * np.power(np.maximum(p - PQ_C1, 0.0) / (PQ_C2 - PQ_C3 * p), 1 / PQ_M1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    y = np.power(np.clip(np.asarray(nits, np.float64) / 10000.0, 0.0, 1.0), PQ_M1)
    return np.power((PQ_C1 + PQ_C2 * y) / (1 + PQ_C3 * y), PQ_M2)


def hlg_to_scene(e: np.ndarray) -> np.ndarray:
    """HLG's inverse OETF: code values in [0, 1] to scene light in [0, 1]."""
    e = np.clip(e, 0.0, 1.0)
    return np.where(e <= 0.5, e * e / 3, (np.exp((e - HLG_C) / HLG_A) + HLG_B) / 12)


def bt2390(nits: np.ndarray, peak: float) -> np.ndarray:
    """BT.2390's EETF from a source of `peak` nits to a screen whose white is SDR_WHITE_NITS (black
    0 on both), in nits."""
    if peak <= SDR_WHITE_NITS:
        return np.minimum(nits, SDR_WHITE_NITS)
    top = nits_to_pq(peak)
    e1 = nits_to_pq(np.minimum(nits, peak)) / top  # [0, 1]
    white = nits_to_pq(SDR_WHITE_NITS) / top  # where the screen's white lies on it
    knee = 1.5 * white - 0.5  # below it, unchanged
    t = np.clip((e1 - knee) / (1 - knee), 0.0, 1.0)
    spline = (2 * t**3 - 3 * t**2 + 1) * knee + (t**3 - 2 * t**2 + t) * (1 - knee) + (-2 * t**3 + 3 * t**2) * white
    return pq_to_nits(np.where(e1 < knee, e1, spline) * top)


def rgb_to_xyz(primaries) -> np.ndarray:
    """(3, 3) linear RGB → CIE XYZ for these primaries and D65 (Y of white = 1)."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T  # columns: the primaries
    wx, wy = D65
    scale = np.linalg.solve(xyz, [wx / wy, 1.0, (1 - wx - wy) / wy])
    return xyz * scale


def gamut_matrix(src: int, dst: int = col.PRI_BT709) -> np.ndarray:
    return np.linalg.solve(rgb_to_xyz(PRIMARIES[dst]), rgb_to_xyz(PRIMARIES[src]))


def content_peak(frame) -> float:
    """The content's peak in nits from a decoded frame's HDR10 metadata: MaxCLL, else the mastering
    display's peak; 0 where it carries neither."""
    cll = mastering = 0.0
    try:
        for sd in frame.side_data:
            kind, raw = getattr(sd.type, "name", str(sd.type)), bytes(sd)
            if kind.endswith("CONTENT_LIGHT_LEVEL") and len(raw) >= 4:  # AVContentLightMetadata: MaxCLL, MaxFALL
                cll = float(struct.unpack_from("=I", raw)[0])
            elif kind.endswith("MASTERING_DISPLAY_METADATA") and len(raw) >= 88:
                # AVMasteringDisplayMetadata: 8 rationals of primaries and white, min and max
                # luminance (rationals), has_primaries, has_luminance
                num, den = struct.unpack_from("=ii", raw, 72)
                if struct.unpack_from("=i", raw, 84)[0] and den > 0:
                    mastering = num / den
    except (AttributeError, TypeError, ValueError, struct.error):  # side data PyAV cannot give
        return 0.0
    return cll or mastering


@dataclass(frozen=True, eq=False)
class DisplayMap:
    """One source colour's mapping to the screen (engine/csrc/view.c reads the tables)."""

    name: str  # what the HUD and the notice say: "PQ 1000 nits → SDR", "BT.2020 → BT.709"
    hdr: bool  # a tone curve (PQ, HLG), not the gamut alone
    lin: np.ndarray  # float32 (256,): an 8-bit code to linear light, SDR white 1 (HLG: scene light)
    ky: np.ndarray  # float32 (3,): the luminance HLG's OOTF reads
    ootf: np.ndarray | None  # float32 (OOTF_SAMPLES + 1,): its gain over Y^(1/4) in [0, 1]; None: none
    m: np.ndarray  # float32 (9,): linear RGB to BT.709 primaries, row-major
    tone: np.ndarray  # float32 (TONE_SAMPLES + 1,): the tone curve's gain over [0, tone_max]
    tone_max: float  # the content's peak, SDR white 1
    enc: np.ndarray  # uint8 (ENC_SAMPLES,): √L in [0, 1] to the screen's code

    def __call__(self, rgb: np.ndarray, out: np.ndarray | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """rgb: uint8 (H, W, 3) as decoded → uint8 (H, W, 3) for the screen (into `out` if given);
        with `size` (w, h), the pixels of a nearest-neighbour scaling to it (each the one under the
        centre of its cell), picked as they are mapped: a frame shown smaller costs the size shown."""
        rows = cols = None
        if size is not None:
            (sh, sw), (w, h) = rgb.shape[:2], size
            rows, cols = (((2 * np.arange(k) + 1) * n // (2 * k)).astype(np.int32) for k, n in ((h, sh), (w, sw)))
        shape = rgb.shape if size is None else (size[1], size[0], 3)
        out = np.empty(shape, np.uint8) if out is None else out
        if native.tonemap(rgb, out, self.lin, self.ky, self.ootf, self.m, self.tone, self.tone_max, self.enc,
                          rows, cols) is None:
            self._numpy(rgb if size is None else np.take(np.take(rgb, rows, axis=0), cols, axis=1), out)
        return out

    def nits(self, rgb: np.ndarray) -> float:
        """The mean light of uint8 RGB codes (…, 3) on the display this mapping assumes, in nits,
        before its tone curve (PQ: as graded; HLG: through the OOTF for its peak): what an HDR
        grade's patch is, where the codes alone do not say."""
        lin = self.lin[rgb.reshape(-1, 3)].astype(np.float64)  # (n, 3) light, SDR white 1
        y = lin @ self.ky.astype(np.float64)  # (n,) luminance
        if self.ootf is not None:
            y = y * self._ootf_gain(y)
        return float(y.mean() * SDR_WHITE_NITS)

    def _ootf_gain(self, y: np.ndarray) -> np.ndarray:
        """HLG's OOTF gain at luminance y (any shape), from its table over y^(1/4), as the kernel reads it."""
        n = len(self.ootf) - 1
        return np.interp(np.sqrt(np.sqrt(np.maximum(y, 0.0))) * n, np.arange(n + 1), self.ootf)

    def _numpy(self, rgb: np.ndarray, out: np.ndarray) -> None:
        """The same tables in NumPy (where the native kernels are not in use): ~20× the time."""
        lin = self.lin[rgb]  # (H, W, 3) float32
        if self.ootf is not None:
            lin *= self._ootf_gain(lin @ self.ky).astype(np.float32)[..., None]  # (H, W, 1)
        lin = lin @ self.m.reshape(3, 3).T
        mx = lin.max(axis=-1)
        n = len(self.tone) - 1
        gain = np.interp(mx * (n / self.tone_max), np.arange(n + 1), self.tone).astype(np.float32)
        with np.errstate(divide="ignore"):  # (above the peak, the largest channel is the curve's top)
            gain = np.where(mx >= self.tone_max, self.tone[-1] * np.float32(self.tone_max) / mx, gain)
        lin *= np.where(mx > 0, gain, np.float32(1.0))[..., None]
        np.clip(lin, 0.0, 1.0, out=lin)
        idx = (np.sqrt(lin) * np.float32(len(self.enc) - 1) + np.float32(0.5)).astype(np.int64)
        out[...] = self.enc[idx]


def display_map(colour: col.Colour, peak: float = 0.0) -> DisplayMap | None:
    """The mapping of frames of this colour (`peak`: content_peak's nits for PQ, 0 unknown) to an
    SDR BT.709 screen; None for those shown as coded (BT.709 and BT.601 SDR)."""
    if not colour.unmanaged:
        return None
    hdr = colour.trc in (col.TRC_PQ, col.TRC_HLG)
    codes = np.arange(256) / 255.0
    # HLG is scene-referred, with no content peak: BT.2100's OOTF is for a display's
    peak = (float(np.clip(peak or HDR_PEAK_NITS, *PEAK_RANGE)) if colour.trc == col.TRC_PQ
            else HDR_PEAK_NITS if hdr else SDR_WHITE_NITS)
    ootf = None
    if colour.trc == col.TRC_PQ:
        lin, name = pq_to_nits(codes) / SDR_WHITE_NITS, f"PQ {peak:.0f} nits"
    elif colour.trc == col.TRC_HLG:
        # BT.2100: display light = peak · Y_s^(γ − 1) · scene light, γ = 1.2 + 0.42·log10(peak / 1000)
        gamma = 1.2 + 0.42 * np.log10(peak / 1000.0)
        s = np.linspace(0.0, 1.0, OOTF_SAMPLES + 1)
        lin, name = hlg_to_scene(codes), f"HLG {peak:.0f} nits"
        ootf = (peak / SDR_WHITE_NITS) * s ** (4 * (gamma - 1))
    else:  # BT.2020 primaries, SDR
        lin, name = codes**SDR_GAMMA, "BT.2020 → BT.709"
    m = gamut_matrix(colour.primaries) if colour.primaries in PRIMARIES else np.eye(3)
    tone_max = peak / SDR_WHITE_NITS
    x = np.linspace(0.0, tone_max, TONE_SAMPLES + 1)[1:]
    tone = np.concatenate([[1.0], bt2390(x * SDR_WHITE_NITS, peak) / SDR_WHITE_NITS / x])
    enc = np.rint(255.0 * np.linspace(0.0, 1.0, ENC_SAMPLES) ** (2 / SDR_GAMMA))  # (√L)² = L, to 1/γ
    f32 = np.float32
    return DisplayMap(f"{name} → SDR" if hdr else name, hdr, lin.astype(f32), np.array(BT2020_LUMA, f32),
                      None if ootf is None else ootf.astype(f32), m.astype(f32).ravel(), tone.astype(f32),
                      float(tone_max), enc.astype(np.uint8))
