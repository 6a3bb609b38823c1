"""Command line of rcd-player (run_player.py and the `rcd-player` console script).

Owns argument parsing, turning every expected failure into one line on stderr with a non-zero
exit code, and writing --stats-json. Everything else is the Player's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


MAX_DEMO_PIXELS = 7680 * 4320  # the demo source's largest frame: 8K; beyond, its buffers alone exhaust memory


def _size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {s!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {s!r}")
    if w * h > MAX_DEMO_PIXELS:
        raise argparse.ArgumentTypeError(f"at most 7680x4320 pixels (8K), got {s!r}")
    return w, h


def _count(s: str) -> int:
    """A whole number ≥ 0 (0: let the player choose)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (automatic) or more, got {s!r}")
    return v


def _positive(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}")
    return v


MAX_FPS = 240.0  # the fastest displays refresh at 240 Hz; beyond, frames could never be shown
MAX_LANES = 16  # frames in inference at once: more only add memory and latency


def _fps(s: str) -> float:
    v = _positive(s)
    if v > MAX_FPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_FPS:g} frames per second, got {s!r}")
    return v


def _raw(s: str) -> str:
    from player.inputs import parse_raw

    try:
        parse_raw(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


def _lanes(s: str) -> int:
    v = _count(s)
    if v > MAX_LANES:
        raise argparse.ArgumentTypeError(f"at most {MAX_LANES}, got {s!r}")
    return v


def _terminate(signum, frame):
    """SIGTERM ends playback like Ctrl-C: threads joined, recording finished, stats written."""
    raise KeyboardInterrupt


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one does not exist (yet)
        return False


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error for a bad argument (the usage is one `--help` away), as for
    every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="rcd-player",
        description="Real-time video player with live denoise tuning (RCD: one network pass per frame, "
                    "every strength change is a blend). With no INPUT it plays a built-in ISP test scene.",
        epilog="Keys: space pause, ←/→ seek 5 s, ,/. frame step, ↑/↓ strength, [/] character, b bypass, "
               "v view, ? help, q quit. Full table: README.md.")
    ap.add_argument("input", nargs="?", metavar="INPUT",
                    help="video file (anything FFmpeg reads), image sequence ('frame_%%04d.png', 'shots/*.tif') or raw "
                         "video (.yuv …); omit for the demo")
    # --weights/--device/--precision default to None so that --render --track can tell "not given"
    # (then the recording's model and device are used); playback treats None as the device's
    # default model (worker.default_weights) / auto / auto.
    ap.add_argument("--weights", default=None, metavar="PATH|live|quality", help="model checkpoint (default: quality on a CUDA GPU, else live)")
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="where the network runs (default: auto)")
    ap.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"], help=argparse.SUPPRESS)
    ap.add_argument("--noise", default=None, choices=["auto", "rgb", "luma"],  # engine.denoiser.NOISE_MODES (torch not imported yet)
                    help="which noise the network reads in a colour frame: rgb (per channel), luma (the same in R, G "
                         "and B: after a camera's chroma noise reduction, in 4:2:0 video), or auto, per frame from its "
                         "statistics (default; monochrome frames always take the monochrome backbone)"),
    ap.add_argument("--mode", default="auto", choices=["auto", "live", "cache"],
                    help="live: drop late frames; cache: render cache ahead of the playhead (default: chosen from the measured speed)")
    ap.add_argument("--cache-mb", type=int, default=0, metavar="N", help="render-cache budget in MiB (default: 1/4 of RAM, at most 8 GiB)")
    ap.add_argument("--start", type=float, default=0.0, metavar="S", help="start at S seconds (with --render: render from there)")
    ap.add_argument("--speed", type=float, default=1.0, metavar="X",
                    help="play at X times normal speed, 0.25–4 (the sound keeps its pitch; { } change it)")
    ap.add_argument("--loop", type=float, nargs=2, metavar=("A", "B"), help="loop the section A–B seconds")
    ap.add_argument("--preset", metavar="FILE", help="load tuning presets (JSON, as saved with ctrl+s)")
    ap.add_argument("--headless", action="store_true", help="no window, no sound device: null outputs that still run in real time")
    ap.add_argument("--duration", type=float, metavar="S",
                    help="stop after S seconds of playback (with --render: render S seconds)")
    ap.add_argument("--script", metavar="FILE", help="lines 'TIME COMMAND' applied when playback reaches TIME seconds")
    ap.add_argument("--stats-json", metavar="FILE", help="write playback statistics to FILE at exit")
    ap.add_argument("--screenshot-dir", default=".", metavar="DIR", help="where screenshots and R's recordings go (default: .)")
    ap.add_argument("--demo-size", type=_size, default=None, metavar="WxH",
                    help="size of the demo source (default: 1280x720, or 960x540 / 640x360 where the model "
                         "is too slow for 1280x720 at the demo's frame rate)")
    ap.add_argument("--demo-fps", type=_fps, default=30.0, metavar="FPS", help="frame rate of the demo source (default 30)")
    ap.add_argument("--no-audio", action="store_true", help="do not open the sound device")
    ap.add_argument("--threads", type=_count, default=0, metavar="N",
                    help="CPU threads for each inference (default: the cores divided by the lanes)")
    ap.add_argument("--lanes", type=_lanes, default=0, metavar="N",
                    help="frames in inference at once (default: 2 on a CPU with 2 or more cores, else 1)")
    inp = ap.add_argument_group("how INPUT is read: image sequences, raw video, colour")
    inp.add_argument("--fps", type=_fps, default=None, metavar="FPS",
                     help="frame rate of an image sequence or raw video (default: from a raw file's name, else 25)")
    inp.add_argument("--raw", type=_raw, default=None, metavar="WxH[:FORMAT]",
                     help="INPUT is raw video (no header) of this frame size and FFmpeg pixel format, e.g. 1920x1080:nv12 "
                          "(default yuv420p; a .yuv file's size and format are read from its name when it has them)")
    inp.add_argument("--matrix", default=None, choices=["bt601", "bt709", "bt2020", "smpte240m"],  # inputs.MATRICES
                     help="read INPUT's YUV with this matrix, whatever its tags say (raw video has none: "
                          "BT.709 from 1280 wide or above 576 lines, else BT.601)")
    inp.add_argument("--range", default=None, choices=["limited", "full"],  # inputs.RANGES
                     help="read INPUT's YUV as limited (16-235) or full (0-255) range, whatever its tags say "
                          "(raw video: limited; a phone's camera frames are often full)")
    # ---- recording and offline render (player/record.py, player/render.py) ----
    rec = ap.add_argument_group("recording and rendering")
    rec.add_argument("--record", metavar="FILE",
                     help="record the tuned frames and the audio to FILE (.mp4, .mov or .mkv) from the start; "
                          "key R / the `record [FILE]` command toggles recording; a tuning track goes to FILE.json")
    rec.add_argument("--force", action="store_true", help="let --record / --render overwrite existing files")
    rec.add_argument("--lossless", action="store_true",
                     help="with --record / --render: keep every presented pixel exactly (H.264 RGB at qp 0; a "
                          "render over 8 bits: 10-bit YUV at qp 0; large files) instead of H.264 at CRF 18, which "
                          "smooths part of the noise away")
    rec.add_argument("--render", metavar="FILE",
                     help="render offline to FILE (no window, no sound, no drops) and exit: the span of a recording "
                          "with --track, else the whole input with --preset / --strength (default AutoTune)")
    rec.add_argument("--depth", choices=("auto", "8", "10"), default=None,
                     help="with --render: bits of the output; auto (default) keeps a source's 10 bits (10-bit H.264, "
                          "16-bit PNG/TIFF) and a recording's with --track; 10 also for 8-bit sources (denoised "
                          "gradients without 8-bit steps)")
    rec.add_argument("--track", metavar="SIDECAR", help="with --render: replay a recording's tuning track (FILE.json)")
    rec.add_argument("--strength", type=float, metavar="S", help="with --render: fixed strength S for the whole input")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while it starts (importing torch alone takes seconds):
        print("rcd-player: interrupted", file=sys.stderr)  # was a traceback from inside the import
        return 130


def _main(argv: list[str] | None) -> int:
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if extra and args.input and not any(a.startswith("-") for a in extra):  # often a shell's expansion of an
        ap.error(f"{1 + len(extra)} inputs given ({args.input}, {extra[0]} …): the player plays one; "  # unquoted glob
                 "an image sequence is one quoted pattern, e.g. 'shots/*.png' or 'frame_%04d.png'")
    if extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    # ---- recording and offline render ----
    if (args.track is not None or args.strength is not None) and not args.render:
        ap.error("--track and --strength need --render")
    if args.depth is not None and not args.render:
        ap.error("--depth needs --render (a live recording keeps the 8-bit frames shown: render it again with "
                 "--render OUT --track REC.json --depth 10)")
    if args.render and args.record:
        ap.error("--render and --record cannot be combined")
    if args.render and args.track and (args.preset or args.strength is not None):
        ap.error("--track cannot be combined with --preset or --strength")
    if args.render and args.preset and args.strength is not None:
        ap.error("--preset and --strength: choose one (--strength renders a fixed strength, --preset its preset A)")
    if args.render:
        given = [o for o, v in (("--script", args.script), ("--loop", args.loop), ("--speed", args.speed != 1.0)) if v]
        if given:
            ap.error(f"{', '.join(given)}: not with --render, which renders the input (or, with --track, a "
                     f"recording's span and tuning); record with them, then --render --track")
        span = [o for o, v in (("--start", args.start), ("--duration", args.duration is not None)) if v]
        if span and args.track:
            ap.error(f"{', '.join(span)}: not with --track, whose recording sets the span")
        if args.start < 0 or (args.duration is not None and args.duration <= 0):
            ap.error("--render: --start must be ≥ 0 and --duration > 0 (seconds)")
    for out in (args.render, args.record, args.stats_json):
        for inp in (args.input, args.preset, args.script, args.track):
            if out and inp and _same_file(inp, out):
                ap.error(f"{out} is an input ({inp}): choose another output")
    if args.start is not None and not (math.isfinite(args.start) and args.start >= 0):
        ap.error(f"--start needs seconds >= 0, got {args.start}")
    if args.loop is not None and not (all(math.isfinite(v) for v in args.loop) and 0 <= args.loop[0] < args.loop[1]):
        ap.error(f"--loop A B needs 0 <= A < B, got {args.loop[0]:g} {args.loop[1]:g}")
    from player.clock import SPEED_MAX, SPEED_MIN

    if not SPEED_MIN <= args.speed <= SPEED_MAX:  # (not NaN either)
        ap.error(f"--speed needs {SPEED_MIN:g} to {SPEED_MAX:g}, got {args.speed:g}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        ap.error(f"--duration needs seconds > 0, got {args.duration}")
    if (args.fps or args.raw or args.matrix or args.range) and args.input is None:
        ap.error("--fps, --raw, --matrix and --range describe an INPUT (image sequence, raw video, its colour); "
                 "the demo has --demo-fps")
    if args.cache_mb < 0:
        ap.error(f"--cache-mb needs MiB >= 0 (0: the default budget), got {args.cache_mb}")
    signal.signal(signal.SIGTERM, _terminate)  # a render or playback ends as with Ctrl-C: nothing half-written
    if args.render:
        from player import render

        return render.main(args)
    if args.record is not None:
        from player.record import RecordError, check_target

        try:
            check_target(args.record, args.force)  # before anything starts: fails in one line, fast
        except RecordError as e:
            print(f"rcd-player: error: {e}", file=sys.stderr)
            return EXIT_FAILED
    args.device = args.device or "auto"
    args.precision = args.precision or "auto"
    from player.decode import MediaError
    from player.player import Player, PlayerConfig, PlayerError

    cfg = PlayerConfig(input=args.input, fps=args.fps, raw=args.raw, matrix=args.matrix, range=args.range, weights=args.weights, device=args.device, precision=args.precision,
                       noise=args.noise or "auto", mode=args.mode, cache_mb=args.cache_mb, start=args.start, speed=args.speed,
                       loop=tuple(args.loop) if args.loop else None, preset=args.preset, headless=args.headless,
                       duration=args.duration, script=args.script, stats_json=args.stats_json,
                       screenshot_dir=args.screenshot_dir, demo_size=args.demo_size, demo_fps=args.demo_fps,
                       audio=not args.no_audio,
                       threads=args.threads, lanes=args.lanes, record=args.record, force=args.force,
                       lossless=args.lossless)
    stats_existed = bool(args.stats_json) and os.path.exists(args.stats_json)
    if args.stats_json:
        try:
            open(args.stats_json, "a").close()  # writable: found out now, not after the run
        except OSError as e:
            print(f"rcd-player: error: {args.stats_json}: cannot write stats ({e.strerror})", file=sys.stderr)
            return EXIT_USAGE
    player = None
    try:
        player = Player(cfg)
        code = player.run()
    except (PlayerError, MediaError) as e:
        print(f"rcd-player: error: {e}", file=sys.stderr)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    finally:
        if player is not None:
            try:
                player.close()
            except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM while it finishes: stop now, in one line
                print("rcd-player: interrupted again while closing: a recording may be left as its .part file",
                      file=sys.stderr)
                code = 130
    stats = player.stats() if player is not None else None
    if stats is not None and stats.get("record_errors") and code == 0:
        code = EXIT_FAILED  # playback went on, but a recording asked for was not made whole: say so
    if stats is not None and args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(stats, f, indent=2)
    elif args.stats_json and not stats_existed:
        Path(args.stats_json).unlink(missing_ok=True)  # no run, no stats: not an empty file that is not JSON
    return code


if __name__ == "__main__":
    raise SystemExit(main())
