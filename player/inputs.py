"""What an INPUT names and how FFmpeg is to open it: a media file (probed), an image sequence, or
raw video.

Camera and ISP work produces two kinds of input a media player usually cannot open by name alone:
- **image sequences** — numbered captures (`frame_%04d.png`, FFmpeg's printf pattern) or a glob
  (`'shots/*.tif'`): FFmpeg's image2 demuxer at --fps (default 25, FFmpeg's);
- **raw video** — headerless YUV/RGB dumps (`.yuv`, `.nv12`, `.rgb` …): FFmpeg's rawvideo demuxer
  with the size and pixel format from `--raw WxH[:FORMAT]`, or, as YUView does, from the file's
  name (`pier_1920x1080_nv12_30fps.yuv`), said in one line.
Anything else is opened as FFmpeg probes it. A path that exists as a file is always that file,
whatever characters its name holds.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import av

DEFAULT_FPS = 25.0  # FFmpeg's (image2, rawvideo) and mpv's rate for inputs that carry none
# Headerless raw video by extension, and the pixel format each implies when neither --raw nor the
# name says one (.yuv: planar 4:2:0, what every YUV dump tool writes by default).
RAW_EXTENSIONS = {".yuv": "yuv420p", ".nv12": "nv12", ".nv21": "nv21", ".rgb": "rgb24", ".bgr": "bgr24",
                  ".gray": "gray", ".y": "gray", ".cif": "yuv420p", ".qcif": "yuv420p"}
# Names ISP tools give formats that FFmpeg names otherwise.
FORMAT_ALIASES = {"i420": "yuv420p", "iyuv": "yuv420p", "yuy2": "yuyv422", "yuyv": "yuyv422", "uyvy": "uyvy422",
                  "p010": "p010le", "p016": "p016le", "y8": "gray", "grey": "gray", "y10": "gray10le",
                  "y16": "gray16le", "rgb": "rgb24", "bgr": "bgr24"}
# Frame sizes by name, as the test sequences of video coding are named (foreman_cif.yuv) and as
# YUView reads them: a word of the name, or the extension.
SIZE_WORDS = {"sqcif": (128, 96), "qcif": (176, 144), "cif": (352, 288), "4cif": (704, 576), "16cif": (1408, 1152),
              "sif": (352, 240), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160), "4k": (3840, 2160)}
PRINTF = re.compile(r"%0?\d*d")  # image2's frame-number pattern: %d, %4d, %04d
SIZE_IN_NAME = re.compile(r"(?<![0-9])([1-9][0-9]{1,4})[x×]([1-9][0-9]{1,4})(?![0-9])")
FPS_IN_NAME = re.compile(r"(?<![0-9.])([0-9]+(?:\.[0-9]+)?)(?:fps|hz)(?![a-z])", re.I)
MAX_RAW_SIDE = 16384  # FFmpeg's own bound on a frame's side
# --matrix names and FFmpeg's AVColorSpace codes (player/colour.py reads frames with them). Raw YUV has
# no tags, and a camera pipeline's dumps often hold another matrix and range than the size suggests
# (Android's YUV_420_888 is JPEG's: BT.601, full range, at any size); mistagged files happen too.
MATRICES = {"bt601": 6, "bt709": 1, "bt2020": 9, "smpte240m": 7}
RANGES = ("limited", "full")


class InputError(Exception):
    """An INPUT that cannot be opened as named (one line)."""


@dataclass(frozen=True)
class Input:
    """How to open one input: av.open(path, format=demuxer, options=options)."""

    path: str
    demuxer: str | None = None  # None: FFmpeg probes the file
    options: dict[str, str] = field(default_factory=dict)
    notice: str = ""  # one line saying what was assumed (raw video's size from its name …)
    matrix: str | None = None  # --matrix: the YUV matrix to read it with (MATRICES), whatever it says or lacks
    range: str | None = None  # --range: "limited" or "full", likewise

    @property
    def name(self) -> str:
        return Path(self.path).name

    def open(self) -> av.container.InputContainer:
        return av.open(self.path, format=self.demuxer, options=dict(self.options))

    def meta(self) -> dict:
        """For a tuning track: what re-opens it the same way (empty for a probed file read as tagged)."""
        said = {"demuxer": self.demuxer, "options": dict(self.options)} if self.demuxer else {}
        return {**said, **{k: v for k, v in (("matrix", self.matrix), ("range", self.range)) if v}}


def output_stem(name: str, path: str | None) -> str:
    """The stem of files made from an input (screenshots, recordings): an image sequence's pattern
    without its %04d or * — which would otherwise land in those files' names."""
    stem = re.sub(r"[*?\[\]]", "", PRINTF.sub("", Path(name).stem)).strip("_-. ")
    return stem or Path(path or ".").resolve().parent.name or "input"


def pixel_format(name: str) -> str:
    """FFmpeg's name for a pixel format given by FFmpeg's or an ISP tool's name (ValueError if neither)."""
    name = FORMAT_ALIASES.get(name.lower(), name.lower())
    av.VideoFormat(name)  # ValueError: not a pixel format
    return name


def parse_raw(spec: str) -> tuple[int, int, str | None]:
    """`WxH` or `WxH:FORMAT` → (width, height, format or None). ValueError with the reason."""
    size, _, fmt = spec.partition(":")
    m = re.fullmatch(r"([0-9]+)[x×]([0-9]+)", size.strip().lower())
    if not m:
        raise ValueError(f"expected WIDTHxHEIGHT[:FORMAT], e.g. 1920x1080:nv12, got {spec!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (0 < w <= MAX_RAW_SIDE and 0 < h <= MAX_RAW_SIDE):
        raise ValueError(f"a side of 1 to {MAX_RAW_SIDE} pixels, got {spec!r}")
    try:
        return w, h, pixel_format(fmt) if fmt else None
    except ValueError:
        raise ValueError(f"{fmt!r} is not a pixel format FFmpeg knows (yuv420p, nv12, p010le, yuyv422, "
                         "rgb24, gray …)") from None


def _size_in_name(p: Path) -> tuple[int, int] | None:
    """WxH in a raw file's name (cap_1280x720.yuv), else a size's name (foreman_cif.yuv, x.qcif)."""
    m = SIZE_IN_NAME.search(p.stem)
    if m:
        return int(m.group(1)), int(m.group(2))
    words = [*re.split(r"[_\-. ]+", p.stem.lower()), p.suffix.lower().lstrip(".")]
    return next((SIZE_WORDS[t] for t in words if t in SIZE_WORDS), None)


def _format_in_name(stem: str) -> str | None:
    for token in re.split(r"[_\-. ]+", stem.lower()):
        if token in FORMAT_ALIASES or (token and not token.isdigit() and _is_format(token)):
            return pixel_format(token)
    return None


def _is_format(name: str) -> bool:
    try:
        av.VideoFormat(name)
        return True
    except ValueError:
        return False


def resolve(text: str, fps: float | None = None, raw: str | None = None, matrix: str | None = None,
            range_: str | None = None) -> Input:
    """The Input an INPUT argument names, read with matrix and range (--matrix, --range) where given.
    Raises InputError (one line) where it cannot be opened."""
    spec = _resolve(text, fps, raw)
    return checked(replace(spec, matrix=matrix, range=range_)) if matrix or range_ else spec


def checked(spec: Input) -> Input:
    """spec, if its matrix and range are known (a tuning track's may be damaged); else InputError."""
    if spec.matrix is not None and spec.matrix not in MATRICES:
        raise InputError(f"--matrix: {spec.matrix!r} is not one of {', '.join(MATRICES)}")
    if spec.range is not None and spec.range not in RANGES:
        raise InputError(f"--range: {spec.range!r} is not one of {', '.join(RANGES)}")
    return spec


def _resolve(text: str, fps: float | None, raw: str | None) -> Input:
    p = Path(text)
    if p.is_dir():
        raise InputError(f"{text}: is a directory, not a media file (an image sequence is named by a "
                         "pattern: 'DIR/frame_%04d.png' or 'DIR/*.png')")
    rate = {"framerate": f"{fps:g}"} if fps else {}
    if raw is not None or (p.suffix.lower() in RAW_EXTENSIONS and p.is_file()):
        return _raw(text, fps, raw)
    if p.exists():
        if fps:
            raise InputError(f"{text}: --fps sets the rate of image sequences and raw video; a media file has "
                             "its own timestamps")
        return Input(text)
    if PRINTF.search(p.name):
        numbers = sequence_numbers(p)
        if not numbers:
            raise InputError(f"{text}: no file matches this pattern")
        # FFmpeg looks for the first image among the numbers 0 to 4 only, and stops at the first
        # number missing after it: a camera's DSC_1000.png … was "no such file", and a sequence with
        # a gap ended there without a word.
        run = next((i for i, n in enumerate(numbers) if n != numbers[0] + i), len(numbers))
        said = [] if fps else [f"{DEFAULT_FPS:g} fps (--fps to change)"]
        if run < len(numbers):
            said.append(f"{len(numbers) - run} of its {len(numbers)} images follow a gap in the numbering after "
                        f"{frame_name(p.name, numbers[run - 1])} and are not played (a glob, "
                        f"'{p.parent / PRINTF.sub('*', p.name, count=1)}', plays them all)")
        notice = f"image sequence: {'; '.join(said)}" if said else ""
        return Input(text, "image2", {**rate, "start_number": str(numbers[0])}, notice)
    if glob.has_magic(p.name):
        if not glob.glob(text):
            raise InputError(f"{text}: no file matches this pattern")
        notice = "" if fps else f"image sequence: {DEFAULT_FPS:g} fps (--fps to change)"
        return Input(text, "image2", {**rate, "pattern_type": "glob"}, notice)
    raise InputError(f"{text}: no such file")


def frame_name(pattern: str, n: int) -> str:
    """The file name a printf pattern gives number n (%d, %4d, %04d)."""
    return PRINTF.sub(lambda m: m.group() % n, pattern, count=1)


def sequence_numbers(p: Path) -> list[int]:
    """The numbers, in order, of the files on disk that a printf pattern names."""
    m = PRINTF.search(p.name)
    found = re.compile(re.escape(p.name[:m.start()]) + r" *([0-9]+)" + re.escape(p.name[m.end():]))
    try:
        names = [e.name for e in (p.parent if str(p.parent) else Path(".")).iterdir()]
    except OSError:
        return []
    numbers = {int(f.group(1)) for f in map(found.fullmatch, names) if f}
    return sorted(n for n in numbers if frame_name(p.name, n) in names)


def _raw(text: str, fps: float | None, raw: str | None) -> Input:
    """Raw video: size and format from --raw, else from the name; the rate from --fps, else the name."""
    p = Path(text)
    if not p.is_file():
        raise InputError(f"{text}: no such file")
    said = []  # what was assumed, and from where
    if raw is not None:
        try:
            w, h, fmt = parse_raw(raw)
        except ValueError as e:
            raise InputError(f"--raw: {e}") from None
    else:
        size = _size_in_name(p)
        if size is None:
            raise InputError(f"{text}: raw video has no header: give its size and format, e.g. --raw 1920x1080:nv12")
        (w, h), fmt = size, None
        said.append(f"{w}x{h} (its name)")
    if fmt is None:
        fmt = _format_in_name(p.stem)
        if fmt is None:
            fmt = RAW_EXTENSIONS.get(p.suffix.lower(), "yuv420p")
            said.append(f"{fmt} ({p.suffix or 'no extension'})")
        else:
            said.append(f"{fmt} (its name)")
    if fps is None:
        m = FPS_IN_NAME.search(p.stem)
        fps = float(m.group(1)) if m and 0 < float(m.group(1)) <= 1000 else None
        said.append(f"{fps:g} fps (its name)" if fps else f"{DEFAULT_FPS:g} fps (FFmpeg's default)")
    options = {"video_size": f"{w}x{h}", "pixel_format": fmt, "framerate": f"{fps or DEFAULT_FPS:g}"}
    frame_bytes = _frame_bytes(text, options)
    size = p.stat().st_size
    if size < frame_bytes:
        raise InputError(f"{text}: {size} bytes, less than one {w}x{h} {fmt} frame ({frame_bytes} bytes): "
                         "is --raw right?")
    notice = f"raw video: {', '.join(said)}; --raw WxH:FORMAT and --fps set them" if said else ""
    if size % frame_bytes:
        notice = (notice + "; " if notice else "raw video: ") + \
            f"{size % frame_bytes} bytes at the end are not a whole frame (are the size and format right?)"
    return Input(text, "rawvideo", options, notice)


def _frame_bytes(path: str, options: dict[str, str]) -> int:
    """Bytes of one frame as FFmpeg's rawvideo demuxer cuts them: it states them only as the stream's
    bit rate (frame bytes × 8 × frame rate)."""
    try:
        with av.open(path, format="rawvideo", options=dict(options)) as c:
            return round(c.streams.video[0].codec_context.bit_rate / (8 * float(options["framerate"])))
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: cannot be read as raw video ({e.strerror or e})") from None
