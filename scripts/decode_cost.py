"""What the decoder thread spends on each frame of an input: demuxing, decoding and conversion to
RGB (player/decode.py, player/colour.py), CPU milliseconds a frame. The README's decoding timings
come from it, the trees alternated (`PYTHONPATH=TREE python scripts/decode_cost.py …`).

    python scripts/decode_cost.py INPUT [INPUT …] [--frames 60] [--passes 2] [--fps F] [--raw WxH:FORMAT]

INPUT is anything the player opens (a file, an image sequence's pattern, raw video). The first
pass over the frames is not timed (the kernels load, the file enters the page cache); the next
--passes are, over at most --frames frames each.
"""

from __future__ import annotations

import argparse
import time

from engine import native
from player.decode import FileSource, MediaError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="INPUT")
    ap.add_argument("--frames", type=int, default=60, help="frames a pass (default 60)")
    ap.add_argument("--passes", type=int, default=2, help="timed passes (default 2)")
    ap.add_argument("--fps", type=float, default=None, help="as the player's --fps")
    ap.add_argument("--raw", default=None, help="as the player's --raw")
    args = ap.parse_args()
    native.library()
    for path in args.inputs:
        try:
            source = FileSource(path, args.fps, args.raw)
        except MediaError as e:
            print(f"{path}: {e}")
            continue
        for _ in zip(range(args.frames), source.read(0.0, "video")):
            pass
        c0, n = time.process_time(), 0
        for _ in range(args.passes):
            for _ in zip(range(args.frames), source.read(0.0, "video")):
                n += 1
        ms = (time.process_time() - c0) / max(n, 1) * 1e3
        info = source.info
        print(f"{info.name:40s} {info.width}x{info.height} {info.pix_fmt:12s} {ms:6.2f} ms CPU a frame ({n} frames)")
        source.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
