"""Recording the tuned frames: the live recorder (key R, `record [FILE]`, `--record FILE`) and the
encoder/muxer and tuning track that the offline render (player/render.py) shares with it.

Owns output naming and validation (container from the extension, never overwrite without
--force, a temporary `.NAME.part.EXT` next to the target renamed when finished cleanly), the
encoder settings (libx264 veryfast crf 18, threads=1 and no AVX-512 code so that a re-render is
bit-identical, a keyframe every second, the source's chroma subsampling — 4:4:4 where an odd size
cannot hold it, in 10 bits for a render that keeps a deeper source's bits — and AAC), crash safety (fragmented MP4 /
progressively written Matroska, packets flushed as written) and the JSON tuning track beside
each recording (`FILE.json`).

Live data flow — the main thread and the audio callback never wait on the encoder:

    Player._show ──(copy of the tuned frame)──► Recorder._q (deque, memory-capped) ─┐
    AudioFeed.fill ──(slice views)──► AudioTap ──► Recorder's deque ────────────────┴► encoder thread ► file

Timestamps are the source's: a frame's pts in the file is its source pts minus the pts of the
first recorded frame (time base 1/90000). Audio is placed on the same timeline sample-exactly
(gaps after a forward seek become silence, overlaps after a backward seek are dropped); video
frames whose pts is not after the last recorded one (a backward seek, a loop) are not recorded,
and a frame re-blended after an edit is recorded in its last version.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine import checkpoint
from player import colour as col
from player import inputs
from player.controls import read_json
from player.decode import AUDIO_CHANNELS, AUDIO_RATE

TRACK_FORMAT = "rcd-track/1"
VIDEO_TIME_BASE = Fraction(1, 90000)
X264_PRESET = "veryfast"
X264_CRF = "18"
# --lossless: x264's RGB encoder at qp 0 keeps every presented pixel exactly (the default YUV at
# CRF 18 smooths away part of the very noise being tuned: about 4 of the demo's 8.7 σ in luma).
# ultrafast: lossless noisy frames are large and slow to compress; speed matters more than size.
LOSSLESS_CODEC, LOSSLESS_PIX_FMT, LOSSLESS_OPTIONS = "libx264rgb", "rgb24", {"preset": "ultrafast", "qp": "0"}
# x264's AVX-512 code is not reproducible: on a Xeon with AVX-512 the same 30 frames encoded 20
# times in one process gave 3 different files (the same sequence of them in every process: the
# output follows the state of the heap), so a re-render did not match its recording. Held to its
# code up to AVX2, which every AVX-512 CPU also has, all 40 encodes were the same file, at the same
# speed (720p veryfast: 32–38 against 34–45 ms a frame). Only given where the CPU has AVX-512.
X264_ASM_UP_TO_AVX2 = "MMX2,SSE,SSE2,SSE3,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,BMI1,BMI2,LZCNT,AVX2"
AUDIO_CODEC = "aac"
AUDIO_BITRATE = 192_000
AAC_FRAME = 1024
FRAGMENT_US = 250_000  # MP4: a fragment at least every 0.25 s (and at every keyframe)
CLUSTER_MS = 250  # Matroska: a cluster at least every 0.25 s
INTERLEAVE_US = 1_000_000  # the muxer never holds packets longer than this waiting for the other stream
AUDIO_GAP_TOLERANCE = 48  # samples (1 ms): closer than this to contiguous counts as contiguous
MAX_SILENCE_S = 10.0  # a longer gap in the sound is a jump of the timestamps (joined captures): not filled


def _cpu_has_avx512() -> bool:
    """Whether x264 would run its AVX-512 code here (Linux's CPU flags; elsewhere torch's view)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        import torch

        return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def x264_options(lossless: bool = False) -> dict:
    """The encoder's options: preset and rate, and on AVX-512 CPUs x264 held to its reproducible code."""
    opts = dict(LOSSLESS_OPTIONS) if lossless else {"preset": X264_PRESET, "crf": X264_CRF}
    if _cpu_has_avx512():
        opts["x264-params"] = f"asm={X264_ASM_UP_TO_AVX2}"
    return opts


def _queue_cap_bytes() -> int:
    """Frames waiting for the encoder may use this much memory (1 GiB, at most 1/8 of RAM: ~13 s of
    720p); beyond it frames are dropped, counted and shown — playback itself never waits."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return int(min(1 << 30, ram // 8))


QUEUE_CAP_BYTES = _queue_cap_bytes()
LAG_BADGE_S = 0.5  # "REC LAG" when this much video waits for the encoder
TAIL_AUDIO_WAIT_S = 0.3  # at stop, wait this long for the audio of the last frame
TRACK_SAVE_EVERY_S = 5.0  # the part sidecar of a running recording is rewritten this often
TAP_RING = 1024  # audio pieces kept while not recording (a recording starts with the audio already heard)
CONTAINERS = {".mp4": "mp4", ".mov": "mp4", ".mkv": "matroska"}
# What a render of a still image (a PNG, JPEG … input) may also write: the one frame, lossless.
IMAGES = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
# What a render may also write for the tools of camera work (YUView, an ISP's own): uncompressed YUV,
# headerless or in YUV4MPEG2 (its size, rate and chroma in the header). Frames at the source's rate,
# one after another (neither holds timestamps), no sound: offline renders only, which drop nothing.
RAW_OUTPUTS = {".yuv": "rawvideo", ".y4m": "yuv4mpegpipe"}
# A render to an image name with FFmpeg's frame-number pattern (`tuned/frame_%04d.png`) writes one
# lossless image a frame, numbered from FFmpeg's first number, so FFmpeg's tools and this player
# (an image sequence INPUT) read them back in order.
SEQUENCE_START = 1
PNG_LEVEL = 1  # zlib level of a sequence's PNGs: a third of the default level's time, the files ~10 % larger


class RecordError(Exception):
    """A recording or render that cannot be made; one line for the user."""


# ---- naming ------------------------------------------------------------------------------------
def container_format(path: str | os.PathLike, images: bool = False) -> str:
    """The muxer's name for the output's extension, or with images (a render's output) also PIL's
    name of an image format or a raw YUV muxer. Raises RecordError naming what may be used."""
    if str(path).strip() == "":
        raise RecordError("the output file name is empty")
    if os.path.isdir(path):
        raise RecordError(f"{path}: is a directory: name a file in it (.mp4, .mov or .mkv)")
    ext = Path(path).suffix.lower()
    fmt = CONTAINERS.get(ext) or ((IMAGES.get(ext) or RAW_OUTPUTS.get(ext)) if images else None)
    if fmt is None:
        raise RecordError(f"{path}: unsupported output type {ext or '(no extension)'!r}: use .mp4, .mov or .mkv"
                          + (" (or .y4m, .yuv for uncompressed YUV; .png, .tif for a still image)" if images
                             else "" if ext not in RAW_OUTPUTS and ext not in IMAGES
                             else f" ({ext} is for --render, which drops no frame)"))
    return fmt


def is_sequence(target: str | os.PathLike) -> bool:
    """Whether a render's output is an image sequence: an image name with a frame-number pattern."""
    p = Path(target)
    return p.suffix.lower() in IMAGES and bool(inputs.PRINTF.search(p.name))


def sidecar_path(target: str | os.PathLike) -> Path:
    return Path(str(target) + ".json")


def _temp_candidates(target: Path):
    yield target.with_name(f".{target.stem}.part{target.suffix}")
    for i in range(2, 1000):
        yield target.with_name(f".{target.stem}.part{i}{target.suffix}")


def claim_temp(target: str | os.PathLike, force: bool, images: bool = False) -> Path:
    """Validate the target and create its temporary file (exclusively: a part file left by a
    killed recording is never overwritten). Returns the temporary path. Raises RecordError."""
    container_format(target, images)  # (before Path(), which reads "" as ".")
    target = Path(target)
    sequence = images and is_sequence(target)
    if sequence and target.name.count("%") != 1:
        raise RecordError(f"{target}: an image sequence's name holds one frame-number pattern (%04d) and no other %")
    first = inputs.sequence_numbers(target)[:1] if sequence else []  # a file of the sequence already there
    for p in ([target.parent / inputs.frame_name(target.name, n) for n in first] + [sidecar_path(target)] if sequence
              else [target, sidecar_path(target)]):
        if p.exists() and not force:
            raise RecordError(f"{p}: already exists (use --force to overwrite)")
    parent = target.parent
    if not parent.is_dir():
        raise RecordError(f"{target}: cannot write: directory {str(parent) or '.'} does not exist")
    if sequence:  # the frames gather in a folder of their own, moved into place when the render is done
        try:
            return Path(tempfile.mkdtemp(prefix=f".{inputs.output_stem(target.name, str(target))}.part-", dir=parent))
        except OSError as e:
            raise RecordError(f"{target}: cannot write in {str(parent) or '.'} ({e.strerror})") from None
    for tmp in _temp_candidates(target):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise RecordError(f"{target}: cannot write in {str(parent) or '.'} ({e.strerror})") from None
        os.close(fd)
        return tmp
    raise RecordError(f"{target}: too many leftover temporary files next to it")


def check_target(target: str | os.PathLike, force: bool) -> None:
    """What the command line checks before anything starts: claim the temporary file, release it."""
    tmp = claim_temp(target, force)
    tmp.unlink(missing_ok=True)


def finish_file(tmp: Path, target: Path, force: bool) -> Path:
    """Rename the finished temporary file to the target (never over a file that appeared
    meanwhile, unless forced); an image sequence's folder: each of its files. Returns where the file is."""
    if tmp.is_dir():
        frames = sorted(tmp.iterdir())
        clash = next((target.parent / f.name for f in frames if (target.parent / f.name).exists()), None)
        if clash is not None and not force:
            raise RecordError(f"{clash}: appeared while rendering; the frames are kept in {tmp}")
        for f in frames:
            os.replace(f, target.parent / f.name)
        tmp.rmdir()
        return target
    if target.exists() and not force:
        raise RecordError(f"{target}: appeared while recording; the recording is kept as {tmp}")
    os.replace(tmp, target)
    return target


def remove_temp(tmp: Path) -> None:
    """A render's unfinished output, gone: its temporary file, or an image sequence's folder."""
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# ---- encoder + muxer ---------------------------------------------------------------------------
def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)


class MediaWriter:
    """Synchronous H.264 + AAC writer with the source's timestamps; the live recorder runs one on
    its thread, the render in its loop. Same settings in both, so the same frames in give the
    same bitstream out."""

    def __init__(self, path: Path, fmt: str, width: int, height: int, fps: float, origin: float, audio: bool,
                 colour: col.Colour | None = None, lossless: bool = False, sar: Fraction = Fraction(1),
                 depth: int = 8, chroma: tuple[int, int] = (2, 2)):
        """depth 10: x264's 10-bit YUV, fed float32 frames (a fine blend, player/render.py); chroma:
        the source's subsampling (rows, columns), kept where the size allows (video_pix_fmt)."""
        import av

        self.origin = origin
        self.path = path
        if fmt == "mp4":
            # Fragmented (a fragment per keyframe and at least every FRAGMENT_US): a killed recording
            # stays playable. delay_moov rather than empty_moov: the header waits for the first
            # fragment, so it can carry the edit lists that put the first frame at 0 and hide the
            # AAC priming samples (with empty_moov video starts 2 frames late, audio 1024 samples late).
            options = {"movflags": "frag_keyframe+delay_moov+default_base_moof", "frag_duration": str(FRAGMENT_US)}
        else:
            options = {"cluster_time_limit": str(CLUSTER_MS)}
        options.update(flush_packets="1", max_interleave_delta=str(INTERLEAVE_US))
        try:
            self.container = av.open(str(path), "w", format=fmt, options=options)
        except (av.error.FFmpegError, OSError) as e:
            raise RecordError(f"{path}: cannot open for writing ({one_line(e)})") from None
        rate = _fps_fraction(fps)
        self.lossless = lossless
        assert depth in (8, 10)
        self.depth = depth
        self.rgb = lossless and depth == 8  # lossless 8 bits: the RGB frames themselves (libx264rgb)
        if self.rgb:
            self.pix_fmt = LOSSLESS_PIX_FMT
        else:  # (lossless over 8 bits: x264 at qp 0 in 10-bit YUV, the samples exactly as converted)
            self.pix_fmt = video_pix_fmt(width, height, chroma, depth)
        vs = self.container.add_stream(LOSSLESS_CODEC if self.rgb else "libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, self.pix_fmt
        cc = vs.codec_context
        cc.time_base = VIDEO_TIME_BASE
        cc.framerate = rate
        cc.gop_size = max(1, int(round(float(rate))))  # a keyframe every second: the crash-safety unit
        cc.thread_count = 1  # x264 with threads > 1 is not bit-reproducible
        if sar != 1:
            cc.sample_aspect_ratio = sar  # an anamorphic source's pixel shape goes with its pixels
        # The source's matrix (player/colour.py), written with the tags that say so: the frames go
        # file → RGB → file with one matrix, and players read them back with it.
        self.colour = colour or col.guess(width, height)
        cc.colorspace, cc.color_primaries, cc.color_trc = self.colour.colorspace, self.colour.primaries, self.colour.trc
        cc.color_range = col.RANGE_MPEG
        if self.rgb:  # RGB itself: no matrix, full range
            cc.colorspace, cc.color_range = col.SPC_RGB, col.RANGE_JPEG
        vs.time_base = VIDEO_TIME_BASE
        vs.options = x264_options(lossless)
        self.vstream = vs
        self.size = (height, width)
        self.astream = None
        if audio:
            a = self.container.add_stream(AUDIO_CODEC, rate=AUDIO_RATE)
            a.layout = "stereo"
            a.codec_context.time_base = Fraction(1, AUDIO_RATE)
            a.codec_context.bit_rate = AUDIO_BITRATE
            self.astream = a
        self._pending: list[np.ndarray] = []  # audio not yet encoded, contiguous from _next_sample
        self._pending_n = 0
        self._next_sample = 0  # relative to origin: where the next pending sample goes
        self._encoded_sample = 0
        self.audio_gaps = 0
        self.frames = 0
        self._frame_ticks = max(1, int(round(1 / (rate * VIDEO_TIME_BASE))))  # a nominal frame's duration
        self._held_packet = None  # video: muxed once the next one gives its duration (_mux_video)
        self.last_pts: float | None = None
        self.encode_ms: list[float] = []

    # video
    def _mux_video(self, pkt) -> None:
        """Mux the packet before this one, with its duration: the distance to this one's dts. MP4
        fragments are cut at any 0.25 s (FRAGMENT_US); at a cut, the fragment's last sample had no
        duration and the muxer guessed one, which with irregular source timestamps and B-frames put
        frames out of order in the file (the QA's fire2.mp4: a 0.85 s frame played at 0.69 s)."""
        held, self._held_packet = self._held_packet, pkt
        if held is not None:
            held.duration = max(1, pkt.dts - held.dts)
            self.container.mux(held)

    def video(self, pts: float, rgb: np.ndarray) -> None:
        import av

        t0 = time.perf_counter()
        if rgb.shape[:2] != self.size:
            raise RecordError(f"frame size changed to {rgb.shape[1]}×{rgb.shape[0]} while recording")
        if rgb.dtype != np.uint8:  # float32 in 8-bit units, unrounded: straight to 10-bit YUV
            vf = col.from_rgb(rgb, self.pix_fmt, self.colour)
        else:
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if not self.rgb:
                vf = vf.reformat(format=self.pix_fmt, dst_colorspace=self.colour.matrix, dst_color_range=col.RANGE_MPEG)
        vf.pts = int(round((pts - self.origin) / VIDEO_TIME_BASE))
        vf.time_base = VIDEO_TIME_BASE
        for pkt in self.vstream.encode(vf):
            self._mux_video(pkt)
        self.frames += 1
        self.last_pts = pts
        self.encode_ms.append((time.perf_counter() - t0) * 1000.0)

    # audio
    def audio(self, pts: float, pcm: np.ndarray) -> None:
        """Place (n, 2) float32 samples that start at source time `pts` on the timeline."""
        if self.astream is None or len(pcm) == 0:
            return
        start = int(round((pts - self.origin) * AUDIO_RATE))
        end_of_pending = self._next_sample + self._pending_n
        if start + len(pcm) <= end_of_pending:
            return  # entirely before what we have (overlap after a backward seek, or preroll)
        if start < end_of_pending:
            pcm = pcm[end_of_pending - start:]
        elif AUDIO_GAP_TOLERANCE < start - end_of_pending <= AUDIO_RATE * MAX_SILENCE_S:
            self.audio_gaps += 1  # a forward seek, an underflow or a late start: silence keeps A/V in place
            self._push_silence(start - end_of_pending)  # (longer: a jump of the timestamps, not filled)
        self._pending.append(pcm)
        self._pending_n += len(pcm)

    def _push_silence(self, n: int) -> None:
        while n > 0:
            k = min(n, AUDIO_RATE)
            self._pending.append(np.zeros((k, AUDIO_CHANNELS), np.float32))
            self._pending_n += k
            n -= k

    def encode_audio_until(self, t: float, final: bool = False) -> None:
        """Encode the pending audio up to source time t (whole AAC frames; all of it if final,
        padded with silence or trimmed to end exactly at t)."""
        if self.astream is None:
            return
        upto = int(round((t - self.origin) * AUDIO_RATE))
        if final:
            have = self._next_sample + self._pending_n
            if have < upto:
                self._push_silence(min(upto - have, int(AUDIO_RATE * MAX_SILENCE_S)))
            elif have > upto:
                self._trim_pending(max(upto, self._next_sample) - self._next_sample)
            n = self._pending_n
        else:
            n = max(0, upto - self._next_sample)
            n = min(n, self._pending_n) // AAC_FRAME * AAC_FRAME
        if n <= 0:
            return
        block = self._take(n)
        for i in range(0, n, AAC_FRAME):
            self._encode_audio_frame(block[i:i + AAC_FRAME])

    def _trim_pending(self, keep: int) -> None:
        if keep <= 0:
            self._pending, self._pending_n = [], 0
            return
        block = np.concatenate(self._pending)[:keep]
        self._pending, self._pending_n = [block], len(block)

    def _take(self, n: int) -> np.ndarray:
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = [block[n:]] if len(block) > n else []
        self._pending_n = len(block) - n
        self._next_sample += n
        return block[:n]

    def _encode_audio_frame(self, pcm: np.ndarray) -> None:
        import av

        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T, dtype=np.float32), format="fltp", layout="stereo")
        af.sample_rate = AUDIO_RATE
        af.pts = self._encoded_sample
        af.time_base = Fraction(1, AUDIO_RATE)
        self._encoded_sample += len(pcm)
        for pkt in self.astream.encode(af):
            self.container.mux(pkt)

    def abort(self) -> None:
        """Close the file as it is (a render that failed: the caller deletes it)."""
        self.container.close()

    def close(self, end_pts: float | None = None) -> None:
        """Flush both encoders and write the trailer. end_pts: where the audio ends."""
        try:
            if self.astream is not None and end_pts is not None:
                self.encode_audio_until(end_pts, final=True)
            for pkt in self.vstream.encode():
                self._mux_video(pkt)
            if self._held_packet is not None:  # the last one: a nominal frame's duration
                self._held_packet.duration = self._frame_ticks
                self.container.mux(self._held_packet)
                self._held_packet = None
            if self.astream is not None:
                for pkt in self.astream.encode():
                    self.container.mux(pkt)
        finally:
            self.container.close()


class _SilentWriter:
    """MediaWriter's calls for the outputs that hold no sound (an image, an image sequence, raw YUV)."""

    def audio(self, pts: float, pcm: np.ndarray) -> None:
        pass

    def encode_audio_until(self, t: float, final: bool = False) -> None:
        pass

    def close(self, end_pts: float | None = None) -> None:
        pass

    def abort(self) -> None:
        pass


def save_image(path: Path, rgb: np.ndarray, fmt: str, png_level: int | None = None) -> None:
    """A frame as a lossless PNG or TIFF: uint8 RGB as 8 bits a channel, float32 (8-bit units, a
    fine blend) as 16 (rounded to 1/257 of an 8-bit code), which PIL cannot write: FFmpeg's encoder.
    png_level: zlib's level (None: the encoder's default)."""
    if rgb.dtype == np.uint8:
        from PIL import Image

        Image.fromarray(rgb).save(path, format=fmt, **({"compress_level": png_level} if fmt == "PNG" and png_level is not None else {}))
        return
    import av

    cc = av.CodecContext.create(fmt.lower(), "w")
    cc.width, cc.height, cc.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb48be" if fmt == "PNG" else "rgb48le"
    if fmt == "PNG" and png_level is not None:
        cc.options = {"compression_level": str(png_level)}
    data = b"".join(bytes(p) for p in [*cc.encode(col.rgb48_frame(rgb).reformat(format=cc.pix_fmt)), *cc.encode(None)])
    try:
        path.write_bytes(data)
    except OSError as e:
        raise RecordError(f"{path}: cannot write ({one_line(e)})") from None


class ImageWriter(_SilentWriter):
    """A render of a still image (`--render OUT.png`): its one frame as RGB, lossless (16 bits a
    channel for float32 frames), with MediaWriter's calls (no sound: a still has none)."""

    def __init__(self, path: Path, fmt: str, depth: int = 8):
        self.path, self.fmt = path, fmt
        self.pix_fmt = "rgb24" if depth == 8 else "rgb48"
        self._rgb: np.ndarray | None = None

    def video(self, pts: float, rgb: np.ndarray) -> None:
        if self._rgb is not None:
            raise RecordError(f"{self.path}: an image holds one frame: render a video to .mp4, .mov or .mkv")
        self._rgb = rgb.copy()

    def close(self, end_pts: float | None = None) -> None:
        if self._rgb is not None:
            save_image(self.path, self._rgb, self.fmt)


class SequenceWriter(_SilentWriter):
    """A render to an image sequence (`--render 'tuned/frame_%04d.png'`): each frame as RGB, lossless
    (16 bits a channel for float32 frames), into the folder claim_temp made, under the pattern's name for its number; with
    MediaWriter's calls (no sound). Numbered from SEQUENCE_START in order, or, from a numbered image
    sequence (first: its first number; fps its rate), as the source image it was made from."""

    def __init__(self, folder: Path, pattern: str, fmt: str, first: int | None = None, fps: float = 0.0,
                 depth: int = 8):
        self.folder, self.pattern, self.fmt = folder, pattern, fmt
        self.pix_fmt = "rgb24" if depth == 8 else "rgb48"
        self.first, self.fps = first, fps
        self.frames, self.bytes = 0, 0

    def video(self, pts: float, rgb: np.ndarray) -> None:
        number = SEQUENCE_START + self.frames if self.first is None else self.first + round(pts * self.fps)
        path = self.folder / inputs.frame_name(self.pattern, number)
        save_image(path, rgb, self.fmt, PNG_LEVEL)
        self.frames += 1
        self.bytes += path.stat().st_size


class RawWriter(_SilentWriter):
    """A render to uncompressed YUV (`--render OUT.yuv` or `.y4m`): each frame converted with the
    source's matrix, limited range (full for a source read with --range full), and written whole, in
    order, with MediaWriter's calls (no sound). pix_fmt: FFmpeg's name (a raw source's own, so that
    the output goes back where the input came from)."""

    def __init__(self, path: Path, fmt: str, width: int, height: int, fps: float, pix_fmt: str,
                 colour: col.Colour | None = None, full_range: bool = False):
        import av

        self.path, self.fmt, self.pix_fmt, self.full_range = path, fmt, pix_fmt, full_range
        self.colour = colour or col.guess(width, height)
        self.size = (height, width)
        self.rate = _fps_fraction(fps)
        try:  # (YUV4MPEG2's header for samples over 8 bits is FFmpeg's extension of it: "unofficial")
            self.container = av.open(str(path), "w", format=fmt, options={"strict": "unofficial"} if fmt == "yuv4mpegpipe" else {})
        except (av.error.FFmpegError, OSError) as e:
            raise RecordError(f"{path}: cannot open for writing ({one_line(e)})") from None
        self.vstream = self.container.add_stream("rawvideo", rate=self.rate)
        self.vstream.width, self.vstream.height, self.vstream.pix_fmt = width, height, pix_fmt
        self.vstream.codec_context.color_range = col.RANGE_JPEG if full_range else col.RANGE_MPEG  # (y4m says it)
        self.frames = 0

    def video(self, pts: float, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.size:
            raise RecordError(f"frame size changed to {rgb.shape[1]}×{rgb.shape[0]} while rendering")
        vf = col.from_rgb(rgb, self.pix_fmt, self.colour, self.full_range)
        vf.pts, vf.time_base = self.frames, 1 / self.rate
        for pkt in self.vstream.encode(vf):
            self.container.mux(pkt)
        self.frames += 1

    def close(self, end_pts: float | None = None) -> None:
        try:
            for pkt in self.vstream.encode():
                self.container.mux(pkt)
        finally:
            self.container.close()

    def abort(self) -> None:
        self.container.close()

    def describe(self) -> str:
        """How to read the output back (a headerless file says nothing of itself, and a reader
        guesses its matrix from its size: where that guess is not the matrix written, it is said)."""
        h, w = self.size
        kr_kb = col.KR_KB[self.colour.colorspace]  # (BT.470BG and SMPTE 170M are one matrix)
        matrix = "" if kr_kb == col.KR_KB[col.guess(w, h).colorspace] else \
            next((f" --matrix {name}" for name, code in inputs.MATRICES.items() if col.KR_KB[code] == kr_kb), "")
        full = " --range full" if self.full_range else ""
        return f"{w}x{h} {self.pix_fmt} at {float(self.rate):g} fps, {self.colour.name}{', full range' if full else ''}" + (
            f": play it with --raw {w}x{h}:{self.pix_fmt} --fps {float(self.rate):g}{matrix}{full}"
            if self.fmt == "rawvideo" else "")


def video_pix_fmt(width: int, height: int, chroma: tuple[int, int] = (2, 2), depth: int = 8) -> str:
    """The YUV format recordings and renders are written in: the source's chroma subsampling (rows,
    columns) where the size allows it — 4:2:0 needs both sides even, 4:2:2 an even width, as FFmpeg
    keeps a source's format — else 4:4:4 (4:2:0 would blur an odd last column or row); 8 or 10 bits.
    (A ProRes 4:2:2 or a 4:4:4 capture was written in 4:2:0: half its chroma, the part a chroma
    denoise is tuned on.)"""
    if chroma == (2, 2) and width % 2 == 0 and height % 2 == 0:
        base = "yuv420p"
    elif chroma == (1, 2) and width % 2 == 0:
        base = "yuv422p"
    else:
        base = "yuv444p"
    return base + ("10le" if depth > 8 else "")


def raw_pix_fmt(path: str | os.PathLike, width: int, height: int, source_format: str | None, deep: bool = False,
                chroma: tuple[int, int] = (2, 2)) -> str:
    """The pixel format of a raw render: a raw source's own in a headerless .yuv (back where it came
    from), else video_pix_fmt's, in 8 bits or, deep, 10."""
    if Path(path).suffix.lower() == ".yuv" and source_format and not source_format.startswith("bayer"):
        return source_format  # (a sensor's Bayer mosaic is read, demosaiced, but cannot be written)
    return video_pix_fmt(width, height, chroma, 10 if deep else 8)


def one_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# ---- the tuning track --------------------------------------------------------------------------
def mix_state_json(mix, bypass: bool, compact: bool = False, luma: bool | None = None) -> dict:
    """A frame's state in the track: its mix, bypass and, for a frame blended from the render
    cache's float16 bases (Denoiser.compact), "bases": "float16" — a re-render blends from the same.
    luma: whether the model read the frame's luma (Bases.luma) — "noise": "luma" or "rgb", which
    a re-render passes to Denoiser.infer: playback decides it with the frames before (NoiseChoice),
    which a render of some of them cannot. None (a bypassed frame): not said."""
    from player.controls import mix_to_json

    state = {"mix": mix_to_json(mix), "bypass": bool(bypass)}
    if compact:
        state["bases"] = "float16"
    return state if luma is None else with_backbone(state, luma)


def with_backbone(state: dict, luma: bool) -> dict:
    """A frame's state (mix_state_json) with the backbone that read it: "noise": "luma" or "rgb"."""
    return {**state, "noise": "luma" if luma else "rgb"}


class Track:
    """The JSON sidecar: what was recorded (model, device, source), the span, and the mix of
    every recorded frame as a list of changes (a change's pts = the first frame blended with it)."""

    def __init__(self, meta: dict):
        self.meta = dict(meta)
        self.frames: list[float] = []
        self.changes: list[dict] = []
        self._last_state = None
        self.end_pts: float | None = None

    def add(self, pts: float, duration: float, state: dict) -> None:
        self.frames.append(pts)
        if state != self._last_state:
            self.changes.append({"pts": pts, **state})
            self._last_state = state
        self.end_pts = pts + duration

    def to_json(self, complete: bool) -> dict:
        return {
            "format": TRACK_FORMAT,
            **self.meta,
            "complete": complete,
            "start_pts": self.frames[0] if self.frames else None,
            "end_pts": self.end_pts,
            "frame_count": len(self.frames),
            "initial": {k: v for k, v in self.changes[0].items() if k != "pts"} if self.changes else None,
            "changes": self.changes,
            "frames": self.frames,
        }


def load_track(path: str | os.PathLike) -> dict:
    data = read_json(path, "tuning track", RecordError)
    if not isinstance(data, dict) or data.get("format") != TRACK_FORMAT:
        raise RecordError(f"{path}: not a tuning track (expected format {TRACK_FORMAT})")
    frames, changes = data.get("frames"), data.get("changes")
    if not frames or not changes:
        raise RecordError(f"{path}: the tuning track has no recorded frames")
    if not isinstance(frames, list) or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in frames):
        raise RecordError(f"{path}: damaged tuning track (frames must be a list of timestamps)")
    if not isinstance(changes, list) or not all(isinstance(c, dict) and isinstance(c.get("pts"), (int, float))
                                                for c in changes):
        raise RecordError(f"{path}: damaged tuning track (changes must be a list of {{pts, mix, bypass}})")
    from player.controls import CommandError, mix_from_json

    for c in changes:
        try:
            mix_from_json(c.get("mix"))
        except CommandError as e:
            raise RecordError(f"{path}: damaged tuning track (change at {c['pts']}: {e})") from None
    return data


def pts_key(pts: float) -> int:
    return int(round(pts * 1_000_000))


# ---- metadata shared by recordings and renders ---------------------------------------------------
class Hashes:
    """sha256 of files, computed once (off the main thread) and cached."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache: dict[str, str | None] = {}

    def get(self, path: str | os.PathLike | None) -> str | None:
        if path is None:
            return None
        key = str(Path(path).resolve())
        with self._lock:
            if key not in self._cache:
                try:
                    self._cache[key] = checkpoint.sha256(key)
                except OSError:
                    self._cache[key] = None
            return self._cache[key]


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def model_meta(denoiser, weights: str, hashes: Hashes) -> dict:
    path = checkpoint.resolve(weights)
    return {"name": denoiser.cfg.name, "weights": str(weights), "path": str(Path(path).resolve()),
            "sha256": hashes.get(path), "levels": list(denoiser.levels)}


def source_meta(info, demo, hashes: Hashes) -> dict:
    if demo is not None:
        return {"kind": "demo", "width": demo.width, "height": demo.height, "fps": demo.fps, "seed": demo.seed,
                "duration": demo.duration}
    return {"kind": "file", "path": str(Path(info.path).resolve()), "sha256": hashes.get(info.path),
            "width": info.width, "height": info.height, "fps": info.fps, **info.opened}


def encoder_meta(writer: MediaWriter | ImageWriter | RawWriter | SequenceWriter) -> dict:
    """What a MediaWriter encodes with, for the tuning track."""
    if isinstance(writer, (ImageWriter, SequenceWriter)):
        return {"video": {"codec": writer.fmt.lower(), "pix_fmt": writer.pix_fmt}, "audio": None}
    if isinstance(writer, RawWriter):
        return {"video": {"codec": "rawvideo", "container": writer.fmt, "pix_fmt": writer.pix_fmt,
                          "matrix": writer.colour.name, "range": "full" if writer.full_range else "limited"},
                "audio": None}
    codec = {"codec": LOSSLESS_CODEC if writer.rgb else "libx264", "preset": LOSSLESS_OPTIONS["preset"], "qp": 0} \
        if writer.lossless else {"codec": "libx264", "preset": X264_PRESET, "crf": int(X264_CRF)}
    params = x264_options(writer.lossless).get("x264-params")
    if params:  # x264 held to its reproducible code (X264_ASM_UP_TO_AVX2)
        codec["x264-params"] = params
    return {"video": {**codec, "threads": 1, "pix_fmt": writer.pix_fmt,
                      "time_base": f"{VIDEO_TIME_BASE.numerator}/{VIDEO_TIME_BASE.denominator}",
                      "matrix": None if writer.rgb else writer.colour.name},
            "audio": {"codec": AUDIO_CODEC, "rate": AUDIO_RATE, "channels": AUDIO_CHANNELS}}


# ---- live: the audio tap and one recording -------------------------------------------------------
class AudioTap:
    """Fed from the audio callback with (pts, view of the samples just output): appends only,
    never waits. Keeps a short ring (so a recording can start with the audio already heard) and
    fans out to the running recordings' deques."""

    def __init__(self):
        self.ring: collections.deque = collections.deque(maxlen=TAP_RING)
        self.subs: tuple[collections.deque, ...] = ()
        self.last_end = -float("inf")  # source time just after the latest sample output

    def put(self, pts: float, pcm: np.ndarray) -> None:
        item = (pts, pcm)
        self.ring.append(item)
        for q in self.subs:
            q.append(item)
        self.last_end = pts + len(pcm) / AUDIO_RATE

    def subscribe(self) -> tuple[collections.deque, list]:
        q: collections.deque = collections.deque()
        self.subs = self.subs + (q,)
        return q, list(self.ring)

    def unsubscribe(self, q) -> None:
        self.subs = tuple(s for s in self.subs if s is not q)


@dataclass
class _Item:
    pts: float
    duration: float
    rgb: np.ndarray
    state: dict


class Recorder(threading.Thread):
    """One recording. The main thread calls present() / stop(); everything else is this thread's."""

    def __init__(self, target: Path, force: bool, fps: float, has_audio: bool, tap: AudioTap | None,
                 meta_fn, notice, cap_bytes: int = QUEUE_CAP_BYTES, colour: col.Colour | None = None,
                 lossless: bool = False, sar: Fraction = Fraction(1), source_bits: int = 8,
                 chroma: tuple[int, int] = (2, 2)):
        super().__init__(name="recorder", daemon=True)
        self.sar = sar
        self.source_bits = source_bits  # a deeper source's recording says how to render it in its own bits
        self.chroma = chroma  # the source's chroma subsampling, kept (video_pix_fmt)
        self.target, self.force, self.fps = Path(target), force, fps
        self.tmp = claim_temp(self.target, force)
        self.fmt = container_format(self.target)
        self.has_audio, self.colour, self.lossless = has_audio, colour, lossless
        self.meta_fn, self.notice = meta_fn, notice
        self.cap_bytes = cap_bytes
        self._q: collections.deque[_Item] = collections.deque()
        self._q_bytes = 0
        self._q_lock = threading.Lock()  # protects _q_bytes (the main thread adds, this thread subtracts)
        self._wake = threading.Event()
        self._stopping = False
        self._held: _Item | None = None
        self._last_pts = -float("inf")  # last pts pushed to the queue
        self.last_end = -float("inf")  # end (pts + duration) of the last frame pushed
        self.tap = tap
        self._audio_q, self._preroll = tap.subscribe() if tap is not None and has_audio else (None, [])
        # counters (main thread writes the first three)
        self.frames_queued = 0
        self.frames_dropped = 0
        self.frames_skipped = 0  # shown again after a loop or a seek back: not recorded
        self.lag_max_frames = 0
        self.frames_written = 0
        self.error: BaseException | None = None
        self.final_path: Path | None = None
        self.track: Track | None = None
        self.writer: MediaWriter | None = None
        self.encode_ms: list[float] = []

    # ---- main thread ---------------------------------------------------------------------
    def present(self, pts: float, duration: float, rgb: np.ndarray, state: dict, copy: bool = True) -> None:
        if self._stopping:
            return
        if self._held is not None and pts == self._held.pts:
            self._held = _Item(pts, duration, rgb.copy() if copy else rgb, state)  # a re-blend: the last version wins
            return
        if pts <= self._last_pts or (self._held is not None and pts < self._held.pts):
            # before what is recorded already (a loop's next pass, a backward seek): the file follows
            # the source's timeline, which a re-render from the track needs — said once, counted
            self.frames_skipped += 1
            if self.frames_skipped == 1:
                self.notice("recording: frames shown again (a loop's next pass, a seek back) are not recorded; "
                            "R twice starts a new file")
            return
        self._push_held()
        self._held = _Item(pts, duration, rgb.copy() if copy else rgb, state)

    def _push_held(self) -> None:
        item, self._held = self._held, None
        if item is None:
            return
        if self._q_bytes + item.rgb.nbytes > self.cap_bytes:
            self.frames_dropped += 1
            if self.frames_dropped == 1:
                self.notice(f"recording: the encoder is {len(self._q)} frames behind and the queue is full: dropping frames")
            return
        self._q.append(item)
        with self._q_lock:
            self._q_bytes += item.rgb.nbytes
        self._last_pts = item.pts
        self.last_end = item.pts + item.duration
        self.frames_queued += 1
        self.lag_max_frames = max(self.lag_max_frames, len(self._q))
        self._wake.set()

    def stop(self) -> None:
        if not self._stopping:
            self._push_held()
            self._stopping = True
            self._wake.set()

    def lag_frames(self) -> int:
        return len(self._q)

    def lagging(self) -> bool:
        return len(self._q) > max(3, LAG_BADGE_S * self.fps)

    # ---- encoder thread --------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported by the manager on the main thread
            self.error = e
            self._q.clear()
            with self._q_lock:
                self._q_bytes = 0
            try:
                if self.writer is not None:
                    self.writer.container.close()
            except Exception:
                pass
        finally:
            if self.tap is not None and self._audio_q is not None:
                self.tap.unsubscribe(self._audio_q)

    def _loop(self) -> None:
        last_save = time.monotonic()
        while True:
            self._wake.wait(0.05)
            self._wake.clear()
            while self._q:
                item = self._q[0]
                self._encode(item)
                self._q.popleft()
                with self._q_lock:
                    self._q_bytes -= item.rgb.nbytes
                # Inside the loop too: an encoder that never catches up (a large frame on a busy CPU)
                # would otherwise leave a killed recording's track empty while its video plays.
                last_save = self._save_track(last_save)
            self._feed_audio()
            if self._stopping and not self._q:
                break
            last_save = self._save_track(last_save)
        self._finish()

    def _save_track(self, last_save: float) -> float:
        """Rewrite the part file's track every TRACK_SAVE_EVERY_S; returns when it was last written."""
        if self.track is None or time.monotonic() - last_save <= TRACK_SAVE_EVERY_S:
            return last_save
        write_json_atomic(sidecar_path(self.tmp), self.track.to_json(complete=False))
        return time.monotonic()

    def _encode(self, item: _Item) -> None:
        if self.writer is None:
            h, w = item.rgb.shape[:2]
            self.writer = MediaWriter(self.tmp, self.fmt, w, h, self.fps, origin=item.pts, audio=self.has_audio,
                                      colour=self.colour, lossless=self.lossless, sar=self.sar, chroma=self.chroma)
            meta = self.meta_fn()
            meta.update(encoder_meta(self.writer))
            meta["recording"] = str(self.target)
            self.track = Track(meta)
            write_json_atomic(sidecar_path(self.tmp), self.track.to_json(complete=False))
        self._feed_audio()
        self.writer.video(item.pts, item.rgb)
        self.track.add(item.pts, item.duration, item.state)
        self.frames_written += 1
        self.writer.encode_audio_until(item.pts + item.duration)

    def _feed_audio(self) -> None:
        if self.writer is None or self._audio_q is None:
            return
        if self._preroll:
            for pts, pcm in self._preroll:
                self.writer.audio(pts, pcm)
            self._preroll = []
        q = self._audio_q
        while q:
            pts, pcm = q.popleft()
            self.writer.audio(pts, pcm)

    def _finish(self) -> None:
        if self.writer is None:  # nothing was recorded
            self.tmp.unlink(missing_ok=True)
            sidecar_path(self.tmp).unlink(missing_ok=True)
            self.notice(f"recording: no frames recorded, {self.target} not written")
            return
        end = self.track.end_pts
        if self._audio_q is not None:
            deadline = time.monotonic() + TAIL_AUDIO_WAIT_S
            while time.monotonic() < deadline:
                self._feed_audio()
                w = self.writer
                if w._next_sample + w._pending_n >= int(round((end - w.origin) * AUDIO_RATE)):
                    break
                time.sleep(0.01)
        self.writer.close(end_pts=end)
        self.encode_ms = self.writer.encode_ms
        part_track = sidecar_path(self.tmp)
        self.final_path = finish_file(self.tmp, self.target, self.force)
        write_json_atomic(sidecar_path(self.target), self.track.to_json(complete=True))
        part_track.unlink(missing_ok=True)
        span = end - self.track.frames[0]
        missing = "".join([f"; {self.frames_dropped} frames dropped (the encoder was behind)" if self.frames_dropped else "",
                           f"; {self.frames_skipped} frames shown again after a loop or seek back not recorded"
                           if self.frames_skipped else ""])
        deeper = (f"; in 8 bits, as shown: --render OUT.mp4 --track {sidecar_path(self.target)} --depth 10 renders "
                  f"it from the {self.source_bits}-bit source" if self.source_bits > 8 else "")
        self.notice(f"recorded {self.frames_written} frames ({span:.2f} s) to {self.target}{missing}{deeper}")


class Recording:
    """The player's recording feature: the `record` command, the frames from `_show`, the
    audio tap, the HUD badge and the stats. Main thread only (except the tap)."""

    def __init__(self, player, target: str | None, force: bool, out_dir: str = ".", lossless: bool = False):
        self.player = player
        self.first_target = target
        self.force, self.lossless = force, lossless
        self.out_dir = out_dir
        self.tap = AudioTap()
        self.current: Recorder | None = None
        self.finished: list[Recorder] = []  # stopped (maybe still encoding)
        self._used: set[str] = set()
        self._seen: dict[int, tuple] = {}  # controls serial → (mix, bypass)
        self._reported: set[int] = set()
        self.hashes = Hashes()
        self.unknown_serials = 0

    # ---- commands -------------------------------------------------------------------------
    def toggle(self, arg: str = "") -> None:
        """`record` toggles; `record FILE` starts recording to FILE (or stops the running one)."""
        if self.current is not None:
            self.stop()
            return
        target = Path(arg) if arg else self._next_name()
        self.start(target)

    def start(self, target: Path) -> None:
        p = self.player
        rec = Recorder(target, self.force, p.info.fps, p.info.has_audio, self.tap, self._meta, p.notice,
                       colour=p.info.colour, lossless=self.lossless, sar=p.info.sar, source_bits=col.bits(p.info.pix_fmt),
                       chroma=p.info.chroma)
        self._used.add(str(Path(target).resolve()))
        rec.start()
        self.current = rec
        self._seen[p.controls.serial] = (p.controls.mix, p.controls.bypass)
        p.message(f"recording to {target}")

    def stop(self, wait_audio: bool = False) -> None:
        """Stop the running recording (its thread finishes the file). wait_audio: wait up to
        TAIL_AUDIO_WAIT_S for the audio of its last frame to be output (at shutdown, before
        the sound device closes)."""
        rec, self.current = self.current, None
        if rec is None:
            return
        rec.stop()
        self.finished.append(rec)
        self.player.message(f"recording stopped: {rec.target}")
        if wait_audio and rec.has_audio and rec.error is None:
            deadline = time.monotonic() + TAIL_AUDIO_WAIT_S
            while self.tap.last_end < rec.last_end - 1e-3 and time.monotonic() < deadline:
                time.sleep(0.005)

    def _next_name(self) -> Path:
        if self.first_target is not None:
            base = Path(self.first_target)
        else:
            stem = self.player.info.stem
            base = Path(self.out_dir) / f"rcd-{stem}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"
        for i in range(1, 10000):
            cand = base if i == 1 else base.with_name(f"{base.stem}-{i}{base.suffix}")
            if str(cand.resolve()) in self._used:
                continue
            if not self.force and (cand.exists() or sidecar_path(cand).exists()):
                continue
            return cand
        raise RecordError(f"{base}: no free file name")

    # ---- frames ---------------------------------------------------------------------------
    def present(self, p, controls) -> None:
        """A presented frame (not a re-show of the same one)."""
        self._seen[controls.serial] = (controls.mix, controls.bypass)
        self.check_errors()
        rec = self.current
        if rec is None:
            return
        bypass_frame = p.tuned is p.frame.rgb
        mix, bypass = self._state(p, controls, bypass_frame)
        inferred = not bypass_frame and p.bases is not None
        compact = inferred and p.bases.x.element_size() == 2  # the cache's float16
        state = mix_state_json(mix, bypass, compact, luma=bool(p.bases.luma) if inferred else None)
        rec.present(p.frame.pts, p.frame.duration, p.tuned, state, copy=not bypass_frame)

    def _state(self, p, controls, bypass_frame: bool):
        seen = self._seen.get(p.serial)
        if seen is not None:
            return seen
        # The compositor blended with a snapshot that was replaced before the main thread saw it
        # (two edits between two frames): find the mix whose coefficients are the ones applied.
        from engine import compose

        self.unknown_serials += 1
        if bypass_frame:
            return controls.mix, True
        for serial in sorted(self._seen, reverse=True):
            mix, bypass = self._seen[serial]
            if not bypass and p.bases is not None and (mix.luma, mix.chroma) == p.gains:
                c = compose.mix_coefficients_np(mix, p.bases.levels, p.bases.auto)
                if tuple(float(v) for v in c) == tuple(p.coeffs):
                    return mix, False
        return controls.mix, False

    def check_errors(self) -> None:
        """Report a recording whose encoder failed (once) and stop counting it as running. The main
        loop asks on every pass: paused, no frame is presented to ask on its way."""
        for rec in [self.current, *self.finished]:
            if rec is not None and rec.error is not None and id(rec) not in self._reported:
                self._reported.add(id(rec))
                self.player.notice(f"recording to {rec.target} failed: {one_line(rec.error)}")
                if rec is self.current:
                    self.current = None
                    rec.stop()
                    self.finished.append(rec)

    def _meta(self) -> dict:
        """Tuning-track metadata (called on the encoder thread: hashing is slow for big files)."""
        p = self.player
        d = p.denoiser
        import torch

        return {"model": model_meta(d, p.weights, self.hashes), "device": d.device.type,
                "precision": dtype_name(d.dtype), "noise": p.cfg.noise, "torch": torch.__version__,
                "source": source_meta(p.info, p.demo, self.hashes)}

    # ---- HUD, stats, shutdown ---------------------------------------------------------------
    def badges(self) -> list[str]:
        self.check_errors()
        out = []
        rec = self.current
        if rec is not None:
            out.append("REC LAG" if rec.lagging() else "REC ●")
        elif any(r.is_alive() for r in self.finished):
            out.append("REC SAVING")
        dropped = self.frames_dropped
        if dropped:
            out.append(f"REC DROPPED {dropped}")
        return out

    @property
    def all(self) -> list[Recorder]:
        return self.finished + ([self.current] if self.current is not None else [])

    @property
    def frames_dropped(self) -> int:
        return sum(r.frames_dropped for r in self.all)

    def close(self) -> None:
        """Stop the running recording and wait until every recording is finished on disk."""
        self.stop()
        slow = [r for r in self.finished if r.is_alive() and r.lag_frames() > r.fps]
        if slow:
            print(f"rcd-player: finishing the recording ({sum(r.lag_frames() for r in slow)} frames to encode)…",
                  file=sys.stderr, flush=True)
        for r in self.finished:
            if r.is_alive():
                r.join()
        self.check_errors()

    def stats(self) -> dict:
        recs = self.all
        ms = [v for r in recs for v in r.encode_ms]
        return {
            "record_frames": sum(r.frames_written for r in recs),
            "record_frames_queued": sum(r.frames_queued for r in recs),
            "record_frames_dropped": self.frames_dropped,
            "record_frames_skipped": sum(r.frames_skipped for r in recs),  # shown again (loop, seek back)
            "record_lag_max_frames": max((r.lag_max_frames for r in recs), default=0),
            "record_encode_ms_p50": round(float(np.median(ms)), 3) if ms else None,
            "record_files": [str(r.final_path) for r in recs if r.final_path is not None],
            "record_errors": [f"{r.target}: {one_line(r.error)}" for r in recs if r.error is not None],
        }
