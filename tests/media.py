"""Deterministic synthetic test media, written with PyAV.

Every video frame carries its own index as a 12-bit barcode in a strip at the
top of the picture (white block = 1, black block = 0, most significant bit at
the left), so a test can tell exactly which frame a decoder or the player
produced: ``read_frame_index(rgb)``.  Below the strip there is moving content:
a horizontally scrolling colour gradient and a yellow box that travels across
the frame.  The audio track is a sine tone (default 440 Hz, 48 kHz, stereo).

Import from tests as ``from media import make_test_clip, read_frame_index``
(pytest puts tests/ on sys.path because tests/conftest.py lives there).

Notes on variants:
* libx264 with 4:2:0 (yuv420p) needs even width and height; for odd sizes use
  ``pix_fmt="yuv444p"`` or ``codec="libvpx-vp9"``.
* The audio codec follows the container: AAC for mp4/mov/mkv, Opus for webm.
* Frames need a width of at least ``BARCODE_BITS * 4`` pixels and a height of
  at least 32 pixels for the barcode to survive lossy coding.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

BARCODE_BITS = 12  # frame indices 0..4095 (over two minutes at 30 fps)
DEFAULT_CLIP = dict(width=320, height=240, fps=30, seconds=3.0, codec="libx264",
                    pix_fmt="yuv420p", audio=True, sample_rate=48000, channels=2,
                    tone_hz=440.0, ext="mp4")

_AUDIO_CODEC_FOR_EXT = {"mp4": "aac", "m4v": "aac", "mov": "aac", "mkv": "aac", "webm": "libopus"}


def expected_frame_count(fps, seconds: float) -> int:
    return int(round(Fraction(fps) * Fraction(seconds).limit_denominator(1000)))


def barcode_geometry(width: int, height: int) -> tuple[int, int]:
    """(block width, strip height) of the frame-index barcode."""
    block_w = width // BARCODE_BITS
    strip_h = max(8, height // 8)
    return block_w, strip_h


def synth_frame(index: int, width: int, height: int) -> np.ndarray:
    """The RGB picture (H, W, 3 uint8) of frame ``index``."""
    if width < BARCODE_BITS * 4 or height < 32:
        raise ValueError(f"frame {width}x{height} too small for the barcode "
                         f"(min {BARCODE_BITS * 4}x32)")
    if not 0 <= index < 2 ** BARCODE_BITS:
        raise ValueError(f"frame index {index} does not fit in {BARCODE_BITS} bits")
    x = np.arange(width, dtype=np.int32)
    y = np.arange(height, dtype=np.int32)
    img = np.empty((height, width, 3), dtype=np.uint8)
    # scrolling gradient background
    img[:, :, 0] = ((x * 200 // max(width - 1, 1) + 4 * index) % 200 + 28).astype(np.uint8)[None, :]
    img[:, :, 1] = (y * 200 // max(height - 1, 1) + 28).astype(np.uint8)[:, None]
    img[:, :, 2] = 96
    # moving box (below the barcode strip)
    block_w, strip_h = barcode_geometry(width, height)
    box = max(8, min(width, height) // 5)
    span_x = max(width - box, 1)
    span_y = max(height - strip_h - box, 1)
    bx = (index * 5) % (2 * span_x)
    bx = bx if bx < span_x else 2 * span_x - bx
    by = (index * 3) % (2 * span_y)
    by = strip_h + (by if by < span_y else 2 * span_y - by)
    img[by:by + box, bx:bx + box] = (255, 230, 0)
    # frame-index barcode strip
    img[:strip_h] = 128
    for bit in range(BARCODE_BITS):
        on = (index >> (BARCODE_BITS - 1 - bit)) & 1
        img[:strip_h, bit * block_w:(bit + 1) * block_w] = 255 if on else 0
    return img


def read_frame_index(rgb: np.ndarray) -> int:
    """Recover the frame index from a decoded RGB frame (H, W, 3)."""
    rgb = np.asarray(rgb)
    height, width = rgb.shape[:2]
    block_w, strip_h = barcode_geometry(width, height)
    luma = rgb[:strip_h, :, :3].astype(np.float32).mean(axis=2)
    y0, y1 = strip_h // 4, strip_h - strip_h // 4
    mx = max(block_w // 4, 0)
    value = 0
    for bit in range(BARCODE_BITS):
        x0 = bit * block_w + mx
        x1 = (bit + 1) * block_w - mx
        value = (value << 1) | int(luma[y0:y1, x0:x1].mean() > 128)
    return value


def sine(n: int, start: int, sample_rate: int, tone_hz: float, channels: int,
         amplitude: float = 0.25) -> np.ndarray:
    """(channels, n) float32 samples of the tone, starting at sample ``start``."""
    t = (np.arange(start, start + n, dtype=np.float64)) / sample_rate
    s = (amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    return np.repeat(s[None, :], channels, axis=0)


def _video_options(codec: str) -> dict[str, str]:
    if codec == "libx264":
        return {"preset": "veryfast", "crf": "18"}
    if codec == "libx265":
        return {"preset": "ultrafast", "crf": "20", "x265-params": "log-level=error"}
    if codec in ("libvpx-vp9", "libvpx"):
        return {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    return {}


def make_test_clip(path, *, width: int = 320, height: int = 240, fps=30,
                   seconds: float = 3.0, codec: str = "libx264",
                   pix_fmt: str = "yuv420p", audio: bool = True,
                   audio_codec: str | None = None, sample_rate: int = 48000,
                   channels: int = 2, tone_hz: float = 440.0,
                   gop: int | None = None, options: dict | None = None,
                   audio_start: float = 0.0) -> Path:
    """Write a synthetic clip to ``path`` (container from its extension).

    ``fps`` may be an int, float or Fraction (e.g. Fraction(30000, 1001)).
    ``gop`` is the keyframe interval in frames (default: one per second).
    ``audio_start``: the sound begins this many seconds after the picture (silent before: no packets).
    Returns ``Path(path)``.
    """
    import av  # imported here so that merely importing this module is cheap

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    n_frames = expected_frame_count(rate, seconds)
    ext = path.suffix.lstrip(".").lower()
    if audio and audio_codec is None:
        audio_codec = _AUDIO_CODEC_FOR_EXT.get(ext, "aac")

    with av.open(str(path), mode="w") as container:
        vs = container.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.codec_context.time_base = 1 / rate
        vs.codec_context.gop_size = gop if gop else max(1, int(round(rate)))
        vs.options = {**_video_options(codec), **(options or {})}
        if audio:
            as_ = container.add_stream(audio_codec, rate=sample_rate)
            as_.layout = "stereo" if channels == 2 else "mono"
            as_.codec_context.time_base = Fraction(1, sample_rate)
            total_samples = int(round(seconds * sample_rate))
            chunk = 1024
            written = int(round(audio_start * sample_rate))  # af.pts: the sample's time from 0
            layout = "stereo" if channels == 2 else "mono"

        def write_audio_until(sample: int) -> None:
            nonlocal written
            while written < min(sample, total_samples):
                n = min(chunk, total_samples - written)
                af = av.AudioFrame.from_ndarray(
                    sine(n, written, sample_rate, tone_hz, channels),
                    format="fltp", layout=layout)
                af.sample_rate = sample_rate
                af.pts = written
                af.time_base = Fraction(1, sample_rate)
                for pkt in as_.encode(af):
                    container.mux(pkt)
                written += n

        for i in range(n_frames):
            if audio:  # keep the streams interleaved: audio up to the end of frame i
                write_audio_until(int((i + 1) * sample_rate / rate))
            vf = av.VideoFrame.from_ndarray(synth_frame(i, width, height), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            for pkt in vs.encode(vf.reformat(format=pix_fmt)):
                container.mux(pkt)
        for pkt in vs.encode():
            container.mux(pkt)
        if audio:
            write_audio_until(total_samples)
            for pkt in as_.encode():
                container.mux(pkt)
    return path


def write_frames(path, frames, *, codec: str = "libx264", pix_fmt: str = "yuv420p", fps=30, tags=None,
                 options: dict | None = None, matrix: str | None = None) -> Path:
    """Encode RGB frames (uint8 rgb24, or uint16 rgb48le for deeper formats) as they are, one per
    1/fps; `tags`: (colorspace, primaries, transfer) as FFmpeg numbers them; `matrix`: swscale's
    name of the matrix the frames are converted to YUV with."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = _video_options(codec) | (options or {})
        if tags is not None:
            cc = s.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc = tags
        for i, rgb in enumerate(frames):
            fmt = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
            f = av.VideoFrame.from_ndarray(rgb, format=fmt).reformat(format=pix_fmt, dst_colorspace=matrix)
            f.pts = i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return Path(path)
