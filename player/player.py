"""The Player: builds the pipeline, owns all playback state, runs the main loop, shuts down.

Owns the threads (decode → backbone → compositor), the clock, the queues, the outputs (window,
sound), the controls snapshot and every command. Lower parts never call up except through the
few narrow hooks they are given (`notice`, `on_end_of_stream`, `take_step`, `audio_ended`,
`restart_sound`);
the main thread polls everything else.

    DecodeThread(video) ── video_q ──► BackboneWorker ── ready_q ──► CompositorThread ── slot ──► main thread
    DecodeThread(audio) ── audio_q ──► AudioFeed (sound device callback; sets the master clock)
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine import checkpoint, native
from engine.compose import Mix
from engine.denoiser import Denoiser, pick_device, psnr
from engine.images import write_png
from player import colour as col
from player import controls as ctl
from player import keymap, tonemap
from player.clock import SPEED_MAX, SPEED_MIN, Clock
from player.compositor import CompositorThread, Slot
from player.decode import AUDIO_CHANNELS, AUDIO_RATE, DecodeThread, DemoFeed, EndOfStream, FileSource, MediaError
from player.frames import Presented
from player.probe import PROBE_SIZE, ProbeHistory, ProbeReading, parse_probe, probe
from player.queues import ClosableQueue
from player.record import dtype_name
from player.worker import DEMO_SIZES, BackboneWorker, default_weights, pick_demo_size, set_up_lanes

VIDEO_QUEUE_FRAMES = 4  # decoded frames waiting for the backbone: enough to ride out decode jitter
AUDIO_QUEUE_S = 10.0  # audio decoded ahead; audio is small, and a deep queue never starves the device
JOIN_TIMEOUT_S = 3.0
EXIT_INTERRUPTED = 130  # the shell's code for a run ended by SIGINT
STATS_EVERY = 8  # measure PSNR / removed σ on every Nth presented frame (subsampled), for the HUD
MESSAGE_S = 1.5  # how long an OSD message stays
# A frame handed over early waits for its time, up to this long (the compositor blends up to 1.25
# blends ahead: 0.15 s for a 4K frame on a 2-core CPU); a longer wait means the clock jumped.
SHOW_WAIT_MAX_S = 0.25
LOOP_EPS = 0.02
PRESET_FILE = "rcd-presets.json"
VOLUME_MAX = 130  # per cent, as mpv's volume-max: above 100 amplifies (and may clip)


class PlayerError(Exception):
    """Anything that stops the player; one line for the user."""


@dataclass
class PlayerConfig:
    input: str | None = None  # None: the built-in demo; else a file, an image sequence's pattern or raw video
    fps: float | None = None  # --fps: the rate of an image sequence or raw video (player/inputs.py)
    raw: str | None = None  # --raw WxH[:FORMAT]: raw video's frame size and pixel format
    matrix: str | None = None  # --matrix: the YUV matrix the input is read with (inputs.MATRICES), over its tags
    range: str | None = None  # --range: limited | full, likewise
    weights: str | None = None  # None: worker.default_weights for the device
    device: str = "auto"
    precision: str = "auto"
    noise: str = "auto"  # auto | rgb | luma: Denoiser.infer's noise (which backbone reads a colour frame)
    mode: str = "auto"  # auto | live | cache
    cache_mb: int = 0  # 0: a quarter of RAM, at most 8 GiB
    start: float = 0.0
    speed: float = 1.0  # playback speed, SPEED_MIN..SPEED_MAX
    loop: tuple[float, float] | None = None
    preset: str | None = None
    headless: bool = False
    duration: float | None = None
    script: str | None = None
    stats_json: str | None = None
    screenshot_dir: str = "."
    demo_size: tuple[int, int] | None = None  # None: the largest of DEMO_SIZES that plays live here
    demo_fps: float = 30.0
    audio: bool = True
    threads: int = 0  # torch threads per inference (0: the cores ÷ lanes)
    lanes: int = 0  # frames in inference at once (0: player/worker.py, plan_lanes)
    record: str | None = None  # --record FILE: start recording at launch (player/record.py)
    force: bool = False  # --force: recordings may overwrite existing files
    lossless: bool = False  # --lossless: recordings keep the presented RGB exactly (record.LOSSLESS_CODEC)


def default_cache_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(min(total // 4, 8 << 30))


# The first word of every command a script may send (Player._command, controls.apply): a script
# is checked when it loads, not when playback reaches a mistyped line.
SCRIPT_VERBS = {"quit", "cycle", "set", "add", "multiply", "seek", "frame-step", "frame-back-step", "ab-loop", "ab-loop-clear",
                "autotune", "preset-store", "preset-flip", "preset-save", "preset-load", "screenshot", "screenshot-view", "record"}


# Arguments (fewest, most) of the player's own verbs; the path verbs (preset-save, preset-load,
# screenshot, screenshot-view, record) take the rest of the line, and the property verbs one name
# and one value (controls.property_args).
PLAYER_VERB_ARGS = {"quit": (0, 0), "seek": (1, 2), "frame-step": (0, 0), "frame-back-step": (0, 0),
                    "ab-loop": (0, 0), "ab-loop-clear": (0, 0), "preset-store": (0, 1), "preset-flip": (0, 0)}
PLAYER_PROPERTIES = {"pause": ("cycle", "set"), "loop-a": ("set",), "loop-b": ("set",), "speed": ("set", "add", "multiply"),
                     "volume": ("set", "add"), "mute": ("cycle", "set"), "fullscreen": ("cycle", "set"),
                     "tone-mapping": ("cycle", "set"), "probe": ("cycle", "set")}  # → their verbs


def check_command(cmd: str, levels=None) -> tuple[str | None, str | None]:
    """Raise CommandError for a command that cannot run — an unknown verb or property, the wrong
    number of arguments, a value of the wrong kind — whatever the player's state; else (name,
    value) of the player property it sets, if any. A script is checked with it when it loads.
    With the model's `levels`, a property of the blend or the view is tried on default controls
    too (a script's check; when a command runs, controls.apply checks it as it applies it)."""
    parts = cmd.split()
    verb, args = parts[0], parts[1:]
    if verb not in SCRIPT_VERBS:
        raise ctl.CommandError(f"unknown command {verb!r}")
    if verb in PLAYER_VERB_ARGS:
        lo, hi = PLAYER_VERB_ARGS[verb]
        if not lo <= len(args) <= hi:
            what = "no arguments" if hi == 0 else f"{lo}–{hi} arguments" if lo < hi else f"{lo} argument" + "s" * (lo > 1)
            raise ctl.CommandError(f"{verb}: takes {what}, got {len(args)}" + (f" ({' '.join(args)})" if args else ""))
        if verb == "seek":
            ctl.parse_float(args[0])
            if args[1:] and args[1] not in ("relative", "absolute"):
                raise ctl.CommandError(f"seek: the second argument is relative or absolute, got {args[1]!r}")
        if verb == "preset-store" and args and args[0].upper() not in ("A", "B"):
            raise ctl.CommandError(f"preset-store: the preset is A or B, got {args[0]!r}")
        return None, None
    if verb not in ("cycle", "set", "add", "multiply", "autotune"):
        return None, None  # the path verbs: the rest of the line is the path
    if verb != "autotune" and args[:1] and args[0] in PLAYER_PROPERTIES:
        name, value = ctl.property_args(verb, args)  # "cycle NAME" / "set|add|multiply NAME VALUE"
        allowed = PLAYER_PROPERTIES[name]
        if verb not in allowed:
            raise ctl.CommandError(f"{name}: use {' or '.join(allowed)}")
        if name == "probe" and value is not None:
            parse_probe(value)
        elif value is not None and not (name.startswith("loop-") and value == "no"):
            (ctl.parse_bool if name in ("pause", "mute", "fullscreen", "tone-mapping") else ctl.parse_float)(value)
        return name, value
    if verb == "multiply":
        raise ctl.CommandError(f"multiply {' '.join(args[:1])}: only speed multiplies (use add or set)")
    if levels is not None:
        ctl.apply(ctl.Controls(), cmd, ctl.Context(levels=tuple(levels)))
    return None, None


def load_script(path: str, levels=None) -> list[tuple[float, str]]:
    """Lines 'TIME COMMAND'; blank lines and # comments ignored. With the model's `levels`, every
    command is checked (check_command), else only its verb."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # (a byte-order mark, as some editors write, is skipped)
    except OSError as e:
        raise PlayerError(f"{path}: cannot read script ({e.strerror})") from None
    except UnicodeDecodeError:
        raise PlayerError(f"{path}: not a text file (a script is UTF-8 lines 'TIME COMMAND')") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        t, _, cmd = line.partition(" ")
        try:
            t = float(t)
        except ValueError:
            raise PlayerError(f"{path}:{n}: expected 'TIME COMMAND', got {line!r}") from None
        cmd = cmd.strip()
        if not (math.isfinite(t) and t >= 0):
            raise PlayerError(f"{path}:{n}: the time must be a number of seconds >= 0, got {line.split()[0]!r}")
        for part in cmd.split(";"):  # `a; b`: both
            verb = part.split()[0] if part.strip() else ""
            if verb not in SCRIPT_VERBS:
                raise PlayerError(f"{path}:{n}: {f'unknown command {verb!r}' if verb else 'no command'} "
                                  f"(commands: README.md, 'Command line')")
            if levels is not None:
                try:
                    check_command(part.strip(), levels)
                except ctl.CommandError as e:
                    raise PlayerError(f"{path}:{n}: {part.strip()}: {e}") from None
        out.append((t, cmd))
    return sorted(out, key=lambda x: x[0])


def percentile(values, q: float) -> float | None:
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# A later chunk starting more than AUDIO_HOLE_MIN_S after the sound played so far is a hole in the
# source's sound, played as silence (shorter: timestamp jitter); more than AUDIO_HOLE_MAX_S, a jump
# of the timestamps themselves (joined captures), which the clock follows.
AUDIO_HOLE_MIN_S, AUDIO_HOLE_MAX_S = 0.005, 10.0


class AudioFeed:
    """What the sound device's callback pulls from: chunks of the current epoch, or silence.

    Runs in the real-time callback: no blocking, no allocation beyond numpy slicing, never raises.
    """

    def __init__(self, audio_q: ClosableQueue, clock: Clock, player: "Player"):
        self.audio_q, self.clock, self.player = audio_q, clock, player
        self._chunk = None
        self._off = 0
        self.underflows = 0
        self._heard: tuple[int, float] | None = None  # (epoch, speed) whose sound has been heard
        self._generation = 0  # reset() count: a fill that a reset overtook sets nothing
        self.played_to: tuple[int, float] | None = None  # (epoch, source time after the last sample output)
        self._next: tuple[int, float, float] | None = None  # (epoch, speed, pts after the last sample output)
        self.tap = None  # recording: record.AudioTap, fed with views of the samples output (appends only)
        self.gain = 1.0  # volume × (not muted), set by the main thread; recordings keep the source level

    @property
    def idle(self) -> bool:
        """No chunk part-played."""
        return self._chunk is None

    @property
    def started(self) -> bool:
        """The sound of the current epoch, at the current speed, has been heard."""
        return self._heard == (self.clock.epoch, self.clock.speed)

    def reset(self) -> None:
        self._chunk, self._off, self._heard, self._next = None, 0, None, None
        self._generation += 1

    def fill(self, out: np.ndarray, latency: float, at: float) -> None:
        try:
            self._fill(out, latency, at)
        except Exception:  # never let an exception reach PortAudio's thread
            out.fill(0.0)

    def _fill(self, out: np.ndarray, latency: float, at: float) -> None:
        clock = self.clock
        if clock.paused:
            out.fill(0.0)
            return
        n, filled, first, epoch, speed = len(out), 0, None, clock.epoch, clock.speed
        generation = self._generation
        decoder = self.player.audio_decoder
        run = decoder.serial if decoder is not None else None
        started = self._heard == (epoch, speed)  # (not from `reset`, which another thread calls)
        if self._chunk is not None and (self._chunk.epoch, self._chunk.speed) != (epoch, speed):
            self._chunk = None  # from before a seek or a speed change
        # Until the sound of this epoch has started, sound that is not due yet waits in silence, to
        # the sample (`heard`: the media time out[0] will be heard at, by the clock as it runs);
        # once it has, the sound is the clock and is never held back.
        heard = None if started else clock.now() + latency * speed
        nxt = self._next[2] if self._next is not None and self._next[:2] == (epoch, speed) else None
        while filled < n:
            if self._chunk is None:
                item = self.audio_q.get_nowait()
                if item is None:
                    break
                if item.epoch != epoch or item.speed != speed or run is not None and item.run != run:
                    continue  # from before a seek, a speed change or a restart of the sound
                self._chunk, self._off = item, 0
            chunk = self._chunk
            pcm = chunk.pcm
            if self._off == 0 and nxt is not None and AUDIO_HOLE_MIN_S < chunk.pts - nxt < AUDIO_HOLE_MAX_S:
                # A hole in the source's sound (a stream with packets missing): silence while the
                # clock runs on. Played straight on, the clock jumped the hole and the picture in it
                # was dropped.
                k = min(int(round((chunk.pts - nxt) / speed * AUDIO_RATE)), n - filled)
                out[filled : filled + k] = 0.0
                filled += k
                nxt += k * speed / AUDIO_RATE
                continue
            if first is None:
                pts = chunk.pts + self._off * speed / AUDIO_RATE
                gap = 0 if heard is None else int(round((pts - heard) / speed * AUDIO_RATE)) - filled
                if gap > 0:  # the sound starts later than the picture: silence until it is due
                    k = min(gap, n - filled)  # (synced to it, the clock jumped ahead and the
                    out[filled : filled + k] = 0.0  # video up to it was dropped)
                    filled += k
                    continue
                first = (pts, filled)  # the first sample played, and where it is in `out`
            take = min(n - filled, len(pcm) - self._off)
            out[filled : filled + take] = pcm[self._off : self._off + take]
            if generation == self._generation:  # (not once a reset has overtaken this fill)
                if chunk.source is None:  # the source's samples just output
                    s0, s1, source, t0 = self._off, self._off + take, pcm, chunk.pts
                else:  # played faster or slower: the unstretched samples of the same span
                    k = len(chunk.source) / len(pcm)  # ≈ speed; exact at the chunk's ends
                    s0, s1, source, t0 = round(self._off * k), round((self._off + take) * k), chunk.source, chunk.source_pts
                self.played_to = (epoch, t0 + s1 / AUDIO_RATE)
                if self.tap is not None:  # recording: a view of them, never blocks
                    self.tap.put(t0 + s0 / AUDIO_RATE, source[s0:s1])
            filled += take
            self._off += take
            nxt = chunk.pts + self._off * speed / AUDIO_RATE
            if self._off >= len(pcm):
                self._chunk = None
        if filled < n:
            out[filled:].fill(0.0)
            if started and not self.player.audio_ended():
                self.underflows += 1
        gain = self.gain
        if gain != 1.0:
            np.multiply(out, gain, out=out)  # in place: the callback does not allocate
        if generation != self._generation:  # reset while filling: what it took is from before
            self._chunk = None
            return
        if nxt is not None:
            self._next = (epoch, speed, nxt)
        if first is not None:
            self._heard = (epoch, speed)
            clock.sync(first[0] - (first[1] / AUDIO_RATE + latency) * speed, at=at, epoch=epoch)


class Player:
    def __init__(self, cfg: PlayerConfig):
        self.cfg = cfg
        self.notices: list[str] = []
        self.no_display = False
        self._messages: list[tuple[float, str]] = []
        # Source (a file is opened first: a bad path is reported before the model loads).
        self.demo = None
        if cfg.input is not None:
            self.source = FileSource(cfg.input, cfg.fps, cfg.raw, cfg.matrix, cfg.range)
            if self.source.input.notice:
                self.notice(self.source.input.notice)

        # Model.
        try:
            device_type = pick_device(cfg.device).type
            self._torch_threads = torch.get_num_threads()  # given back by close()
            self.lanes, self.threads_per_lane = set_up_lanes(device_type, cfg.lanes, cfg.threads)
            if device_type == "cpu" and native.will_build():  # say why the first start pauses
                self.notice("building the native CPU kernels (first run only, a few seconds)")
            self.weights = cfg.weights or default_weights(device_type)  # what was loaded: a name or a path
            self.denoiser = Denoiser.load(self.weights, device=cfg.device, precision=cfg.precision)
        except checkpoint.CheckpointError as e:
            raise PlayerError(str(e)) from None
        except RuntimeError as e:  # e.g. --device cuda without CUDA
            raise PlayerError(str(e).splitlines()[0]) from None
        self.levels = self.denoiser.levels
        if self.denoiser.device.type == "cpu" and not self.denoiser.native_blend:
            self.notice(f"native CPU kernels not used ({native.why_not}): the blend and the statistics run in torch, "
                        "3-4x slower")

        if cfg.input is None:  # the demo's size may depend on how fast the model runs here
            from player.demo import DemoSource

            w, h = cfg.demo_size or self._pick_demo_size(cfg.demo_fps)
            self.demo = DemoSource(width=w, height=h, fps=cfg.demo_fps)
            self.source = DemoFeed(self.demo)
        self.info = self.source.info
        # HDR and wide-gamut video: the window shows it mapped to the screen (player/tonemap.py), as
        # mpv does; the denoiser, recordings and renders keep its codes and tags.
        self.display = tonemap.display_map(self.info.colour, self.info.peak_nits) if self.info.colour else None
        self.tone_mapping = self.display is not None  # the `tone-mapping` property (key t): off shows the codes
        self.probe: tuple[int, int] | None = None  # the noise probe's frame pixel (key n, `set probe X,Y`), or off
        self.probe_reading: ProbeReading | None = None  # what it read last (the stats keep it)
        self._probe_history = ProbeHistory()  # the frames it read at its position: the temporal σ
        self._pointer: tuple[int, int] | None = None  # the frame pixel under the mouse pointer, last seen
        if self.display is not None:
            d = self.display
            self.notice(f"{self.info.colour.unmanaged} video: shown {'tone' if d.hdr else 'gamut'}-mapped ({d.name}"
                        f"{', BT.2390' if d.hdr else ''}; t shows it as coded); denoised, recorded and rendered as "
                        f"coded, with its colour tags")

        # State owned by the main thread (the compositor reads `controls`, `paused`, `loop`).
        self.controls = ctl.Controls(level=1)
        self.paused = False
        self.loop: tuple[float | None, float | None] = (None, None)
        self.volume, self.muted = 100, False  # per cent; the sound device's level only (AudioFeed.gain)
        end = self.info.duration  # 0 where unknown
        if cfg.loop:
            a, b = cfg.loop
            if not 0 <= a < b:
                raise PlayerError(f"--loop A B needs 0 <= A < B, got {a} {b}")
            if end > 0 and a >= end:
                raise PlayerError(f"--loop {a:g} {b:g}: {self.info.name} ends at {end:.2f} s")
            self.loop = (a, b)
        if end > 0 and cfg.start >= end:
            raise PlayerError(f"--start {cfg.start:g}: {self.info.name} ends at {end:.2f} s")
        self._changed_at: dict[int, float] = {}  # controls serial → time of the change
        self.presets: dict[str, Mix] = {}
        self._preset_side = "A"
        self.preset_file = cfg.preset or PRESET_FILE  # where ctrl+s / ctrl+o save and load
        if cfg.preset and not os.path.lexists(cfg.preset) and os.path.isdir(os.path.dirname(cfg.preset) or "."):
            self.notice(f"{cfg.preset}: a new preset file: ctrl+s saves presets A and B there")  # a new tuning session
        elif cfg.preset:
            self._load_presets(cfg.preset, startup=True)
        self.script = load_script(cfg.script, self.levels) if cfg.script else []
        self._script_i = 0
        self._steps = 0  # frame-steps the compositor has not taken yet (paused)
        self._step_lock = threading.Lock()
        self._ended: EndOfStream | None = None
        self._quit = False
        self._edit_latency: list[float] = []
        self._presented_serials: set[int] = set()
        self._av_offsets: list[float] = []
        self._present_times: list[float] = []
        self._run_start = self._first_shown = 0.0  # monotonic: run() began, the first frame was shown
        self.frames_presented = 0
        self.frames_presented_epoch = 0
        self.last: Presented | None = None
        self.psnr_original = self.psnr_tuned = self.measured_sigma = None
        self._last_show = None
        self._waiting_shown = -1.0  # when the buffering frame was last drawn (seconds after start)

        # Pipeline.
        self.clock = Clock()
        self.epoch = 0
        self._sound_lock = threading.Lock()  # a seek and a restart of the sound, one at a time
        self.video_q = ClosableQueue(VIDEO_QUEUE_FRAMES)
        self.audio_q = ClosableQueue(max(8, int(AUDIO_QUEUE_S * AUDIO_RATE / 1024)))
        self.ready_q = ClosableQueue(3)
        self.slot = Slot()
        start = self.clamp_position(cfg.start)
        if self.loop[0] is not None and not self.loop[0] <= start < self.loop[1]:
            start = self.loop[0]  # a start outside the loop: the loop wins
        self.clock.reset(start, 0)
        self.decoder = DecodeThread(self.source, "video", self.video_q, start)
        self.audio_decoder = DecodeThread(self.source, "audio", self.audio_q, start) if self.info.has_audio else None
        if cfg.speed != 1.0:
            self.clock.set_speed(cfg.speed)
            if self.audio_decoder is not None:
                self.audio_decoder.set_speed(cfg.speed, start, 0)
        cache_bytes = cfg.cache_mb * (1 << 20) if cfg.cache_mb > 0 else default_cache_bytes()
        self.worker = BackboneWorker(self.denoiser, self.video_q, self.ready_q, self, cfg.mode, cache_bytes, self.lanes,
                                     noise=cfg.noise)
        self.compositor = CompositorThread(self, self.ready_q, self.slot)

        # Outputs.
        self.feed = AudioFeed(self.audio_q, self.clock, self)
        self.sound = self._open_sound()
        self.window = self._open_window()

        # Recording (player/record.py): last, so nothing fails after the temporary file exists.
        from player.record import Recording, RecordError

        self.recording = Recording(self, cfg.record, cfg.force, cfg.screenshot_dir, lossless=cfg.lossless)
        self.feed.tap = self.recording.tap
        if cfg.record:
            try:
                self.recording.toggle(cfg.record)
            except RecordError as e:
                raise PlayerError(str(e)) from None

    # ---- outputs -----------------------------------------------------------------------------
    def _open_sound(self):
        from player.outputs.audio import AudioUnavailable, NullSound, SoundOutput

        if not self.info.has_audio:
            self.notice(f"{self.info.audio_problem or 'no audio stream'}: video runs on the wall clock")
            return NullSound(AUDIO_RATE, AUDIO_CHANNELS, self.feed)
        if self.cfg.headless or not self.cfg.audio:
            return NullSound(AUDIO_RATE, AUDIO_CHANNELS, self.feed)
        try:
            return SoundOutput(AUDIO_RATE, AUDIO_CHANNELS, self.feed)
        except AudioUnavailable as e:
            self.notice(f"{e}; playing silently on the wall clock")
            return NullSound(AUDIO_RATE, AUDIO_CHANNELS, self.feed)

    def _open_window(self):
        from player.outputs.window import DisplayUnavailable, NullWindow, Window

        if self.cfg.headless:
            return NullWindow(self.info.width, self.info.height)
        if (sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER")
                and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
            # SDL would pick a console or off-screen driver here and "succeed" invisibly.
            self.notice("no display (neither DISPLAY nor WAYLAND_DISPLAY is set): playing once without a window; "
                        "use --headless to run without one on purpose")
            self.no_display = True
            return NullWindow(self.info.width, self.info.height)
        try:
            return Window(self.info.width, self.info.height, title=f"rcd-player — {self.info.name}", sar=self.info.sar)
        except DisplayUnavailable as e:
            # Start where we can: play once without a window rather than refuse.
            self.notice(f"{e}; playing once without a window")
            self.no_display = True
            return NullWindow(self.info.width, self.info.height)

    # ---- hooks for the threads -----------------------------------------------------------------
    def _pick_demo_size(self, fps: float) -> tuple[int, int]:
        size, ms, budget = pick_demo_size(self.denoiser, fps, lanes=self.lanes)
        if size != DEMO_SIZES[0]:
            w, h = DEMO_SIZES[0]
            self.notice(f"demo at {size[0]}×{size[1]}: a {w}×{h} frame takes {ms:.0f} ms here, over the {budget:.0f} ms "
                        f"that leave room for the player's other threads (--demo-size WxH to choose)")
        return size

    def notice(self, text: str) -> None:
        """A one-line notice: printed once and shown on the OSD."""
        self.notices.append(text)
        print(f"rcd-player: {text}", file=sys.stderr, flush=True)
        self._messages.append((time.monotonic(), text))

    def on_end_of_stream(self, eos: EndOfStream) -> None:
        self._ended = eos

    def take_step(self) -> bool:
        """The compositor, paused: may it show the next frame (one frame-step)?"""
        with self._step_lock:
            if self._steps > 0:
                self._steps -= 1
                return True
            return False

    def _frame_step(self) -> None:
        """One frame on from where the steps asked for so far lead: the next prepared frame when
        it is that frame's successor, else a seek there. (A step right after a seek stepped from
        the frame shown before it; two steps before the compositor took the first moved one frame.)"""
        last = self.last
        if last is not None and last.frame.epoch != self.epoch:  # a seek's frame not shown yet
            self.seek(self.clock.now() + 1.0 / self.info.fps)  # (the clock waits at the seek's target)
            return
        with self._step_lock:
            pending = self._steps
        chain = [last.frame] if last is not None else []  # the frame on screen, then those prepared
        chain += [x.frame for x in self.ready_q.snapshot() if getattr(x, "frame", None) is not None and x.frame.epoch == self.epoch]
        if last is None or len(chain) > pending + 1 and all(
                abs(b.pts - (a.pts + a.duration)) < 0.5 * a.duration for a, b in zip(chain[: pending + 1], chain[1 : pending + 2])):
            with self._step_lock:
                self._steps += 1
            return
        # the next frame was dropped (live mode) or is not prepared yet: go there exactly
        base = chain[min(pending, len(chain) - 1)]
        self.seek(base.pts + base.duration * (1 + pending - min(pending, len(chain) - 1)))

    def audio_ended(self) -> bool:
        d = self.audio_decoder
        return d is None or d.done or not d.is_alive()

    # ---- commands ------------------------------------------------------------------------------
    def context(self) -> ctl.Context:
        auto = self.last.bases.auto if self.last is not None and self.last.bases is not None else None
        return ctl.Context(levels=self.levels, auto=auto)

    def command(self, cmd: str) -> None:
        """Run a command string (from a key, the script or a test); `a; b` runs both, as in mpv.
        Errors become OSD notices."""
        for one in cmd.split(";"):
            try:
                self._command(one.strip())
            except ctl.CommandError as e:
                self.notice(f"{one.strip()}: {e}")

    def _command(self, cmd: str) -> None:
        parts = cmd.split()
        if not parts:
            return
        verb, args = parts[0], parts[1:]
        path = cmd.partition(" ")[2].strip()  # a path argument is the rest of the line (spaces and all)
        name, value = check_command(cmd)  # a player property's name and value, if it sets one
        if verb == "quit":
            self._quit = True
        elif name == "pause":
            self.set_paused(not self.paused if verb == "cycle" else ctl.parse_bool(value))
        elif verb == "seek":
            t = ctl.parse_float(args[0])
            base = 0.0 if args[1:2] == ["absolute"] else self.position()
            to = self.clamp_position(base + t)
            self.seek(to)
            from player.outputs.window import fmt_time

            n = self.frame_number(to)  # the frame it lands on, at that frame's time (as the timeline)
            self.message(f"{fmt_time(n / self.info.fps)} #{n}"
                         + (f" / {fmt_time(self.info.duration)}" if self.info.duration > 0 else ""))
        elif verb == "frame-step":
            self.set_paused(True)
            self._frame_step()
        elif verb == "frame-back-step":
            self.set_paused(True)
            last = self.last
            if last is not None and last.frame.epoch != self.epoch:  # a seek's frame not shown yet
                self.seek(self.clock.now() - 1.0 / self.info.fps)
            elif last is not None:
                self.seek(last.frame.pts - last.frame.duration)
        elif verb == "ab-loop":
            a, b = self.loop
            pos = self.position()
            if a is None:
                self.loop = (pos, None)
                self.message(f"loop A = {pos:.3f} s (#{self.frame_number(pos)})")
            elif b is None and pos > a:
                self.loop = (a, pos)
                self.message(f"loop {a:.3f} – {pos:.3f} s (#{self.frame_number(a)} – #{self.frame_number(pos)})")
            else:
                self.loop = (None, None)
                self.message("loop cleared")
        elif verb == "ab-loop-clear":
            self.loop = (None, None)
            self.message("loop cleared")
        elif name in ("loop-a", "loop-b"):
            v = None if value == "no" else ctl.parse_float(value)  # "no" clears it, as in mpv
            if v is not None and not 0 <= v:
                raise ctl.CommandError(f"{name} needs seconds >= 0 (or no), got {value}")
            a, b = (v, self.loop[1]) if name == "loop-a" else (self.loop[0], v)
            if a is not None and b is not None and not a < b:  # (A ≥ B sought back to A on every pass)
                raise ctl.CommandError(f"the loop needs A < B, got A {a:g} s, B {b:g} s")
            self.loop = (a, b)
            self.message("loop cleared" if a is None and b is None else f"loop {a:.3f} – {b:.3f} s" if a is not None and b is not None
                         else f"loop A = {a:.3f} s" if a is not None else f"loop B = {b:.3f} s")
        elif verb == "preset-store":
            side = (args or ["A"])[0].upper()
            self.presets[side] = self.controls.mix
            self._preset_side = side  # what is on screen is this preset now: the next flip goes to the other
            self.message(f"preset {side} stored")
        elif verb == "preset-flip":
            side = "B" if self._preset_side == "A" else "A"
            mix = self.presets.get(side)
            if mix is None:
                raise ctl.CommandError(f"preset {side} is empty (store it with ctrl+{side.lower()})")
            self._keep_edits()
            self._preset_side = side
            self._set_controls(ctl.with_mix(self.controls, mix))
            self.message(f"preset {side}")
        elif verb == "preset-save":
            path = path or self.preset_file
            self._keep_edits()
            data = {k: ctl.mix_to_json(v, ctl.PRESET_DECIMALS) for k, v in self.presets.items()}
            data.setdefault("A", ctl.mix_to_json(self.controls.mix, ctl.PRESET_DECIMALS))
            try:
                Path(path).write_text(json.dumps(data, indent=2) + "\n")
            except OSError as e:
                raise ctl.CommandError(f"cannot write {path}: {e.strerror}") from None
            self.message(f"presets saved to {path}")
        elif verb == "preset-load":
            self._load_presets(path or self.preset_file)
        elif verb == "cycle" and args == ["help"] and self.controls.help and self.window.next_help_page():
            pass  # turned to the next page of a help page longer than the window (the last one closes)
        elif name == "speed":
            v = ctl.parse_float(value)
            speed = v if verb == "set" else self.clock.speed + v if verb == "add" else self.clock.speed * v
            self.set_speed(speed)
        elif name in ("volume", "mute", "fullscreen", "tone-mapping"):
            self._output_property(verb, name, value)
        elif name == "probe":
            self._probe_property(verb, value)
        elif verb == "screenshot":
            self.screenshot(path or self.cfg.screenshot_dir)
        elif verb == "screenshot-view":
            self.screenshot(path or self.cfg.screenshot_dir, view=True)
        elif verb == "record":
            from player.record import RecordError

            try:  # `record` toggles; `record FILE` starts recording to FILE (the rest of the line)
                self.recording.toggle(path)
            except RecordError as e:
                raise ctl.CommandError(str(e)) from None
        else:
            old = self.controls
            new = ctl.apply(old, cmd, self.context())
            self._set_controls(new)
            self._osd_for(cmd, new)

    def set_speed(self, speed: float) -> None:
        """Play at `speed` (SPEED_MIN..SPEED_MAX) from the frame on screen on; the sound keeps its pitch."""
        speed = round(min(max(speed, SPEED_MIN), SPEED_MAX), 6)  # 0.5 × 2 is 1 again, exactly
        if speed != self.clock.speed:
            self.clock.set_speed(speed)
            self.restart_sound(self.epoch, speed)  # what is queued was stretched for the old speed
        self.message(f"speed {speed:g}×")

    def _keep_edits(self) -> None:
        """Edits belong to the preset on screen, as with a plugin's A/B: a flip threw them away."""
        if self._preset_side in self.presets:
            self.presets[self._preset_side] = self.controls.mix

    @property
    def shown_display(self) -> "tonemap.DisplayMap | None":
        """The mapping the window shows the frames through: None for SDR video, or with tone mapping off."""
        return self.display if self.tone_mapping else None

    def _probe_property(self, verb: str, value: str | None) -> None:
        """`set probe X,Y|no`; `cycle probe` turns it on under the pointer (the frame's centre where
        the pointer has not been), or off."""
        if verb == "set":
            self.probe = parse_probe(value)
        elif self.probe is None:
            self.probe = self._pointer or (self.info.width // 2, self.info.height // 2)
        else:
            self.probe = None
        if self.probe is None:
            self.message("noise probe off")
        else:
            self.message("noise probe: move the pointer over a flat patch" if verb == "cycle" else
                         f"noise probe at {self.probe[0]},{self.probe[1]}")

    def _output_property(self, verb: str, name: str, value: str | None) -> None:
        """volume (0..VOLUME_MAX %), mute, fullscreen and tone-mapping: how the outputs play, not
        what the blend makes."""
        if name == "tone-mapping":
            on = not self.tone_mapping if verb == "cycle" else ctl.parse_bool(value)
            self.tone_mapping = on and self.display is not None
            self.message(f"tone mapping {self.display.name}" if self.tone_mapping else
                         "shown as coded" if self.display is not None else
                         f"{self.info.colour.name if self.info.colour else 'RGB'} SDR video: shown as coded, nothing to map")
            return
        if name == "volume":
            v = ctl.parse_float(value) + (self.volume if verb == "add" else 0)
            self.volume = int(round(min(max(v, 0), VOLUME_MAX)))  # muted stays muted, as in mpv
            self.message(f"volume {self.volume} %" + (" (muted)" if self.muted else ""))
        elif name == "mute":
            self.muted = not self.muted if verb == "cycle" else ctl.parse_bool(value)
            self.message("mute" if self.muted else f"volume {self.volume} %")
        else:  # fullscreen
            on = not self.window.fullscreen if verb == "cycle" else ctl.parse_bool(value)
            if on != self.window.fullscreen:
                self.window.set_fullscreen(on)
        self.feed.gain = 0.0 if self.muted else self.volume / 100.0
        if not self.info.has_audio and name in ("volume", "mute"):
            self.message("no audio stream")

    def _set_controls(self, new: ctl.Controls) -> None:
        if new.serial != self.controls.serial:
            self._changed_at[new.serial] = new.changed_at
        self.controls = new  # one reference swap: the compositor sees old or new, never half

    def _osd_for(self, cmd: str, c: ctl.Controls) -> None:
        name = cmd.split()[1] if len(cmd.split()) > 1 else cmd
        m = c.mix
        if cmd.startswith("autotune") or (name == "strength" and m.strength is None):
            self.message("AutoTune")
        elif name == "strength":
            self.message(f"strength {m.strength:.1f}")
        elif name == "character":
            self.message(f"character {m.character:+.2f}")
        elif name in ("luma", "chroma"):
            self.message(f"{name} ×{getattr(m, name):.2f}")
        elif name == "bypass":
            self.message("bypass on: the original is shown" if c.bypass else "bypass off: tuned")
        elif name == "view":
            self.message(f"view {c.view}")
        elif name == "zoom":
            self.message(f"zoom {c.zoom}:1 (screen pixels per frame pixel)" if c.zoom else "zoom: fit to the window")
        elif name == "level" or name.startswith("coeff"):
            n = c.level if name in ("level", "coeff") else int(name.split(".", 1)[1])
            i = ctl.level_index(n, self.levels)
            text = f"level {n}: the σ {self.levels[i]:g} map"
            if m.coeffs is not None:
                text += f", coefficient {m.coeffs[i]:+.3f} (expert)"
            elif name == "level":
                text += " (+ / − change its coefficient)"
            self.message(text)

    def _load_presets(self, path: str, startup: bool = False) -> None:
        error = PlayerError if startup else ctl.CommandError
        try:
            presets = ctl.read_presets(path)
        except ctl.CommandError as e:
            raise error(str(e)) from None
        for side, mix in presets.items():  # all of them, before any is taken (B's were not: a flip to it crashed)
            if mix.coeffs is not None and len(mix.coeffs) != len(self.levels):
                raise error(f"{path}: preset {side} has {len(mix.coeffs)} coefficients, the model has {len(self.levels)} levels")
        self.presets = presets
        first = presets.get("A") or presets.get("B")
        self._preset_side = "A" if "A" in presets else "B"
        self._set_controls(ctl.with_mix(self.controls, first))
        self.message(f"presets loaded from {path}")

    def message(self, text: str) -> None:
        self._messages.append((time.monotonic(), text))

    # ---- playback --------------------------------------------------------------------------
    def position(self) -> float:
        return self.clock.now()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.clock.set_paused(paused)

    def frame_number(self, t: float) -> int:
        """The frame at time t, counted at the nominal rate (mpv's estimated-frame-number)."""
        return int(round(t * self.info.fps))

    def clamp_position(self, t: float) -> float:
        """t within the file: from 0 to half a frame before its end (where the duration is known)."""
        dur = self.info.duration
        return max(0.0, min(t, dur - 0.5 / self.info.fps) if dur > 0 else t)

    def seek(self, t: float) -> None:
        t = self.clamp_position(t)
        with self._sound_lock:
            self.epoch += 1
            self.clock.reset(t, self.epoch)  # (stopped until the compositor has the seek's first frame)
            for q in (self.video_q, self.audio_q, self.ready_q):
                q.clear()
            self.feed.reset()
            self._ended = None
            with self._step_lock:
                self._steps = 0
            self.frames_presented_epoch = 0
            self.decoder.seek(t, self.epoch)
            if self.audio_decoder is not None:
                self.audio_decoder.seek(t, self.epoch)

    def restart_sound(self, epoch: int, speed: float | None = None) -> None:
        """The sound again (at `speed`) from the first sample not played yet, what is queued
        dropped: nothing skipped, nothing twice, and a recording's sound stays whole; it waits, in
        silence, until the clock gets there. For a speed change, and for the compositor when a
        wait for frames left the clock ahead of the picture (the clock goes back, the sound waits
        for it). Ignored when a seek has come since `epoch`."""
        if self.audio_decoder is None:
            return
        with self._sound_lock:  # a seek between the check and the decoder's restart lost the sound
            if epoch != self.epoch:
                return
            self.audio_decoder.invalidate()  # first: a chunk it puts after the clear is not played
            self.audio_q.clear()
            self.feed.reset()
            # Where the sound of this epoch stopped, at whatever speed it played (read after the
            # reset: no sample is output between); the clock where none has played yet. (It went by
            # `feed.started`, which a speed change had already made false: the clock's time, which
            # missed the last sample played by up to a fill, and a recording lost or repeated it.)
            played = self.feed.played_to
            t = played[1] if played is not None and played[0] == epoch else self.clock.now()
            self.audio_decoder.set_speed(self.clock.speed if speed is None else speed, t, epoch)

    def screenshot(self, folder: str, view: bool = False) -> None:
        """The original and tuned PNG pair of the frame on screen; with `view`, one PNG of the view
        as shown (split, side by side, difference…) at the frame's size, without the HUD."""
        if self.last is None:
            raise ctl.CommandError("no frame on screen yet")
        d = Path(folder)
        stem = f"rcd-{self.info.stem}-{self.last.frame.pts:08.3f}"
        # Copies first: the tuned frame is one of the compositor's rotating buffers, which it fills
        # again four frames on — during the PNG encoding, while playing (the pair differed by 4–8 frames).
        original, tuned = self.last.frame.rgb.copy(), self.last.tuned.copy()
        c = self.controls
        if view:
            from player.outputs.window import compose_view

            both = c.view == "side"  # full resolution, as the window shows it: twice the width
            display = self.shown_display  # (as the window shows it)
            shown = (np.concatenate([original, tuned], axis=1) if both
                     else compose_view(original, tuned, c.view, c.split, display=display))
            if both and display is not None:
                shown = display(shown)
            # (named apart from the pair: the tuned view's PNG wrote over the pair's tuned one, the
            # same pixels until the window mapped HDR video)
            pngs = {"view-" + c.view + ("-bypass" if c.bypass else ""): shown}  # bypassed, "tuned" shows the original
        else:
            b = self.last.bases
            if c.bypass and b is not None:  # the screen shows the original: the pair's tuned is blended here
                tuned = self.denoiser.blend(b, c.mix)
            pngs = {"original": original, "tuned": tuned}
        # HDR and wide-gamut codes (the pair, or a view shown as coded) say what they are in PNG's
        # cICP chunk: a viewer that reads it shows them as the window's mapping does, not flat.
        coded = self.display is not None and (not view or not self.tone_mapping and c.view != "diff")
        k = self.info.colour
        cicp = (k.primaries, k.trc, col.SPC_RGB, 1) if coded else None
        try:
            d.mkdir(parents=True, exist_ok=True)
            for name, rgb in pngs.items():
                write_png(d / f"{stem}-{name}.png", rgb, cicp)
        except OSError as e:
            raise ctl.CommandError(f"cannot write screenshot to {d}: {e.strerror}") from None
        names = ",".join(pngs)
        self.message(f"screenshot {d / stem}-{{{names}}}.png" if len(pngs) > 1 else f"screenshot {d / stem}-{names}.png")

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        for t in self.threads():
            t.start()
        self.sound.start()
        self.set_paused(False)
        t_start = self._run_start = time.monotonic()
        script_time, last_tick = 0.0, time.monotonic()
        try:
            while not self._quit:
                self._check_threads()
                self.recording.check_errors()  # an encoder that failed: said now, paused too
                now = time.monotonic()
                dt, last_tick = now - last_tick, now
                if self.frames_presented > 0 and not self.compositor.buffering:
                    script_time += dt
                while self._script_i < len(self.script) and self.script[self._script_i][0] <= script_time:
                    self.command(self.script[self._script_i][1])
                    self._script_i += 1
                if self.cfg.duration is not None and script_time >= self.cfg.duration:
                    break
                for ev in self.window.poll():
                    self._on_event(ev)
                self._loop_and_end()
                p = self.slot.take(timeout=0.004)
                if p is not None and p.frame.epoch != self.epoch:
                    p = None  # blended before a seek made since: the picture waits for the seek's frame
                if p is not None:
                    self._show(p)
                elif self._last_show is not None and self._view_changed():
                    self._show(self.last, again=True)
                elif self.last is None:
                    self._show_waiting(time.monotonic() - t_start)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli): stop as on `quit`, but say it was interrupted
            code = EXIT_INTERRUPTED
        else:
            code = 0
        self.wall_s = time.monotonic() - t_start
        return code

    def threads(self) -> list[threading.Thread]:
        return [t for t in (self.decoder, self.audio_decoder, self.worker, self.compositor) if t is not None]

    def _check_threads(self) -> None:
        for t in self.threads():
            if t.error is not None:
                e = t.error
                if isinstance(e, MediaError):
                    raise PlayerError(str(e))
                raise PlayerError(f"{t.name} thread failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def _loop_and_end(self) -> None:
        if self._ended is not None and self._ended.epoch != self.epoch:
            self._ended = None  # the compositor's end of a pass that a seek has since replaced
        a, b = self.loop
        if a is not None and b is not None and not self.paused and self.last is not None:
            if (self.last.frame.epoch == self.epoch and self.last.frame.pts >= b - LOOP_EPS or self._ended is not None
                    or self.worker.waiting_at_loop_end and len(self.ready_q) == 0 and self.slot.empty):
                self.seek(a)  # the last: the frames up to B were dropped late, and no more come
                return
        if (self._ended is not None and self.last is None and self.compositor.eos is not None and not self.paused
                and self.slot.empty):  # (a one-frame file's frame may still wait in the slot: it ended with nothing shown)
            self.notice(f"nothing to play from {self.clock.now():.2f} s: the stream ended before a frame")
            self._quit = True  # else --duration, which counts shown time, would wait forever
            return
        if self._ended is not None and self.last is not None and self.slot_empty_and_drained():
            if self.demo is not None and not self.no_display:
                self.seek(0.0)  # the demo loops forever in a window
            elif self.info.still and (self.cfg.duration is not None or not (self.cfg.headless or self.no_display)):
                # A still image is there to be tuned: it stays up, paused (an edit re-blends it), until
                # `q` (or --duration). It used to be shown for 1/fps and the window closed.
                if not self.paused:
                    self.set_paused(True)
                    self.message("a still image: paused on it (q quits)")
            elif not self.paused and self._played_out():
                self._quit = True

    def _played_out(self) -> bool:
        """The last frame has had its time on screen and the sound has played to its end. (Playback
        ended as the last frame came up: a 1 fps clip lost its last second of sound, a recording
        of it was padded with silence, and a single-frame clip with sound ended at once.)"""
        f = self.last.frame
        if self.clock.now() < f.pts + f.duration - 1e-3:
            return False
        return self.audio_ended() and len(self.audio_q) == 0 and self.feed.idle

    def slot_empty_and_drained(self) -> bool:
        eos = self.compositor.eos
        return len(self.ready_q) <= 1 and eos is not None and eos.epoch == self.epoch

    def _on_event(self, ev) -> None:
        if ev.kind == "quit":
            self._quit = True
        elif ev.kind == "key":
            cmd = keymap.command_for(ev.key)
            if cmd and (not ev.repeat or keymap.repeatable(cmd)):
                self.command(cmd)
        elif ev.kind == "mouse":
            # The pointer moves the split (split view) or the zoom's centre; in split view a drag
            # moves the centre and leaves the split (both at once kept the zoomed detail on one side).
            # The noise probe, when on, follows it.
            if ev.frame_x >= 0:
                self._pointer = (int(ev.frame_x), int(ev.frame_y))
                if self.probe is not None:
                    self.probe = self._pointer
            c = self.controls
            if c.view == "split" and not ev.button:
                self._set_controls(ctl.apply(c, f"set split {ev.x:.4f}", self.context()))
            else:  # tracked unzoomed too: z zooms in where the pointer is
                self._set_controls(ctl.apply(c, f"set center {ev.x:.4f},{ev.y:.4f}", self.context()))
        elif ev.kind == "click" and ev.key == "timeline" and self.info.duration > 0:
            self.command(f"seek {ev.x * self.info.duration:.3f} absolute")

    def _view_key(self):
        c = self.controls
        # the message shown now, not only how many there were: one that expires is taken away, paused too
        return (c.view, round(c.split, 3), c.zoom, c.center if c.zoom else None, c.hud, c.help, self.window.help_page,
                self.paused, len(self._messages), self._current_message(),
                self.window.size,  # a resized window: drawn again
                self.tone_mapping, self.probe)

    def _current_message(self) -> str:
        """The OSD message on screen now: the latest one, for MESSAGE_S (asked on every pass of the
        main loop, so it looks at the last message only: they are appended in time order)."""
        if self._messages and time.monotonic() - self._messages[-1][0] < MESSAGE_S:
            return self._messages[-1][1]
        return ""

    def _view_changed(self) -> bool:
        return self._last_show != self._view_key()

    def _show(self, p: Presented, again: bool = False) -> None:
        if not again:
            # Present at the frame's time: the compositor blends slightly ahead.
            if not self.paused and p.frame.epoch == self.clock.epoch:
                wait = (p.frame.pts - self.clock.now()) / self.clock.speed  # wall seconds
                if 0 < wait < SHOW_WAIT_MAX_S:
                    time.sleep(wait)
        if not again and self.paused:
            self._measure(p)  # before the HUD is drawn: paused, nothing redraws it after this edit
        c = self.controls
        self.window.show(p.frame.rgb, p.tuned, view=c.view, split=c.split, zoom=c.zoom, center=c.center,
                         hud=self._hud(p) if c.hud else self._hud_hidden(), help_lines=keymap.help_lines() if c.help else None,
                         tuned_label="original (bypass)" if c.bypass else "tuned",  # both halves are the original
                         display=self.shown_display)
        t = time.monotonic()
        self._last_show = self._view_key()
        if again:
            return
        self.recording.present(p, self.controls)  # recording: the tuned frame at its source pts
        if not self._first_shown:
            self._first_shown = t
        self.last = p
        if p.serial not in self._presented_serials:
            self._presented_serials.add(p.serial)
            changed = self._changed_at.get(p.serial)
            if changed:
                self._edit_latency.append((t - changed) * 1000.0)
        if not self.paused and p.frame.epoch == self.clock.epoch and not self.compositor.buffering:
            self._av_offsets.append((p.frame.pts - self.clock.now()) / self.clock.speed * 1000.0)  # as seen and heard
            self._present_times.append(t)
        self.frames_presented += 1
        self.frames_presented_epoch += 1
        if not self.paused and self.frames_presented % STATS_EVERY == 1:  # after the show: no edit waits for it
            self._measure(p)

    def _show_waiting(self, waited: float) -> None:
        """Before the first frame: a dark frame saying what the player is waiting for (4 Hz)."""
        if waited < 0.25 or waited - self._waiting_shown < 0.25:
            return
        from player.outputs.window import Hud

        self._waiting_shown = waited
        blank = np.full((self.info.height, self.info.width, 3), 16, np.uint8)
        what = f"buffering: {len(self.worker.backbone_ms)} frames through the backbone ({waited:.1f} s)"
        self.window.show(blank, blank, hud=Hud(lines=[f"{self.info.name}  {self.denoiser.name}", what],
                                               duration=self.info.duration, badges=["BUFFERING"], message=what))

    def _measure(self, p: Presented) -> None:
        o = p.frame.rgb[::4, ::4].astype(np.int16)
        t = p.tuned[::4, ::4].astype(np.int16)
        self.measured_sigma = float(np.std(t - o))
        if p.frame.clean is not None:
            ref = p.frame.clean[::4, ::4]
            self.psnr_original, self.psnr_tuned = psnr(p.frame.rgb[::4, ::4], ref), psnr(p.tuned[::4, ::4], ref)

    # ---- HUD ---------------------------------------------------------------------------------
    def display_fps(self, window_s: float = 1.0) -> float:
        recent = _recent(self._present_times, window_s)
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def frame_times_ms(self, window_s: float = 1.0) -> tuple[float, float]:
        """(median, longest) interval between presented frames over the last `window_s`, in ms: the
        longest shows a hitch that the frame rate averages away. (0, 0) before two frames."""
        recent = _recent(self._present_times, window_s)
        if len(recent) < 2:
            return 0.0, 0.0
        gaps = np.diff(recent) * 1000.0
        return float(np.median(gaps)), float(gaps.max())

    def _hud(self, p: Presented):
        from player.outputs.window import Hud

        c, m, b = self.controls, self.controls.mix, p.bases
        mode = "AutoTune" if m.strength is None and m.coeffs is None else "expert" if m.coeffs is not None else "manual"
        req = f"{p.strength:5.1f}"
        if c.bypass:
            req, mode = "off", "bypass"
        frame_p50, frame_max = self.frame_times_ms()
        # What tuning needs, always; the pipeline's numbers under it where the window has room.
        psnr_text = f"   PSNR {self.psnr_original:5.2f} → {self.psnr_tuned:5.2f} dB" if self.psnr_original is not None else ""
        lines = [
            f"strength {req} ({mode})  removed σ {self.measured_sigma or 0:4.1f}",
            f"character {m.character:+.2f}  luma ×{m.luma:.2f}  chroma ×{m.chroma:.2f}"
            # bases made from the luma (or a grey frame) are R = G = B: the chroma gain has nothing to scale
            + ("  (no effect: luma residual)" if b is not None and (b.luma or b.mono) else ""),
            (f"input noise σ ≈ {b.sigma_est:4.1f}" if b is not None else "") + psnr_text,
        ]
        details = [
            f"{self.info.name}  {self.info.width}×{self.info.height} {self.info.pix_fmt} @ {self.info.fps:.2f}"
            + (f"  {self.display.name}" if self.tone_mapping else f"  {self.info.colour.unmanaged} as coded"
               if self.display is not None else "")
            + f"   model {self.denoiser.name}"
            f" · {self.denoiser.device.type} {dtype_name(self.denoiser.dtype)} · {self.worker.mode} mode",
            f"display {self.display_fps():5.1f} fps  frame {frame_p50:3.0f}/{frame_max:3.0f} ms"
            f"  drops early {self.worker.dropped_early} late {self.compositor.dropped_late + self.slot.replaced}"
            # (with no sound, the offset is the picture's against the wall clock, as the stats' A/V)
            f"  {'A/V' if self.info.has_audio else 'clock'} {self._av_offsets[-1] if self._av_offsets else 0:+5.0f} ms",
            f"backbone {_last(self.worker.backbone_ms):6.1f} ms"
            + (" (mono)" if b is not None and b.mono else "")  # the model's backbone for R = G = B frames
            + (" (luma)" if b is not None and b.luma else "")  # ... on the luma of a frame whose noise is luma
            + (f" ({self.worker.lanes} frames at once)" if self.worker.lanes > 1 else "")
            + f"  blend {_last(self.compositor.blend_ms):5.2f} ms"
            f"  cache {len(self.worker.cache)} frames / {self.worker.cache.nbytes / 2**20:.0f} MB",
        ]
        # One bar per level, labelled with the number key that selects it (the zero map has none).
        keys = {i: n for n, i in enumerate(ctl.adjustable_levels(self.levels), start=1)}
        bars = [(f"{keys[i] if i in keys else ' '}  σ {lv:g}", p.coeffs[i] if i < len(p.coeffs) else 0.0, 1.0,
                 keys.get(i) == c.level) for i, lv in enumerate(self.levels)]
        badges = []
        if self.paused:
            badges.append("PAUSED")
        elif self.compositor.buffering:  # paused, the clock waits for the user, not for frames
            badges.append("BUFFERING")
        if c.bypass:
            badges.append("BYPASS")
        if c.view != "tuned":
            badges.append(c.view.upper())
        if c.zoom:
            badges.append(f"{c.zoom}:1")
        if self.clock.speed != 1.0:
            badges.append(f"{self.clock.speed:g}×")
        if self.muted and self.info.has_audio:
            badges.append("MUTE")
        if self.presets:  # which preset the picture shows (edits go to it: preset-flip)
            badges.append(f"PRESET {self._preset_side}")
        badges += self.recording.badges()  # REC ● / REC LAG / REC DROPPED n
        msg = self._current_message()
        square = None
        if self.probe is not None:  # the noise probe's reading, under the tuning lines
            self.probe_reading = probe(p.frame.rgb, p.tuned, *self.probe, history=self._probe_history,
                                       epoch=p.frame.epoch, pts=p.frame.pts,
                                       nits=self.display.nits if self.display is not None and self.display.hdr else None)
            lines += self.probe_reading.lines
            square = (self.probe_reading.x, self.probe_reading.y, PROBE_SIZE)
        return Hud(lines=[x for x in lines if x], details=details, bars=bars, position=p.frame.pts, frame=self.frame_number(p.frame.pts),
                   duration=self.info.duration,
                   cache=self.worker.cache.ranges(), loop=self.loop, badges=badges, message=msg, probe=square)

    def _hud_hidden(self):
        """With the HUD hidden (i), still the transient message and the states that change what the
        picture means (BYPASS, REC): an original must not pass for the tuned frame unnoticed."""
        from player.outputs.window import Hud

        msg = self._current_message()
        badges = (["BYPASS"] if self.controls.bypass else []) + self.recording.badges()
        return Hud(badges=badges, message=msg, timeline=False) if msg or badges else None

    # ---- shutdown and stats ------------------------------------------------------------------
    def close(self) -> None:
        """Abort, wake, join, flush: no thread is left behind."""
        for t in self.threads():
            t.stop()
        for q in (self.video_q, self.audio_q, self.ready_q):
            q.close()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in self.threads():
            if t.is_alive():
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t for t in self.threads() if t.is_alive()]  # e.g. a read from a stalled network share
        if stuck:
            names = ", ".join(t.name for t in stuck)
            self.notice(f"{names} did not stop within {JOIN_TIMEOUT_S:g} s: left to end with the process")
        self.recording.stop(wait_audio=True)  # recording: ≤ 0.3 s for the audio of the last frame to play
        try:
            self.sound.close()
        except Exception as e:  # a device that vanished must not hide the stats
            self.notice(f"closing the sound device failed: {e}")
        self.recording.close()  # stop recording; waits until every recording is complete on disk
        self.window.close()
        if not any(t in stuck for t in (self.decoder, self.audio_decoder)):  # closing it under a reading thread can crash
            self.source.close()
        torch.set_num_threads(self._torch_threads)  # the process's setting, as it was (tests run players in-process)

    def stats(self) -> dict:
        bb = self.worker.backbone_ms
        steady = self._av_offsets[5:] if len(self._av_offsets) > 10 else self._av_offsets
        ts = self._present_times
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        feed_underflows, device_underflows = self.feed.underflows, getattr(self.sound, "underflows", 0)
        return {
            "frames_presented": self.frames_presented,
            "frames_dropped_early": self.worker.dropped_early,
            "frames_dropped_late": self.compositor.dropped_late + self.slot.replaced,
            "display_fps": round(fps, 2),
            # from the start of playback (the model loaded, the file open) to the first frame on screen:
            # decoding, the lanes' first inferences, the ready queue filling, and `auto`'s timing
            "first_frame_ms": _round((self._first_shown - self._run_start) * 1000.0) if self._first_shown else None,
            "av_offset_ms_p95": _round(percentile(np.abs(steady), 95) if steady else None),
            "audio_underflows": feed_underflows + device_underflows,
            # which side: the feed had no sound ready (the player's fault) / the device reported an
            # underflow of its own (a JACK dummy server's xruns land there, with the feed at 0)
            "audio_underflows_feed": feed_underflows,
            "audio_underflows_device": device_underflows,
            "backbone_ms_p50": _round(percentile(bb, 50)),
            "blend_ms_p50": _round(percentile(self.compositor.blend_ms, 50)),
            "edit_latency_ms_p50": _round(percentile(self._edit_latency, 50)),
            "edit_latency_ms_p95": _round(percentile(self._edit_latency, 95)),
            "reinference_ms_p50": _round(percentile(bb, 50)),
            "edits": len(self._edit_latency),
            "mode": self.worker.mode,
            "backbone_lanes": self.worker.lanes,  # frames in inference at once
            "frames_mono": self.worker.frames_mono,  # through the model's backbone for R = G = B frames
            "frames_luma": self.worker.frames_luma,  # ... on the luma of colour frames with luma noise
            "noise": self.cfg.noise,
            "threads_per_lane": self.threads_per_lane,
            "device": self.denoiser.device.type,
            "precision": dtype_name(self.denoiser.dtype),  # the backbone's; float32 or bfloat16 on a CPU
            "blend_kernel": self.denoiser.blend_kernel,  # the native one-pass kernel, or torch and why
            "backbone_kernel": self.denoiser.backbone_kernel,  # fused (CPU, float32), or torch and why
            "stats_kernel": self.denoiser.stats_kernel,  # the native fill (AMX tiles or vectors), or torch
            "audio_output": getattr(self.sound, "name", "null"),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "bad_packets": self.source.bad_packets,
            **self.recording.stats(),  # record_frames, record_frames_dropped, record_lag_max_frames, …
            # the noise probe's last reading (x, y, size, luma_sigma, chroma_sigma, mean_rgb: original, tuned)
            "probe": asdict(self.probe_reading) if self.probe_reading is not None else None,
            "notices": self.notices,
        }


def _recent(times: list[float], window_s: float) -> list[float]:
    """The presentation times within `window_s` of the latest (from the last 240 only)."""
    return [x for x in times[-240:] if x >= times[-1] - window_s] if times else []


def _last(xs) -> float:
    return xs[-1] if xs else 0.0


def _round(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 3)
