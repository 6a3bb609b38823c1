"""Offline render (`--render OUT`): decode → Denoiser.infer → blend → encode, frame by frame.

No window, no sound, no player threads, no drops: every selected frame goes through the same
engine calls as playback (Denoiser.infer, then Denoiser.blend with compose.coefficients of the
mix) and the same encoder settings as a live recording (player/record.py MediaWriter), so
`--render OUT --track REC.mp4.json` reproduces a recording's frames bit for bit on the same
machine and device. Two ways to choose the tuning:

- `--track SIDECAR`: the span, the frames and the mix of every frame of a recording;
- `--preset FILE` / `--strength S` (default: AutoTune): fixed settings for the whole input, or
  for its span from `--start` for `--duration` seconds.

A still image (PNG, JPEG … input) may also be rendered to an image (`OUT.png`, `.tif`): its one
frame, lossless.

Playback is 8-bit; a render need not be. From a source over 8 bits (or with `--depth 10`) frames
stay float from the decoder (VideoFrame.fine) through the blend (Denoiser.blend(fine=True)) to a
10-bit encoder, a 16-bit image or a raw format's own bits; the network still reads the 8-bit
rounding of each frame.

The source's timestamps are kept (irregular ones too) and its audio is re-encoded to AAC for the
rendered span. Encoding runs on a second thread so it overlaps the network, and on a CPU two
frames are in inference at once (the player's lanes, player/worker.py), finished in order.
"""

from __future__ import annotations

import collections
import math
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from engine import checkpoint, compose
from engine.compose import Mix
from engine.denoiser import NOISE_MODES, Denoiser, NoiseChoice, pick_device
from player import colour as col
from player import controls as ctl
from player import inputs
from player import record
from player.decode import AudioChunk, DemoFeed, FileSource, MediaError
from player.record import RecordError
from player.worker import DEMO_SIZES, default_weights, set_up_lanes

ENCODE_QUEUE = 8
AUDIO_AHEAD_S = 0.2  # audio is read this far past the frame being rendered
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
DEPTHS = ("auto", "8", "10")  # --depth
SPAN_EPS_S = 1e-6  # a frame at start + duration, give or take float rounding, is after the span
DEMO_RENDER_SIZE = DEMO_SIZES[0]  # an offline render of the demo has no frame budget: the full size


def _warn(text: str) -> None:
    print(f"rcd-player: warning: {text}", file=sys.stderr, flush=True)


class _Encoder(threading.Thread):
    """Runs the MediaWriter calls in order on its own thread (bounded queue: never drops)."""

    def __init__(self):
        super().__init__(name="render-encode", daemon=True)
        self.q: queue.Queue = queue.Queue(maxsize=ENCODE_QUEUE)
        self.error: BaseException | None = None

    def call(self, fn, *args) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((fn, args))

    def run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job[0](*job[1])
                except (av.error.FFmpegError, OSError) as e:  # the encoder or the disk: one line, not a traceback
                    self.error = RecordError(f"cannot write the render ({record.one_line(e)})")
                except BaseException as e:
                    self.error = e

    def finish(self) -> None:
        self.q.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class _AudioPump:
    """The source's audio chunks, handed out up to a time (the video reader sets the pace)."""

    def __init__(self, chunks):
        self._it = iter(chunks)
        self._next: AudioChunk | None = None

    def until(self, t: float):
        while True:
            if self._next is None:
                self._next = next(self._it, None)
                if self._next is None:
                    return
            if self._next.pts >= t:
                return
            chunk, self._next = self._next, None
            yield chunk


def _fixed_mix(preset: str | None, strength: float | None) -> Mix:
    if strength is not None:
        if not 0.0 <= strength <= compose.STRENGTH_MAX:
            raise RecordError(f"--strength must be 0..{compose.STRENGTH_MAX:g}, got {strength:g}")
        return Mix(strength=float(strength))
    if preset is None:
        return Mix()  # AutoTune
    try:
        presets = ctl.read_presets(preset)
    except ctl.CommandError as e:
        raise RecordError(str(e)) from None
    return presets.get("A") or presets["B"]


def _open_source(input_path: str | None, track: dict | None, demo_size, demo_fps: float,
                 fps: float | None = None, raw: str | None = None, matrix: str | None = None,
                 range_: str | None = None):
    """(source, demo or None)."""
    if input_path is None and track is not None:
        src = track.get("source") or {}
        if src.get("kind") == "file" and any(src.get(k) for k in ("demuxer", "matrix", "range")):
            # an image sequence, raw video or a file read with --matrix / --range: opened as then
            opened = inputs.Input(str(src.get("path")), src.get("demuxer") or None,
                                  {str(k): str(v) for k, v in (src.get("options") or {}).items()},
                                  matrix=src.get("matrix") or None, range=src.get("range") or None)
            return FileSource(opened), None
        if src.get("kind") == "file":
            input_path = src.get("path")
        elif src.get("kind") == "demo":
            from player.demo import DemoSource

            demo = DemoSource(width=int(src["width"]), height=int(src["height"]), fps=float(src["fps"]),
                              seed=int(src.get("seed", 0)), duration=float(src.get("duration", 20.0)))
            return DemoFeed(demo), demo
    if input_path is None:
        from player.demo import DemoSource

        demo = DemoSource(width=demo_size[0], height=demo_size[1], fps=demo_fps)
        return DemoFeed(demo), demo
    return FileSource(input_path, fps, raw, matrix, range_), None


def render(input_path: str | None, out: str, *, track_path: str | None = None, preset: str | None = None,
           strength: float | None = None, weights: str | None = None, device: str | None = None,
           precision: str | None = None, noise: str | None = None, force: bool = False, threads: int = 0, lossless: bool = False,
           demo_size=DEMO_RENDER_SIZE, demo_fps: float = 30.0, progress: bool | None = None,
           fps: float | None = None, raw: str | None = None, matrix: str | None = None,
           range_: str | None = None, depth: str = "auto", start: float = 0.0, duration: float | None = None) -> dict:
    """Render; returns a summary dict. Raises RecordError / MediaError / CheckpointError (one line).

    start, duration: the span of the input to render, in its seconds (a track sets its own).

    depth: "8", "10", or "auto": a recording's (--track), else 10 where the source has more than 8
    bits and the output can hold them. Over 8 bits the frames stay float from decoding to the encoder
    (Denoiser.infer's `fine`, blend(fine=True)): 10-bit H.264 (High 10), 16-bit PNG / TIFF, or a raw
    format's own bits."""
    import torch

    if track_path is not None and (preset is not None or strength is not None):
        raise RecordError("--track replays a recording's tuning: it cannot be combined with --preset or --strength")
    out_path = Path(out)
    fmt = record.container_format(out_path, images=True)
    sequence = record.is_sequence(out)  # one lossless image a frame
    image = Path(out).suffix.lower() in record.IMAGES and not sequence  # a still's render: one lossless image
    raw_out = Path(out).suffix.lower() in record.RAW_OUTPUTS  # uncompressed YUV
    if raw_out and lossless:
        raise RecordError(f"{out_path}: --lossless is for .mp4, .mov and .mkv (exact RGB); {out_path.suffix} is "
                          "uncompressed YUV")
    if depth not in DEPTHS:
        raise RecordError(f"--depth must be one of {', '.join(DEPTHS)}, got {depth!r}")
    track = record.load_track(track_path) if track_path is not None else None
    fixed = None if track is not None else _fixed_mix(preset, strength)
    recorded = (track or {}).get("video") or {}
    if recorded.get("codec") == record.LOSSLESS_CODEC or recorded.get("qp") == 0:
        lossless = True  # a lossless recording (or render) re-renders losslessly: the same frames, bit for bit
    hashes = record.Hashes()

    # Model and device: as recorded unless told otherwise, else what the player would use.
    if device is None:
        device = "auto"
        if track is not None and track.get("device") in ("cpu", "cuda"):
            device = track["device"]
            if device == "cuda" and not torch.cuda.is_available():
                _warn("the recording was made on cuda, which is not available: rendering on the CPU (frames will differ)")
                device = "cpu"
    device_type = pick_device(device).type
    if weights is None:
        if track is not None:
            m = track.get("model") or {}
            weights = m.get("path") if m.get("path") and Path(m["path"]).exists() else m.get("weights", "live")
        else:
            weights = default_weights(device_type)
    if precision is None:
        precision = PRECISIONS.get((track or {}).get("precision"), "auto")
    recorded_noise = track is not None and noise is None  # each frame's backbone as the recording's (its "noise")
    if noise is None:
        noise = (track or {}).get("noise", "auto")
        noise = noise if noise in NOISE_MODES else "auto"
    lanes, _ = set_up_lanes(device_type, threads=threads)  # frames come out the same on any count (kernels.c, SUM_BANDS)
    den = Denoiser.load(weights, device=device, precision=precision)
    choose = NoiseChoice(noise, den.cfg.mono)  # each frame's backbone, in order, as playback decides it
    if fixed is not None and fixed.coeffs is not None and len(fixed.coeffs) != len(den.levels):
        raise RecordError(f"{preset}: preset has {len(fixed.coeffs)} coefficients, the model has {len(den.levels)} levels")

    source, demo = _open_source(input_path, track, demo_size, demo_fps, fps, raw, matrix, range_)
    if demo is None and source.input.notice:
        _warn(source.input.notice)
    tmp = None
    try:
        info = source.info
        meta = {"model": record.model_meta(den, weights, hashes), "device": den.device.type,
                "precision": record.dtype_name(den.dtype), "noise": noise, "torch": torch.__version__,
                "source": record.source_meta(info, demo, hashes)}
        if track is not None:
            _compare(track, meta)
        if image and not info.still:
            raise RecordError(f"{out_path}: an image output needs a still image input (this is a video: "
                              "render to .mp4, .mov or .mkv)")
        deep = _deep(depth, col.bits(info.pix_fmt) if demo is None else 8, track, lossless)
        raw_fmt = None
        if raw_out:  # uncompressed YUV holds what its pixel format holds (a raw source's own, in a .yuv)
            raw_fmt = record.raw_pix_fmt(out_path, info.width, info.height,
                                         info.opened.get("options", {}).get("pixel_format"), deep, info.chroma)
            deep = col.bits(raw_fmt) > 8 and depth != "8"
        if demo is None:
            source.fine = deep  # frames over 8 bits come unrounded too (VideoFrame.fine)
        tmp = record.claim_temp(out_path, force, images=True)

        # What to render.
        if track is not None:
            frames = [float(p) for p in track["frames"]]
            want = {record.pts_key(p) for p in frames}
            changes = sorted(track["changes"], key=lambda c: c["pts"])
            start, end = float(track["start_pts"]), float(track["end_pts"])
            stop, total = math.inf, len(frames)
        else:  # the input from `start`, for `duration` seconds or to its end
            want, changes, end = None, None, None
            stop = start + duration if duration is not None else math.inf
            length = min(stop, info.duration) - start if info.duration > 0 else (duration or 0.0)
            total = int(round(length * info.fps)) if length > 0 else None

        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc=f"render {out_path.name}", file=sys.stderr, mininterval=0.5,
                   disable=(not sys.stderr.isatty()) if progress is None else not progress, leave=False)
        out_track = record.Track({**meta, "recording": str(out_path),
                                  "rendered_from": str(Path(track_path).resolve()) if track_path else None})
        enc = _Encoder()
        enc.start()
        writer = None
        done, taken, t0, ci = 0, 0, time.perf_counter(), 0
        state_cache: dict[int, tuple[Mix, bool, dict]] = {}
        audio = _AudioPump(source.read(start, "audio") if info.has_audio else iter(()))
        pending: collections.deque = collections.deque()  # (frame, mix, bypass, state, inference) in order

        def finish(frame, mix, bypass, state, inference) -> None:
            """One frame, in order: its blend, its audio and its video to the encoder."""
            nonlocal writer, done
            if writer is None:
                origin = start if track is not None else frame.pts  # the first frame at 0, as in a recording
                h, w = frame.rgb.shape[:2]
                if sequence:
                    first = info.opened.get("options", {}).get("start_number")  # a numbered sequence's
                    writer = record.SequenceWriter(tmp, out_path.name, fmt, None if first is None else int(first),
                                                   info.fps, depth=16 if deep else 8)
                elif image:
                    writer = record.ImageWriter(tmp, fmt, depth=16 if deep else 8)
                elif raw_out:
                    writer = record.RawWriter(tmp, fmt, w, h, info.fps, raw_fmt, colour=info.colour,
                                              full_range=info.opened.get("range") == "full")
                else:
                    writer = record.MediaWriter(tmp, fmt, w, h, info.fps, origin=origin, audio=info.has_audio,
                                                colour=info.colour, lossless=lossless, sar=info.sar,
                                                depth=10 if deep else 8, chroma=info.chroma)
                out_track.meta.update(record.encoder_meta(writer))
            for a in audio.until(frame.pts + frame.duration + AUDIO_AHEAD_S):
                enc.call(writer.audio, a.pts, a.pcm)
            if bypass:  # bypass frames are the original, as played (over 8 bits: as decoded)
                rgb = frame.rgb if not deep else frame.fine if frame.fine is not None else frame.rgb.astype(np.float32)
            else:
                bases = inference.result()
                if state.get("bases") == "float16":  # played from the render cache: blended from its float16 bases
                    bases = den.compact(bases)
                rgb = den.blend(bases, coeffs=compose.coefficients_np(mix, bases.levels, bases.auto), fine=deep)
                state = record.with_backbone(state, bases.luma)
            enc.call(writer.video, frame.pts, rgb)
            enc.call(writer.encode_audio_until, frame.pts + frame.duration)
            out_track.add(frame.pts, frame.duration, state)
            done += 1
            bar.update(1)

        try:
            # `lanes` frames in inference at once, as in playback (player/worker.py); finished in order
            with ThreadPoolExecutor(lanes, thread_name_prefix="render-lane") as pool:
                for frame in source.read(start, "video"):
                    if frame.pts >= stop - SPAN_EPS_S:
                        break
                    if want is None and frame.pts + frame.duration <= start + SPAN_EPS_S:
                        continue  # (a start past the end: the decoder's seek gives the last frame, which ended before it)
                    if want is not None:
                        if record.pts_key(frame.pts) not in want:
                            if frame.pts > end + 1.0:
                                break
                            continue
                        while ci + 1 < len(changes) and changes[ci + 1]["pts"] <= frame.pts:
                            ci += 1
                    else:
                        ci = 0
                    if ci not in state_cache:
                        compact = False
                        if changes is not None:
                            mix, bypass = ctl.mix_from_json(changes[ci]["mix"]), bool(changes[ci].get("bypass"))
                            compact = changes[ci].get("bases") == "float16"
                        else:
                            mix, bypass = fixed, False
                        state_cache[ci] = (mix, bypass, record.mix_state_json(mix, bypass, compact))
                    mix, bypass, state = state_cache[ci]
                    if bypass:
                        inference = None
                    elif recorded_noise:  # the recording's backbone (a track from before it was noted: per frame, as then)
                        frame_noise = changes[ci].get("noise")
                        inference = pool.submit(den.infer, frame.rgb, frame_noise if frame_noise in NOISE_MODES else noise,
                                                frame.fine)
                    else:
                        inference = pool.submit(den.infer, frame.rgb, choose(frame.rgb), frame.fine)
                    pending.append((frame, mix, bypass, state, inference))
                    taken += 1
                    if len(pending) >= lanes:
                        finish(*pending.popleft())
                    if want is not None and taken == len(want):
                        break
                while pending:
                    finish(*pending.popleft())
            if writer is None:
                raise RecordError("no frames to render" + (" (the track's frames are not in this source)" if track else
                                                           f" from {start:g} s" if start > 0 else ""))
            if track is None:
                end = out_track.end_pts
            for a in audio.until(end + AUDIO_AHEAD_S):
                enc.call(writer.audio, a.pts, a.pcm)
            enc.call(writer.close, end)
            enc.finish()
        except BaseException:
            if enc.is_alive():
                enc.error = enc.error or RecordError("render aborted")
                enc.q.put(None)
                enc.join()
            if writer is not None:
                try:
                    writer.abort()
                except Exception:
                    pass
            raise
        finally:
            bar.close()
        wall = time.perf_counter() - t0
        final = record.finish_file(tmp, out_path, force)
        tmp = None
        record.write_json_atomic(record.sidecar_path(out_path), out_track.to_json(complete=True))
        missing = (len(want) - done) if want is not None else 0
        return {"frames": done, "missing": missing, "seconds": wall, "fps": done / wall if wall > 0 else 0.0,
                "bytes": writer.bytes if sequence else final.stat().st_size, "path": str(final), "span": end - out_track.frames[0],
                "layout": writer.describe() if raw_out else "", "bits": col.bits(writer.pix_fmt)}
    finally:
        source.close()
        if tmp is not None:
            record.remove_temp(tmp)


def _deep(depth: str, source_bits: int, track: dict | None, lossless: bool) -> bool:
    """Whether the render keeps more than 8 bits (float frames to the encoder); --depth's rule. (With
    --lossless: 8 bits are the RGB frames exactly, more the 10-bit YUV samples exactly.)"""
    if depth == "auto":
        if track is not None:  # as recorded: a re-render gives the recording's frames
            return col.bits((track.get("video") or {}).get("pix_fmt") or "") > 8
        return source_bits > 8
    return depth == "10"


def _compare(track: dict, meta: dict) -> None:
    """Warn where the render cannot reproduce the recording exactly."""
    rm, m = track.get("model") or {}, meta["model"]
    if rm.get("sha256") and m.get("sha256") and rm["sha256"] != m["sha256"]:
        _warn(f"weights {m['path']} differ from the recording's ({rm.get('path')}, sha256 {rm['sha256'][:12]}…): frames will differ")
    rs, s = track.get("source") or {}, meta["source"]
    if rs.get("kind") != s.get("kind"):
        _warn(f"the recording was made from a {rs.get('kind')} source, this is a {s.get('kind')} source")
    elif s.get("kind") == "file" and rs.get("sha256") and s.get("sha256") and rs["sha256"] != s["sha256"]:
        _warn(f"{s['path']} differs from the recorded source ({rs.get('path')}, sha256 {rs['sha256'][:12]}…)")
    elif s.get("kind") == "demo" and any(rs.get(k) != s.get(k) for k in ("width", "height", "fps", "seed", "duration")):
        _warn("the demo parameters differ from the recording's")
    for k in ("device", "precision", "noise"):
        if track.get(k) and track[k] != meta[k]:
            _warn(f"the recording ran with {k} {track[k]}, this render with {meta[k]}: frames may differ")


def main(args) -> int:
    """The command-line render mode (player/cli.py); returns the exit code."""
    try:
        summary = render(args.input, args.render, track_path=args.track, preset=args.preset, strength=args.strength,
                         weights=args.weights, device=args.device, precision=args.precision, noise=args.noise,
                         force=args.force,
                         threads=args.threads, demo_size=args.demo_size or DEMO_RENDER_SIZE, lossless=args.lossless,
                         fps=args.fps, raw=args.raw, matrix=args.matrix, range_=args.range, depth=args.depth or "auto",
                         start=args.start, duration=args.duration)
    except (RecordError, MediaError, checkpoint.CheckpointError) as e:
        print(f"rcd-player: error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # e.g. --device cuda without CUDA
        print(f"rcd-player: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rcd-player: render interrupted; nothing written", file=sys.stderr)
        return 130
    s = summary
    if Path(s["path"]).suffix.lower() in record.IMAGES and not record.is_sequence(s["path"]):
        print(f"rcd-player: rendered the image in {s['seconds']:.1f} s → {s['path']} ({s['bytes'] / 2**20:.1f} MiB"
              f"{', 16 bits' if s['bits'] > 8 else ''})", flush=True)
    else:
        print(f"rcd-player: rendered {s['frames']} frames ({s['span']:.2f} s of video) in {s['seconds']:.1f} s, "
              f"{s['fps']:.1f} fps → {s['path']} ({s['bytes'] / 2**20:.1f} MiB)"
              + (f"; {s['layout']}" if s["layout"] else f", {s['bits']} bits" if s["bits"] > 8 else ""), flush=True)
    if s["missing"]:
        print(f"rcd-player: error: {s['missing']} of the track's frames were not found in the source "
              "(a different file?)", file=sys.stderr)
        return 1
    return 0
