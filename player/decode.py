"""Sources and the decoder thread: media file (PyAV) or the built-in demo → video frames + audio.

Owns opening and validating inputs (one-line `MediaError` for anything unusable), demuxing and
decoding with frame threading, conversion to RGB and to float PCM at the output rate, seeking,
and skipping undecodable packets in the middle of a file. Knows nothing of models or outputs.

One thread per stream kind fills its bounded queue (video ≈ a few frames, audio ≈ seconds) and
tags every item with the epoch of the seek it belongs to.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from dataclasses import dataclass, field, replace
from typing import Iterator

import av
import numpy as np

from player import colour as col
from player import tonemap
from player import inputs
from player.frames import AudioChunk, VideoFrame
from player.queues import ClosableQueue
from player.tempo import stretch

AUDIO_RATE = 48000  # every source is resampled to this; the JACK/CI servers and most devices run at it
AUDIO_CHANNELS = 2
# Timestamps that jump by more than this (captures joined end to end, a transport stream's clock
# reset) are a join, not a pause: the file's times after it are shifted so that playback, recordings
# and renders go straight on (a recording of such a file filled ten hours of silence, and the memory).
TIMESTAMP_JUMP_S = 10.0
# A frame stamped at or before its predecessor is one out of place (a muxer's glitch): it is put half
# a frame after it, so that the times after it stay right. This many in a row are a file whose times
# do not advance at all (every frame stamped 0, as broken muxers write): they are timed by the frame
# rate. (Each put 1 ms after the last, such a file played a frame in three; the rest were dropped late.)
STALLED_RUN = 2
SEEK_EPS_S = 1e-6  # a seek half a frame after a frame still lands on it (9.62 − 0.02 > 9.60 in floats)
AUDIO_PTS_JITTER_S = 0.002  # audio timestamps within this of contiguous are container rounding (Matroska: 1 ms)
DEMO_AUDIO_BLOCK = 1024  # samples per chunk from the demo's tone generator (~21 ms)
PUT_POLL_S = 0.05  # blocked puts wake this often to notice a seek or a stop
# An audio stream none of whose first packets decode (damaged, or a codec this FFmpeg lacks) is
# not played: the video runs on the wall clock and the player says why. About 1 s of AAC.
AUDIO_PROBE_PACKETS = 48
# FFmpeg's "video" codecs that draw text files as ANSI art: its tty demuxer opens any .txt, .nfo,
# .asc … file as a 640×400 video of its characters. A text file is not a clip (mpv refuses the tty
# demuxer too); before this, a README named .txt played for its length with exit status 0.
TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


class MediaError(Exception):
    """An input that cannot be played; the message is one line naming the file and the problem."""


@dataclass
class EndOfStream:
    epoch: int
    last_pts: float


@dataclass
class SourceInfo:
    name: str
    width: int
    height: int
    fps: float
    duration: float  # seconds, 0 if unknown
    has_audio: bool
    path: str | None = None
    colour: col.Colour | None = None  # the YUV matrix frames are decoded with (None: guessed from the size)
    sar: Fraction = Fraction(1)  # pixel aspect ratio (width / height of one pixel; anamorphic video ≠ 1)
    audio_problem: str = ""  # why the file's audio stream is not played (one line), if it has one that is not
    still: bool = False  # a single image (PNG, JPEG, TIFF …): held on screen to be tuned, not played for 1/fps
    opened: dict = field(default_factory=dict)  # how an image sequence or raw video was opened (inputs.Input.meta)
    pix_fmt: str = ""  # FFmpeg's name of the decoded frames' format (yuv420p10le, nv12 …), for the HUD
    peak_nits: float = 0.0  # HDR10's light level of the content (tonemap.content_peak), 0: not given
    chroma: tuple[int, int] = (2, 2)  # the chroma subsampling (rows, columns) of the upright picture, which recordings keep

    @property
    def stem(self) -> str:
        """What screenshots and recordings of it are named after."""
        return inputs.output_stem(self.name, self.path)


class FileSource:
    """A media file through PyAV. The constructor validates: it decodes the first video frame."""

    def __init__(self, source: str | inputs.Input, fps: float | None = None, raw: str | None = None,
                 matrix: str | None = None, range_: str | None = None):
        """source: an INPUT argument (the rest as --fps, --raw, --matrix and --range give them) or a
        resolved Input."""
        try:
            self.input = (inputs.checked(source) if isinstance(source, inputs.Input)
                          else inputs.resolve(source, fps, raw, matrix, range_))
        except inputs.InputError as e:
            raise MediaError(str(e)) from None
        self.path = path = self.input.path
        try:
            self.container = self.input.open()
        except (av.error.FFmpegError, UnicodeDecodeError) as e:
            raise MediaError(f"{path}: not a readable media file ({_one_line(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(f"{path}: has no video stream")
        self.vstream = self.container.streams.video[0]
        if self.vstream.codec_context.name in TEXT_ART_CODECS:
            self.container.close()
            raise MediaError(f"{path}: a text file, not a video")
        self.vstream.thread_type = "AUTO"
        self.astream = self.container.streams.audio[0] if self.container.streams.audio else None
        audio_problem = self._audio_problem() if self.astream is not None else ""
        if audio_problem:
            self.astream = None
        rate = self.vstream.average_rate or self.vstream.guessed_rate or 30
        fps = float(rate) if rate else 30.0
        duration = 0.0
        if self.vstream.duration and self.vstream.time_base:
            duration = float(self.vstream.duration * self.vstream.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1e6
        first = self._first_frame()
        if first.time is None:
            # No timestamps (a raw .h264 stream): frames are timed by the rate, and the demuxer's
            # average is FFmpeg's default of 25 fps; the codec's own (the stream's VUI) is the real one.
            rate = self.vstream.codec_context.framerate or self.vstream.guessed_rate or rate
            fps = float(rate) if rate else 30.0
        # Display rotation (a phone's portrait clip: its display matrix): frames are turned upright
        # here, as FFmpeg's players do, so the picture, screenshots and recordings stand upright.
        # PyAV's rotation is the counter-clockwise angle; np.rot90 turns counter-clockwise too.
        self.quarter_turns = int(round(getattr(first, "rotation", 0) / 90.0)) % 4
        width, height = (first.height, first.width) if self.quarter_turns % 2 else (first.width, first.height)
        sar = self.vstream.sample_aspect_ratio or self.vstream.codec_context.sample_aspect_ratio
        sar = Fraction(sar) if sar and 0.1 <= sar <= 10 else Fraction(1)  # (0/1 and absurd values: square)
        self.info = SourceInfo(name=self.input.name, width=width, height=height, fps=fps if 0 < fps < 1000 else 30.0,
                               duration=duration, has_audio=self.astream is not None, path=self.path,
                               colour=self._colour(first), sar=1 / sar if self.quarter_turns % 2 else sar,
                               audio_problem=audio_problem, still=self._is_still(), opened=self.input.meta(),
                               pix_fmt=first.format.name, peak_nits=tonemap.content_peak(first),
                               chroma=self._chroma(first.format.name))
        self.bad_packets = 0
        self.fine = False  # also decode each frame unrounded (VideoFrame.fine), where the source has over 8 bits
        self._containers: dict[str, av.container.InputContainer] = {}

    def _chroma(self, pix_fmt: str) -> tuple[int, int]:
        """The decoded format's chroma subsampling, turned with the picture (4:2:0 for RGB, grey and
        the formats the native conversions do not know)."""
        lay = col.layout(pix_fmt)
        sub = lay.sub if lay is not None else (2, 2)
        return sub[::-1] if self.quarter_turns % 2 else sub

    def _colour(self, first) -> col.Colour:
        """The frames' colour: as tagged (or guessed), the matrix as --matrix says where it does."""
        colour = col.of_frame(first)
        if self.input.matrix is not None:
            colour = replace(colour, colorspace=inputs.MATRICES[self.input.matrix])
        return colour

    def _audio_problem(self) -> str:
        """'' if one of the first AUDIO_PROBE_PACKETS audio packets decodes (or none fails), else why
        the sound cannot be played. Reads through a demuxer of its own."""
        error = None
        try:
            with self.input.open() as c:
                for n, packet in enumerate(c.demux(c.streams.audio[0])):
                    if n >= AUDIO_PROBE_PACKETS:
                        break
                    try:
                        if packet.decode():
                            return ""
                    except av.error.FFmpegError as e:
                        error = e
        except av.error.FFmpegError as e:
            error = e
        return f"the audio stream cannot be decoded ({_one_line(error)})" if error is not None else ""

    def _is_still(self) -> bool:
        """Whether the file is one image: read by an image demuxer (image2 by extension, or a
        "*_pipe" one by content) or as raw video, and holding no second frame (image2 also reads
        numbered sequences)."""
        name = self.container.format.name
        if name not in ("image2", "rawvideo") and not name.endswith("_pipe"):  # (one raw frame: an ISP's dump)
            return False
        try:
            with self.input.open() as c:
                return sum(1 for _ in zip(range(2), c.decode(video=0))) == 1
        except av.error.FFmpegError:
            return False

    def _first_frame(self):
        try:
            for frame in self.container.decode(self.vstream):
                return frame
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: video cannot be decoded ({_one_line(e)})") from None
        raise MediaError(f"{self.path}: the video stream has no decodable frames (truncated or corrupt?)")

    def read(self, start: float, kind: str) -> Iterator[VideoFrame | AudioChunk]:
        """Video frames (kind "video") or audio chunks ("audio") from `start` seconds on.

        Each kind reads through its own demuxer (mpv keeps one queue per stream too), so audio
        runs seconds ahead while video waits for the backbone, and never starves the device.
        """
        c = self._containers.get(kind)
        if c is None:
            c = self.container if kind == "video" else self.input.open()
            self._containers[kind] = c
        try:
            c.seek(int(start * 1e6) if start > 0 else 0, backward=True, any_frame=False)  # AV_TIME_BASE units
        except av.error.FFmpegError:
            # Not seekable (a raw .h264 stream, packets without timestamps): read it again from the
            # start and skip to `start` by decoding, as FFmpeg's tools do.
            c = self._reopen(kind, c)
        if kind == "audio":
            yield from self._audio(c, c.streams.audio[0], start)
            return
        shown = False
        for frame in self._video(c, c.streams.video[0], start):
            shown = True
            yield frame
        if not shown:
            # A seek that FFmpeg called done but that left nothing to decode (the image2 demuxer's one
            # JPEG, after a seek to 0: it played nothing): the same, read from the start.
            c = self._reopen(kind, c)
            yield from self._video(c, c.streams.video[0], start)

    def _reopen(self, kind: str, old) -> av.container.InputContainer:
        """kind's demuxer opened anew at the file's start (the constructor's is kept: close() ends it)."""
        if old is not self.container:
            old.close()
        c = self._containers[kind] = self.input.open()
        if kind == "video":
            c.streams.video[0].thread_type = "AUTO"
        return c

    def _packets(self, c, stream):
        for packet in c.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                self.bad_packets += 1  # a damaged packet mid-file: skip it, playback goes on

    def _video(self, c, stream, start: float):
        index, last_pts = 0, -math.inf
        nominal = 1.0 / self.info.fps
        jump = max(TIMESTAMP_JUMP_S, 10 * nominal)  # (a slide show's frames may lie minutes apart)
        shift = 0.0  # subtracted from the file's times after a jump
        skipped = None  # (frame, pts) of the last frame before `start`
        stalled = 0  # frames in a row whose time did not advance
        for frame in self._packets(c, stream):
            t = frame.time
            if t is None:  # no timestamps (a raw .h264 stream): the frame rate's, from 0
                pts = last_pts + nominal if last_pts > -math.inf else 0.0
            else:
                pts = float(t) - shift
            if last_pts > -math.inf and abs(pts - last_pts - nominal) > jump:  # a join: the next frame
                shift += pts - last_pts - nominal
                pts = last_pts + nominal
            if pts <= last_pts:  # irregular or non-monotonic timestamps: keep display order
                stalled += 1
                pts = last_pts + (nominal if stalled >= STALLED_RUN else nominal / 2)
            else:
                stalled = 0
            last_pts = pts
            if pts < start - nominal / 2 - SEEK_EPS_S:
                skipped = (frame, pts)
                continue
            yield self._frame(frame, index, pts, nominal)
            index += 1
        if index == 0 and skipped is not None:  # a seek past the last frame (the end of a longer
            yield self._frame(skipped[0], 0, skipped[1], nominal)  # sound, a rounded duration): that frame

    def _frame(self, frame, index: int, pts: float, duration: float) -> VideoFrame:
        if self.input.range is not None:  # --range: the samples' range, whatever the frame says
            frame.color_range = col.RANGE_JPEG if self.input.range == "full" else col.RANGE_MPEG
        fine = None
        if self.fine and col.bits(frame.format.name) > 8:  # rgb is its rounding, so that both are one picture
            rgb = np.empty((frame.height, frame.width, 3), np.uint8)
            fine = col.to_rgb_fine(frame, self.info.colour, rounded=rgb)
        else:
            rgb = col.to_rgb(frame, self.info.colour)
        if self.quarter_turns:
            rgb, fine = (None if a is None else np.ascontiguousarray(np.rot90(a, self.quarter_turns)) for a in (rgb, fine))
        return VideoFrame(index=index, pts=pts, duration=duration, rgb=rgb, epoch=0, fine=fine)

    def _audio(self, c, stream, start: float):
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=AUDIO_RATE)
        anchor, since = None, 0  # a contiguous run's first pts, and the samples since it
        shift = 0.0  # as in _video: subtracted after a jump of the timestamps
        for frame in self._packets(c, stream):
            t = frame.time
            for out in resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1, AUDIO_CHANNELS)  # packed float32 (n, 2)
                apts = (float(out.time) if out.time is not None else (t or 0.0)) - shift
                expected = None if anchor is None else anchor + since / AUDIO_RATE  # where the last chunk ended
                # A chunk that starts there, give or take the container's rounding, is placed by the
                # sample count: Matroska's 1 ms timestamps put every 1024-sample chunk 16 samples
                # early, which a recording cut out of the sound. One far from it is a join: the
                # sound goes on from there.
                if expected is not None and abs(apts - expected) > TIMESTAMP_JUMP_S:
                    shift += apts - expected
                    apts = expected
                if expected is not None and abs(apts - expected) <= AUDIO_PTS_JITTER_S:
                    apts = expected
                else:
                    anchor, since = apts, 0  # the first chunk, or a real gap or jump
                since += len(pcm)
                if apts + len(pcm) / AUDIO_RATE < start:
                    continue
                yield AudioChunk(pts=apts, pcm=pcm, epoch=0)

    def close(self) -> None:
        for c in {id(c): c for c in [self.container, *self._containers.values()]}.values():
            c.close()


class DemoFeed:
    """The built-in demo source (player/demo.py) presented as a stream of frames and audio."""

    def __init__(self, demo):
        self.demo = demo
        self.info = SourceInfo(name="demo", width=demo.width, height=demo.height, fps=demo.fps,
                               duration=demo.num_frames / demo.fps, has_audio=True,
                               colour=col.guess(demo.width, demo.height), pix_fmt="rgb24")
        self.bad_packets = 0

    def read(self, start: float, kind: str) -> Iterator[VideoFrame | AudioChunk]:
        fps, n = self.demo.fps, self.demo.num_frames
        i = max(0, int(round(start * fps)))
        if kind == "audio":
            sample, end = int(round(i / fps * AUDIO_RATE)), int(round(n / fps * AUDIO_RATE))
            while sample < end:
                pcm = self.demo.audio(sample, min(DEMO_AUDIO_BLOCK, end - sample))
                yield AudioChunk(pts=sample / AUDIO_RATE, pcm=_as_stereo(pcm), epoch=0)
                sample += DEMO_AUDIO_BLOCK
            return
        index = 0
        while i < n:
            noisy, clean = self.demo.frame(i)
            yield VideoFrame(index=index, pts=i / fps, duration=1.0 / fps, rgb=noisy, epoch=0, clean=clean)
            i += 1
            index += 1

    def close(self) -> None:
        self.demo.close()  # ends its band threads


def _as_stereo(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim == 1:
        pcm = pcm[:, None]
    if pcm.shape[1] == AUDIO_CHANNELS:
        return pcm
    return np.repeat(pcm[:, :1], AUDIO_CHANNELS, axis=1)


def _one_line(e: Exception) -> str:
    if isinstance(e, av.error.FFmpegError) and getattr(e, "strerror", None):
        return e.strerror  # FFmpeg's words without its errno and the file name, which the caller says
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


class DecodeThread(threading.Thread):
    """Reads one kind ("video" or "audio") of the source into its queue; `seek(t, epoch)` restarts
    it at t. The video thread ends each pass with an EndOfStream marker."""

    def __init__(self, source, kind: str, queue: ClosableQueue, start: float = 0.0):
        super().__init__(name=f"decode-{kind}", daemon=True)
        self.source, self.kind, self.queue = source, kind, queue
        self._lock = threading.Lock()  # protects _seek_to, _epoch, _speed, serial
        self._seek_to: float | None = start
        self._epoch = 0
        # The pass: every seek or restart makes a new one, and audio chunks carry theirs. A restart
        # of the sound keeps epoch and speed, and the chunk a blocked put was holding went into the
        # queue right after the clear made room: up to 10 s ahead (a file's whole audio queue).
        self.serial = 0
        self._speed = 1.0  # audio: played at this speed, pitch kept (player/tempo.py)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self.error: BaseException | None = None
        self.done = False  # reached the end of the stream in the current epoch

    def seek(self, t: float, epoch: int) -> None:
        with self._lock:
            self._seek_to, self._epoch = max(0.0, t), epoch
            self.serial += 1
            self.done = False
        self._wake.set()

    def invalidate(self) -> None:
        """What it puts from now on is stale, until the next seek (set_speed) says where to go on."""
        with self._lock:
            self.serial += 1

    def set_speed(self, speed: float, t: float, epoch: int) -> None:
        """Audio from t on at `speed` (what is queued at the old speed is the caller's to drop)."""
        with self._lock:
            self._speed = speed
        self.seek(t, epoch)

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def _pending(self) -> bool:
        return self._seek_to is not None or self._halt.is_set()

    def _put(self, item) -> bool:
        while not self._pending():
            if self.queue.put(item, timeout=PUT_POLL_S):
                return True
            if self.queue.closed:
                return False
        return False

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                with self._lock:
                    start, self._seek_to, epoch, speed, run = self._seek_to, None, self._epoch, self._speed, self.serial
                if start is None:
                    self._wake.wait(0.1)
                    self._wake.clear()
                    continue
                last = 0.0
                items = self.source.read(start, self.kind)
                if self.kind == "audio":
                    items = stretch(items, speed, AUDIO_RATE, AUDIO_CHANNELS)
                for item in items:
                    item.epoch = epoch
                    if self.kind == "audio":
                        item.run = run
                    if not self._put(item):
                        break
                    if isinstance(item, VideoFrame):
                        last = item.pts
                else:
                    if self.kind == "video":
                        self._put(EndOfStream(epoch, last))
                    with self._lock:
                        self.done = self._seek_to is None
        except BaseException as e:  # handed back to the player, which reports it in one line
            self.error = e
            self.queue.close()
