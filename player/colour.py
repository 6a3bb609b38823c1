"""Which YUV ↔ RGB matrix a video uses, and the colour tags a recording carries.

Owns the one convention the decoder and the encoder share, so that a frame goes
file → RGB → recording with the same matrix both ways, and the recording says which it is.
Tagged files are taken at their word. Untagged ones get mpv's (and FFmpeg's players') guess:
BT.709 for HD (1280 wide or more, or taller than 576 lines), else BT.601. Before this, every
untagged file was decoded with BT.601 and recordings went out in BT.601 with no tags, which a
player reading a 720p file as BT.709 showed with hues off by up to 27 levels.
"""

from __future__ import annotations

from dataclasses import dataclass

# FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic codes (libavutil/pixfmt.h).
UNSPECIFIED = 2
SPC_BT709, SPC_BT470BG, SPC_SMPTE170M, SPC_SMPTE240M, SPC_BT2020_NCL, SPC_BT2020_CL = 1, 5, 6, 7, 9, 10
PRI_BT709, PRI_BT470BG, PRI_SMPTE170M = 1, 5, 6
TRC_BT709, TRC_SMPTE170M = 1, 6
RANGE_MPEG, RANGE_JPEG = 1, 2  # limited range (16–235): what recordings are written in; full: RGB ones
SPC_RGB = 0  # no matrix: the lossless recordings' RGB
# swscale's name of each matrix (PyAV's reformat src_/dst_colorspace).
SWS_MATRIX = {SPC_BT709: "ITU709", SPC_BT470BG: "ITU601", SPC_SMPTE170M: "ITU601", SPC_SMPTE240M: "SMPTE240M",
              SPC_BT2020_NCL: "BT2020", SPC_BT2020_CL: "BT2020"}


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
