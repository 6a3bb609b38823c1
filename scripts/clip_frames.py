"""Frames of video clips as PNG images, for engine.evaluate: the held-out video check of weights/README.md.

A measurement aid, as the table there was made:
    python scripts/clip_frames.py --clips ../shared/data/clips --out /tmp/clipframes
    python -m engine.evaluate --weights live --images /tmp/clipframes --sigma 15,25,50 --json clips.json
One frame per clip (--frame, default 10: past the first GOP's start, where some encoders begin soft),
halved (bicubic) above --max-width so that no single clip dominates the mean. Writes nothing into
the repository: the clips are third-party data, used by path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
from PIL import Image

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".avi"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", required=True, help="folder of video clips")
    ap.add_argument("--out", required=True, help="folder for the PNG frames (created)")
    ap.add_argument("--frame", type=int, default=10, help="index of the decoded frame taken from each clip")
    ap.add_argument("--max-width", type=int, default=1280, help="wider frames are halved")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in Path(args.clips).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise SystemExit(f"error: {args.clips}: no video clips ({', '.join(sorted(VIDEO_SUFFIXES))})")
    for path in clips:
        with av.open(str(path)) as c:
            frame = next((f for i, f in enumerate(c.decode(video=0)) if i == args.frame), None)
        if frame is None:
            print(f"{path.name}: fewer than {args.frame + 1} frames, skipped")
            continue
        im = frame.to_image()  # RGB by PyAV's default conversion
        if im.width > args.max_width:
            im = im.resize((im.width // 2, im.height // 2), Image.BICUBIC)
        im.save(out / f"{path.stem}.png")
        print(f"{path.name}: {im.width}×{im.height}")


if __name__ == "__main__":
    main()
