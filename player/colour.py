"""Which YUV ↔ RGB matrix a video uses, the colour tags a recording carries, and decoded frames
to RGB.

Owns the one convention the decoder and the encoder share, so that a frame goes
file → RGB → recording with the same matrix both ways, and the recording says which it is.
Tagged files are taken at their word. Untagged ones get mpv's (and FFmpeg's players') guess:
BT.709 for HD (1280 wide or more, or taller than 576 lines), else BT.601. Before this, every
untagged file was decoded with BT.601 and recordings went out in BT.601 with no tags, which a
player reading a 720p file as BT.709 showed with hues off by up to 27 levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import av
import numpy as np

from engine import native

# FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic codes (libavutil/pixfmt.h).
UNSPECIFIED = 2
SPC_BT709, SPC_BT470BG, SPC_SMPTE170M, SPC_SMPTE240M, SPC_BT2020_NCL, SPC_BT2020_CL = 1, 5, 6, 7, 9, 10
PRI_BT709, PRI_BT470BG, PRI_SMPTE170M = 1, 5, 6
TRC_BT709, TRC_SMPTE170M = 1, 6
PRI_BT2020, TRC_PQ, TRC_HLG = 9, 16, 18  # wide gamut, and HDR's two transfers (SMPTE 2084, ARIB STD-B67)
RANGE_MPEG, RANGE_JPEG = 1, 2  # limited range (16–235): what recordings are written in; full: RGB ones
SPC_RGB = 0  # no matrix: the lossless recordings' RGB
# swscale's name of each matrix (PyAV's reformat src_/dst_colorspace).
SWS_MATRIX = {SPC_BT709: "ITU709", SPC_BT470BG: "ITU601", SPC_SMPTE170M: "ITU601", SPC_SMPTE240M: "SMPTE240M",
              SPC_BT2020_NCL: "BT2020", SPC_BT2020_CL: "BT2020"}
# Kr and Kb of each matrix (Y' = Kr·R' + (1 − Kr − Kb)·G' + Kb·B'), for the native conversion.
# They give swscale's integer table (libswscale/yuv2rgb.c) to its 16 fractional bits.
KR_KB = {SPC_BT709: (0.2126, 0.0722), SPC_BT470BG: (0.299, 0.114), SPC_SMPTE170M: (0.299, 0.114),
         SPC_SMPTE240M: (0.212, 0.087), SPC_BT2020_NCL: (0.2627, 0.0593), SPC_BT2020_CL: (0.2627, 0.0593)}


@dataclass(frozen=True)
class Colour:
    colorspace: int  # the matrix (AVColorSpace)
    primaries: int
    trc: int

    @property
    def matrix(self) -> str:
        """swscale's name for the matrix, for PyAV's reformat."""
        return SWS_MATRIX[self.colorspace]

    @property
    def unmanaged(self) -> str:
        """'' for colours the window shows as coded (BT.709 / BT.601 SDR), else what it maps to the
        screen (player/tonemap.py): HDR (PQ, HLG) or BT.2020 primaries, as phones now record."""
        if self.trc in (TRC_PQ, TRC_HLG):
            return f"HDR ({'PQ' if self.trc == TRC_PQ else 'HLG'})"
        return "BT.2020 wide-gamut" if self.primaries == PRI_BT2020 else ""

    @property
    def name(self) -> str:
        return {"ITU709": "BT.709", "ITU601": "BT.601", "SMPTE240M": "SMPTE 240M", "BT2020": "BT.2020"}[self.matrix]


def guess(width: int, height: int) -> Colour:
    """The colour of an untagged video of this size (mpv's rule)."""
    if width >= 1280 or height > 576:
        return Colour(SPC_BT709, PRI_BT709, TRC_BT709)
    return Colour(SPC_SMPTE170M, PRI_BT470BG if height == 576 else PRI_SMPTE170M, TRC_SMPTE170M)


def of_frame(frame) -> Colour:
    """A decoded PyAV frame's colour: its tags where they are set and known, the guess elsewhere."""
    g = guess(frame.width, frame.height)
    spc = frame.colorspace if frame.colorspace in SWS_MATRIX else g.colorspace
    pri = frame.color_primaries if frame.color_primaries != UNSPECIFIED else g.primaries
    trc = frame.color_trc if frame.color_trc != UNSPECIFIED else g.trc
    return Colour(spc, pri, trc)


def yuv_to_rgb_coefficients(colorspace: int, full_range: bool, bits: int) -> np.ndarray:
    """float32 (8,) for engine/csrc/yuv.c: 8-bit R, G, B as a·Y + b·U + c·V + d of `bits`-bit samples.
    Limited range: Y 16..235 and U, V 16..240 (times 2^(bits − 8)); full: 0..2^bits − 1, chroma
    centred on 2^(bits − 1) (swscale's convention for both)."""
    kr, kb = KR_KB[colorspace]
    kg = 1.0 - kr - kb
    if full_range:
        y0, y_scale, c_scale = 0.0, 2.0**bits - 1, 2.0**bits - 1
    else:
        y0, y_scale, c_scale = 16.0 * 2 ** (bits - 8), 219.0 * 2 ** (bits - 8), 224.0 * 2 ** (bits - 8)
    c0 = 2.0 ** (bits - 1)
    a = 255.0 / y_scale
    rv, bu = 255.0 * 2 * (1 - kr) / c_scale, 255.0 * 2 * (1 - kb) / c_scale
    gu, gv = -bu * kb / kg, -rv * kr / kg
    k = [a, rv, gu, gv, bu, -a * y0 - rv * c0, -a * y0 - (gu + gv) * c0, -a * y0 - bu * c0]
    return np.array(k, np.float32)


class Layout(NamedTuple):
    """How a YUV pixel format's samples lie, for the native conversions."""

    bits: int  # significant bits of a sample
    size: int  # bytes a sample: 1, or 2 (little-endian)
    semi: bool  # chroma in one plane of (U, V) pairs (NV12, P010 …), not a plane each
    vfirst: bool  # in those pairs V comes first (NV21, NV42)
    shift: int  # bits the value is shifted up by in its 16 (P010's 6: MSB-aligned), taken out by the coefficients
    sub: tuple[int, int]  # chroma subsampling (rows, columns): (2, 2) for 4:2:0, (1, 2) for 4:2:2, (1, 1)
    alpha: bool  # a fourth, alpha plane (ignored when read)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.size == 1 else np.dtype("<u2")


@lru_cache(maxsize=None)
def layout(name: str) -> Layout | None:
    """The Layout of a planar or semi-planar YUV pixel format in 8 to 16 little-endian bits, chroma
    full or halved in either direction; else None."""
    fmt = av.VideoFormat(name, 64, 32)
    comps = fmt.components
    if (not fmt.is_planar or fmt.is_rgb or fmt.is_big_endian or len(comps) < 3 or not 8 <= comps[0].bits <= 16
            or any(c.bits != comps[0].bits for c in comps[:3])):
        return None
    planes = [c.plane for c in comps[:3]]
    if planes not in ([0, 1, 2], [0, 1, 1]) or (comps[1].width, comps[1].height) not in ((64, 32), (32, 32), (64, 16), (32, 16)):
        return None
    bits = comps[0].bits
    semi = planes == [0, 1, 1]
    # FFmpeg's semi-planar formats over 8 bits: P0xx/P2xx/P4xx hold the value in a word's top bits;
    # NV20 in its bottom ones. (PyAV does not say the shift; the names do.)
    shift = 16 - bits if semi and bits > 8 and name.startswith("p") else 0
    return Layout(bits, 1 if bits == 8 else 2, semi, name in ("nv21", "nv42"), shift,
                  (32 // comps[1].height, 64 // comps[1].width), len(comps) > 3)


# Packed 8-bit 4:2:2 (webcams, MIPI YUV sensors): the byte offsets of Y (and Y + 2), U and V in each
# group of four bytes, which holds two pixels.
PACKED_422 = {"yuyv422": (0, 1, 3), "uyvy422": (1, 0, 2), "yvyu422": (0, 3, 1)}


def _packed_views(frame: av.VideoFrame) -> list[np.ndarray]:
    """Y, U and V of a packed 4:2:2 frame: strided views of its one plane."""
    oy, ou, ov = PACKED_422[frame.format.name]
    p = frame.planes[0]
    groups = -(-frame.width // 2)
    a = np.ndarray((frame.height, 4 * groups), np.uint8, buffer=p, strides=(p.line_size, 1))
    return [a[:, oy::2][:, :frame.width], a[:, ou::4], a[:, ov::4]]


def _plane_views(frame: av.VideoFrame, lay: Layout) -> list[np.ndarray]:
    """Y, U and V of a planar or semi-planar frame as arrays on its buffers (a semi-planar chroma
    plane's pairs: every other sample of it, V first where lay.vfirst)."""
    planes = [np.ndarray((p.height, p.width * (1 + lay.semi if i else 1)), lay.dtype, buffer=p,
                         strides=(p.line_size, lay.size)) for i, p in enumerate(frame.planes[:3])]
    if not lay.semi:
        return planes
    u, v = planes[1][:, 0::2], planes[1][:, 1::2]
    return [planes[0], *((v, u) if lay.vfirst else (u, v))]


def to_rgb(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """A decoded frame as uint8 (H, W, 3) RGB with colour's matrix and the frame's range, exactly
    rounded: natively for planar, semi-planar and packed YUV (engine/csrc/yuv.c, about 1 ms a 720p
    frame), through swscale for the others and where the native kernels are not in use. swscale's
    general path takes 4–8 ms; its hand-written one for 8-bit 4:2:0 and 4:2:2 (0.5 ms) truncates:
    every 8-bit clip came out 1.0–1.5 codes dark (green most: a tint) and 1.3 codes RMS off."""
    if frame.format.name in PACKED_422 and native.library() is not None:
        rgb = native.yuv_rgb(*_packed_views(frame), _coefficients(colour.colorspace, frame.color_range == RANGE_JPEG, 8))
        if rgb is not None:
            return rgb
    layout_ = layout(frame.format.name)
    if layout_ is not None and native.library() is not None:
        rgb = native.yuv_rgb(*_plane_views(frame, layout_), _frame_coefficients(frame, colour, layout_))
        if rgb is not None:
            return rgb
    if layout_ is None and bits(frame.format.name) > 8:
        # RGB, grey and packed YUV over 8 bits: swscale takes 16-bit RGB or grey to 8 as v/256 (1.4
        # codes high at the top) and 10-bit RGB to 8 off by up to a code. Its 16-bit conversion, rounded.
        rgb = np.empty((frame.height, frame.width, 3), np.uint8)
        to_rgb_fine(frame, colour, rounded=rgb)
        return rgb
    return frame.to_ndarray(format="rgb24", src_colorspace=colour.matrix, threads=1)


@lru_cache(maxsize=None)
def bits(pix_fmt: str) -> int:
    """Significant bits of a sample of FFmpeg's pixel format pix_fmt (8 for an unknown name)."""
    try:
        comps = av.VideoFormat(pix_fmt, 16, 16).components
    except (ValueError, av.error.FFmpegError):
        return 8
    return max((c.bits for c in comps[:3]), default=8)


def to_rgb_fine(frame: av.VideoFrame, colour: Colour, rounded: np.ndarray | None = None) -> np.ndarray:
    """A decoded frame of more than 8 bits as float32 (H, W, 3) RGB in 8-bit units (0..255, clipped,
    not rounded): what to_rgb computes before it rounds, with the same matrix, range and repeated
    chroma, so that np.rint of it is to_rgb's frame. For renders that keep a 10-bit source's steps.
    YUV natively (engine/csrc/yuv.c), else in NumPy; RGB and packed formats through swscale at 16
    bits, grey directly. rounded (uint8 (H, W, 3), C-contiguous), if given, receives np.rint of it
    (natively in the same pass)."""
    lay = layout(frame.format.name)
    if lay is not None:
        k = _frame_coefficients(frame, colour, lay)
        fine = native.yuv_rgb_float(*_plane_views(frame, lay), k, rounded)  # about 3 ms a 720p frame
        if fine is not None:
            return fine
        fine = _yuv_rgb_float(frame, lay, k)  # NumPy: about 30
    else:
        fine = _rgb_float(frame, colour)
    if rounded is not None:
        np.rint(fine, out=rounded, casting="unsafe")
    return fine


def _rgb_float(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """to_rgb_fine of grey, RGB and packed YUV frames."""
    f32 = np.float32
    comps = frame.format.components
    if len(comps) == 1 and not frame.format.is_rgb:  # grey: a 16-bit PNG, a sensor's 10-bit luma
        b, p = comps[0].bits, frame.planes[0]
        dt = np.dtype(np.uint8) if b <= 8 else np.dtype(">u2" if frame.format.name.endswith("be") else "<u2")
        g = np.ndarray((frame.height, frame.width), dt, buffer=p, strides=(p.line_size, dt.itemsize))
        return np.repeat(np.multiply(g, f32(255 / (2**b - 1)), dtype=f32)[..., None], 3, axis=2)  # (swscale: v·2^(16−b))
    rgb16 = frame.to_ndarray(format="rgb48le", src_colorspace=colour.matrix, threads=1)  # (H, W, 3) uint16
    return np.multiply(rgb16, f32(255 / 65535), dtype=f32)


def _yuv_rgb_float(frame: av.VideoFrame, lay: Layout, k: np.ndarray) -> np.ndarray:
    """to_rgb_fine of planar and semi-planar YUV in NumPy (where the native kernels are not in use)."""
    f32 = np.float32
    y, u, v = _plane_views(frame, lay)
    a, rv, gu, gv, bu, dr, dg, db = (f32(c) for c in k)
    h, w = frame.height, frame.width
    (sy, sx) = lay.sub
    out = np.empty((h, w, 3), f32)
    yy = y[:h, :w].astype(f32) * a  # (H, W)
    uu, vv = (np.repeat(np.repeat(c.astype(f32), sy, 0), sx, 1)[:h, :w] for c in (u, v))  # (H, W) each
    np.add(yy, vv * rv + dr, out=out[..., 0])
    np.add(yy, uu * gu + (vv * gv + dg), out=out[..., 1])
    np.add(yy, uu * bu + db, out=out[..., 2])
    return np.clip(out, 0.0, 255.0, out=out)


def from_rgb(rgb: np.ndarray, pix_fmt: str, colour: Colour, full_range: bool = False) -> av.VideoFrame:
    """uint8 (H, W, 3) RGB, or float32 in 8-bit units (to_rgb_fine, a fine blend: for formats over
    8 bits), as a frame of pix_fmt with colour's matrix, limited range (or full):
    to_rgb's conversion undone. Chroma is the mean over the block of pixels it covers (to_rgb repeats
    it over them), so a frame to_rgb made comes back to its own samples within rounding, except where
    RGB clipped it; swscale's filtered chroma had moved them by up to 10 codes. Formats that are not
    planar or semi-planar YUV (RGB, packed YUV, alpha) go through swscale."""
    rng = RANGE_JPEG if full_range else RANGE_MPEG
    lay = layout(pix_fmt)
    if lay is None or lay.alpha:
        src = av.VideoFrame.from_ndarray(rgb, format="rgb24") if rgb.dtype == np.uint8 else rgb48_frame(rgb)
        return src.reformat(format=pix_fmt, dst_colorspace=colour.matrix, dst_color_range=rng)
    kr, kb = KR_KB[colour.colorspace]
    kg = 1.0 - kr - kb
    h, w = rgb.shape[:2]
    (sy, sx), top, unit = lay.sub, 2**lay.bits - 1, 2.0 ** (lay.bits - 8)
    f32 = np.float32
    # (the ranges as yuv_to_rgb_coefficients reads them: limited Y 16..235, U, V 16..240 times
    # 2^(bits − 8); full 0..2^bits − 1, chroma centred on 2^(bits − 1))
    ys, y0 = ((top / 255, 0.0) if full_range else (219 * unit / 255, 16 * unit))
    cs, c0 = (top / 255 if full_range else 224 * unit / 255), f32(128 * unit)
    if rgb.dtype == f32 and rgb.flags.c_contiguous:  # a fine blend (renders over 8 bits): natively, 22 → ~3 ms at 720p
        frame = av.VideoFrame(w, h, pix_fmt)
        k = np.array([kr * ys, kg * ys, kb * ys, y0, kr, kg, kb, cs / (2 * (1 - kb)), cs / (2 * (1 - kr)), c0], f32)
        if native.rgb_float_yuv(rgb, k, (sy, sx), top, lay.shift, *_plane_views(frame, lay)):
            frame.colorspace, frame.color_range = colour.colorspace, rng
            return frame
    # Channel by channel, in place (a matrix product over the colour axis took 59 ms a 720p frame).
    r, g, b = (rgb[..., i].astype(f32) for i in range(3))  # (H, W) each, 0..255
    y = r * f32(kr * ys)
    y += g * f32(kg * ys)
    y += b * f32(kb * ys)
    y += f32(y0)
    # The block means, summed in integers: an odd edge's block is its pixels alone (edge padding).
    src = np.pad(rgb, ((0, -h % sy), (0, -w % sx), (0, 0)), mode="edge") if h % sy or w % sx else rgb
    acc = np.uint16 if rgb.dtype == np.uint8 else f32  # (four uint8 sum exactly in 16 bits)
    block = sum(src[i::sy, j::sx].astype(acc) for i in range(sy) for j in range(sx))
    cr, cg, cb = (block[..., i] * f32(1 / (sy * sx)) for i in range(3))  # (⌈H/sy⌉, ⌈W/sx⌉) each
    yc = cr * f32(kr) + cg * f32(kg) + cb * f32(kb)
    u = (cb - yc) * f32(cs / (2 * (1 - kb))) + c0
    v = (cr - yc) * f32(cs / (2 * (1 - kr))) + c0
    y, u, v = (np.clip(np.rint(a, out=a), 0, top, out=a).astype(lay.dtype) << lay.shift for a in (y, u, v))
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, samples in zip(_plane_views(frame, lay), (y, u, v)):
        plane[:] = samples
    frame.colorspace, frame.color_range = colour.colorspace, rng
    return frame


def rgb48_frame(rgb: np.ndarray) -> av.VideoFrame:
    """float32 (H, W, 3) RGB in 8-bit units as a 16-bit RGB frame (rgb48le), rounded to 1/257 of a code."""
    return av.VideoFrame.from_ndarray(np.rint(rgb * np.float32(257)).astype("<u2"), format="rgb48le")


def _frame_coefficients(frame: av.VideoFrame, colour: Colour, lay: Layout) -> np.ndarray:
    """_coefficients for a decoded frame of layout lay: its range (yuvj formats are full), colour's matrix."""
    full = frame.color_range == RANGE_JPEG or frame.format.name.startswith("yuvj")
    return _coefficients(colour.colorspace, full, lay.bits, lay.shift)


@lru_cache(maxsize=None)
def _coefficients(colorspace: int, full_range: bool, bits: int, shift: int = 0) -> np.ndarray:
    """yuv_to_rgb_coefficients, made once per file's colour (read-only: shared by every frame), for
    samples stored `shift` bits up (the factor 2^−shift is exact in float32)."""
    k = yuv_to_rgb_coefficients(colorspace, full_range, bits)
    k[:5] *= np.float32(2.0**-shift)  # the terms that multiply a sample; the offsets are in output units
    k.flags.writeable = False
    return k
