"""The player's window: the pygame display on the main thread.

This module owns everything that is drawn and everything the user types or
clicks, and nothing else:

* composing the chosen *view* of a frame pair -- ``tuned``, ``original``,
  ``split``, ``side`` (side by side: in the window each frame in its half at full
  resolution, in :func:`compose_view` both at half) or ``diff`` (|tuned - original| x4) -- with
  an optional nearest-neighbour zoom crop (:func:`compose_view`, pure numpy,
  shared by :class:`Window` and :class:`NullWindow` so headless runs and tests
  exercise the same view logic);
* letterboxing the composed image into the (resizable) window;
* the HUD (:class:`Hud`): text lines and per-level coefficient bars in a
  semi-transparent panel top-left, state badges top-right, a transient message,
  and a timeline at the bottom with the playhead, the A-B loop and the cached
  ranges; and the full-window help page;
* turning pygame events into simple :class:`Event` tuples (:meth:`Window.poll`).

It knows nothing about decoding, models, audio or threads: the player calls
:meth:`Window.poll` and :meth:`Window.show` from the main thread with plain
numpy frames and a filled-in :class:`Hud`.

:class:`NullWindow` has the same API without a display (``--headless``).
Only ``pygame.display`` and ``pygame.font`` are initialised (never
``pygame.init()``, which would open an audio device).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
# The window's pixels go to the X server through its shared-memory framebuffer, not through an
# OpenGL texture: SDL picked OpenGL here, and where that is Mesa's software rasteriser (no GPU, a
# VM, Xvfb, a remote desktop) it cost the main thread and two llvmpipe threads a fifth of a core
# at 720p — 1280×720 demo, --mode live, Xvfb, two runs each: 28.8–29.2 fps against 23.6–25.3, edit
# latency p95 36–44 against 65–85 ms. On a display with hardware OpenGL either way is cheap at
# these sizes; SDL_FRAMEBUFFER_ACCELERATION=1 in the environment gives SDL its choice back.
os.environ.setdefault("SDL_FRAMEBUFFER_ACCELERATION", "0")
import pygame  # noqa: E402

from engine import native  # noqa: E402  (the difference view's one-pass kernel)

__all__ = [
    "VIEWS", "DIFF_GAIN", "MAX_INITIAL_SIZE", "DisplayUnavailable", "Event", "Hud",
    "Window", "NullWindow", "compose_view", "crop_box", "crop_rect", "fit_size", "letterbox_rect",
    "key_name", "fmt_time",
]

VIEWS = ("tuned", "original", "split", "side", "diff")
DIFF_GAIN = 4            # the diff view's gain; _diff() is written for exactly 4
MAX_INITIAL_SIZE = (1600, 900)
HELP_MIN_PX = 9           # the help page's smallest font: below this no one reads it
HUD_MAX_SHARE = 0.4       # of the window's height, for the HUD panel with its detail lines
DOUBLE_CLICK_S = 0.4      # two left presses this close in time ... (the common desktop default)
DOUBLE_CLICK_PX = 4       # ... and in place make a double click (SDL reports no click count to pygame)
SWITCH_GUARD_S = 1.0      # after fullscreen on/off, presses of the keys held then are dropped this long (X's
                          # autorepeat delay is 660 ms by default; a second f within it is not taken either)
SCRUB_S = 0.1             # dragging along the timeline seeks at most this often (each seek restarts decoding)


class DisplayUnavailable(Exception):
    """No display to open a window on (no X server / no video device)."""


@dataclass
class Event:
    """One user event, as returned by :meth:`Window.poll`.

    kind:
      ``"key"``    key pressed (auto-repeats while held); ``key`` names it.
      ``"quit"``   the window was closed.
      ``"mouse"``  pointer moved; ``x``/``y`` are its position as fractions
                   (0..1, clamped) of the displayed video image; ``button`` is
                   the lowest held mouse button (1 left, 2 middle, 3 right) or 0.
                   At most one per poll() (the latest position).
      ``"click"``  mouse button pressed; ``x``/``y`` as for "mouse", ``button``
                   the button.  When the press is on the HUD timeline, ``key`` is
                   ``"timeline"`` and ``x`` is the fraction (0..1) along the
                   timeline (i.e. of the duration) instead; dragging the pressed
                   left button along it sends more such clicks (at most every
                   SCRUB_S, and where it is let go).
      ``"resize"`` the window was resized; ``x``/``y`` are its new width and
                   height in pixels.

    A left double click on the picture comes as the key event "MBTN_LEFT_DBL"
    (mpv's name; bound to fullscreen) after the second press's "click".

    Key names: printable characters as typed, shift applied ("q", "Q", "?",
    ",", "[", "1"); named keys as pygame names them, upper-cased ("LEFT",
    "RIGHT", "UP", "DOWN", "TAB", "F1", "RETURN", "BACKSPACE", "HOME",
    "PAGE UP", "ESCAPE", ...), except "space", which stays lower-case.  Held
    modifiers prefix the name:
    "ctrl+", "alt+" (in that order) for any key, e.g. "ctrl+s", "ctrl+S"
    (ctrl+shift+s), "alt+LEFT"; "shift+" only for named keys ("shift+LEFT",
    "shift+TAB"), as a shifted character already says so.  The mouse wheel
    gives the key events "WHEEL_UP" / "WHEEL_DOWN".
    """
    kind: str
    key: str = ""
    x: float = 0.0
    y: float = 0.0
    button: int = 0
    repeat: bool = False
    """A "key" event repeated while the key is held (after 350 ms, every 40 ms)."""
    frame_x: float = -1.0
    frame_y: float = -1.0
    """"mouse" and "click": the frame's pixel coordinates under the pointer, as shown (zoomed,
    scaled, either half of side by side); -1 off the picture."""


@dataclass
class Hud:
    """Everything the HUD shows; the player fills it each frame."""
    lines: list[str] = field(default_factory=list)
    """Text lines, top-left, monospace."""
    details: list[str] = field(default_factory=list)
    """More lines, under them, where there is room: left out where the panel would cover more than
    HUD_MAX_SHARE of the window's height (at 640×360 the full panel covered 43 % of the picture)."""
    bars: list[tuple[str, float, float, bool]] = field(default_factory=list)
    """(label, value, vmax, selected) per level; drawn from a centred zero line
    over -vmax..vmax (values beyond are clipped and flagged)."""
    position: float = 0.0
    """Playhead, seconds."""
    frame: int | None = None
    """The frame number at the playhead (round(position × fps)), shown beside it; None: not shown."""
    duration: float = 0.0
    """Seconds; 0 when unknown."""
    cache: list[tuple[float, float]] = field(default_factory=list)
    """Cached (start, end) time ranges in seconds, drawn under the timeline."""
    loop: tuple[float | None, float | None] = (None, None)
    """A-B loop points (seconds) or None."""
    badges: list[str] = field(default_factory=list)
    """Short state words shown top-right ("PAUSED", "BYPASS", "REC ●", ...)."""
    message: str = ""
    """Transient OSD message, centred near the top ("" for none)."""
    timeline: bool = True
    """Draw the timeline; False for the HUD's hidden state (messages and key badges only)."""
    probe: tuple[int, int, int] | None = None
    """(x, y, size): the square of frame pixels the probe reads, size wide, centred on (x, y);
    outlined on the picture (in both halves of side by side)."""


# =========================================================================== pure helpers

def fit_size(width: int, height: int, max_size: tuple[int, int] = MAX_INITIAL_SIZE) -> tuple[int, int]:
    """(width, height) scaled down (aspect kept) to fit ``max_size``; unchanged if it fits."""
    width, height = max(1, int(width)), max(1, int(height))
    mw, mh = max_size
    s = min(1.0, mw / width, mh / height)
    if s >= 1.0:
        return width, height
    return max(1, round(width * s)), max(1, round(height * s))


def letterbox_rect(content_w: int, content_h: int, win_w: int, win_h: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a ``content_w`` x ``content_h`` image fitted, aspect kept, centred
    in a ``win_w`` x ``win_h`` window (exactly the window when the sizes match)."""
    if content_w <= 0 or content_h <= 0 or win_w <= 0 or win_h <= 0:
        return 0, 0, max(0, win_w), max(0, win_h)
    if (content_w, content_h) == (win_w, win_h):
        return 0, 0, win_w, win_h
    s = min(win_w / content_w, win_h / content_h)
    w = max(1, min(win_w, round(content_w * s)))
    h = max(1, min(win_h, round(content_h * s)))
    return (win_w - w) // 2, (win_h - h) // 2, w, h


def crop_rect(height: int, width: int, zoom: int, center: tuple[float, float]) -> tuple[int, int, int, int]:
    """The zoom crop of a ``height`` x ``width`` frame: (y0, x0, crop_h, crop_w).

    The crop is ``ceil(size / zoom)`` in each direction, centred on ``center``
    ((x, y) as fractions of the frame) and clamped inside the frame.  Upscaled
    ``zoom`` times it covers the frame size (the excess, < zoom pixels, is cut
    off at the right / bottom).  Frame pixel of a displayed fraction fx:
    ``x0 + fx * crop_w``.
    """
    zoom = max(1, int(zoom))
    return crop_box(height, width, -(-height // zoom), -(-width // zoom), center)


def crop_box(height: int, width: int, ch: int, cw: int, center: tuple[float, float]) -> tuple[int, int, int, int]:
    """A ``ch`` x ``cw`` crop of a ``height`` x ``width`` frame centred on ``center`` (fractions),
    clamped inside the frame: (y0, x0, ch, cw)."""
    ch, cw = min(max(1, ch), height), min(max(1, cw), width)
    cx, cy = float(center[0]), float(center[1])
    x0 = int(round(cx * width - cw / 2))
    y0 = int(round(cy * height - ch / 2))
    x0 = min(max(x0, 0), width - cw)
    y0 = min(max(y0, 0), height - ch)
    return y0, x0, ch, cw


def _split_column(width: int, split: float) -> int:
    return int(min(max(round(float(split) * width), 0), width))


def _check_frames(original: np.ndarray, tuned: np.ndarray) -> None:
    for name, a in (("original", original), ("tuned", tuned)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{name} must be a uint8 (H, W, 3) array, got "
                             f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    if original.shape != tuned.shape:
        raise ValueError(f"original and tuned differ in shape: {original.shape} vs {tuned.shape}")


def _diff(o: np.ndarray, t: np.ndarray) -> np.ndarray:
    """min(DIFF_GAIN * |t - o|, 255) as uint8: the engine's one-pass kernel where it is built (1080p:
    19 ms → ~2), else without widening (all ops in place on uint8)."""
    d = native.absdiff4(t, o)
    if d is not None:
        return d
    d = np.maximum(t, o)
    m = np.minimum(t, o)
    d -= m                                   # |t - o|, exact in uint8
    np.minimum(d, 64, out=d)                 # 64 * 4 = 256 is the first value that saturates
    np.right_shift(d, 6, out=m)              # 1 where d == 64, else 0
    d <<= 2                                  # d * 4; 64 * 4 wraps to 0 ...
    d -= m                                   # ... and 0 - 1 wraps to 255
    return d


def _put_half(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src[::2, ::2][:, :dst.shape[1]] -- copying whole 3-byte pixels (a 'V3'
    view), about twice as fast as numpy's per-channel strided copy."""
    n = dst.shape[1]
    try:
        dst.view("V3")[..., 0] = src.view("V3")[::2, ::2, 0][:, :n]
    except (ValueError, TypeError):            # a layout the void view cannot take
        dst[...] = src[::2, ::2][:, :n]


def _wrap_help(lines: list[str], font, width: int) -> list[str]:
    """Help lines ("KEYS   what it does", the descriptions in one column) in lines of at most
    `width` pixels: a long description goes on under its own column."""
    starts = [len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines if "  " in line]
    col = max(set(starts), key=starts.count) if starts else 0  # where the descriptions start
    out = []
    for line in lines:
        if font.size(line)[0] <= width or len(line) <= col:
            out.append(line)
            continue
        cur, fresh = line[:col], True  # the keys, padded to the column; no description word yet
        for word in line[col:].split():
            trial = cur + ("" if fresh or cur.endswith(" ") else " ") + word
            if not fresh and font.size(trial)[0] > width:
                out.append(cur)
                cur, trial = " " * col, " " * col + word
            cur, fresh = trial, False
        out.append(cur)
    return out


def _compose_small(original: np.ndarray, tuned: np.ndarray, view: str, split: float,
                   crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """The view composed from the ``crop`` (y0, x0, h, w) of both frames, at its resolution
    (None: the whole frames).

    May return ``original`` / ``tuned`` (or a view of them) without copying.
    """
    _check_frames(original, tuned)
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    if crop is not None:
        y0, x0, ch, cw = crop
        o = original[y0:y0 + ch, x0:x0 + cw]
        t = tuned[y0:y0 + ch, x0:x0 + cw]
    else:
        o, t = original, tuned
    if view == "tuned":
        return t
    if view == "original":
        return o
    ch, cw = t.shape[:2]
    if view == "split":
        sx = _split_column(cw, split)
        out = t.copy()
        out[:, :sx] = o[:, :sx]
        return out
    if view == "side":
        out = np.zeros_like(t)
        half = cw // 2
        hh = (ch + 1) // 2                   # rows of [::2]
        top = (ch - hh) // 2
        _put_half(out[top:top + hh, :half], o)
        _put_half(out[top:top + hh, half:], t)
        return out
    return _diff(o, t)  # "diff"


def compose_view(original: np.ndarray, tuned: np.ndarray, view: str = "tuned", split: float = 0.5,
                 zoom: int = 1, center: tuple[float, float] = (0.5, 0.5), display=None) -> np.ndarray:
    """The image a view shows, uint8 (H, W, 3) at the native frame size.

    original, tuned: uint8 (H, W, 3) RGB frames of the same size.
    view:
      "tuned" / "original": that frame.
      "split": columns left of ``round(split * W)`` from original, the rest from tuned.
      "side":  original left, tuned right, each the frame downscaled 2x in both
               directions (``[::2, ::2]``), centred vertically between black bars.
      "diff":  ``min(4 * |tuned - original|, 255)``.
    zoom: 1, 2, 4 (any int >= 1): both frames are first cropped to
      :func:`crop_rect` (1/zoom of the frame around ``center``, clamped at the
      edges), the view is composed from the crops, and the result is upscaled
      with nearest neighbour (pixel-exact) back to H x W.  So in "split" the
      split column is ``round(split * crop_w)`` of the crop.
    display: None, or the screen's mapping of the frames' colour (player/tonemap.py, DisplayMap:
      HDR and wide-gamut video), applied to every view but the difference, which shows the codes'.
    No overlays (split line, labels): the window draws those.
    May return ``tuned`` or ``original`` itself (no copy) for those views at zoom 1.
    """
    zoom = int(zoom)
    if zoom < 1:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    h, w = tuned.shape[:2]
    small = _compose_small(original, tuned, view, split, crop_rect(h, w, zoom, center) if zoom > 1 else None)
    if display is not None and view != "diff":
        small = display(small)
    if zoom == 1:
        return small
    up = np.repeat(np.repeat(small, zoom, axis=0), zoom, axis=1)
    return np.ascontiguousarray(up[:h, :w])


# =========================================================================== key names

_MODIFIER_KEYS = {pygame.K_LSHIFT, pygame.K_RSHIFT, pygame.K_LCTRL, pygame.K_RCTRL,
                  pygame.K_LALT, pygame.K_RALT, pygame.K_LMETA, pygame.K_RMETA,
                  pygame.K_CAPSLOCK, pygame.K_NUMLOCK, pygame.K_MODE}
for _k in ("K_LGUI", "K_RGUI", "K_LSUPER", "K_RSUPER"):
    if hasattr(pygame, _k):
        _MODIFIER_KEYS.add(getattr(pygame, _k))

# pygame names "space" like the others; it stays lower-case ("space", as in mpv)
_NAME_ALIASES = {"space": "space"}


def key_name(key: int, mod: int = 0, unicode: str = "") -> str:
    """The :class:`Event` key name of a pygame KEYDOWN (key, mod, unicode); "" for
    keys that name nothing by themselves (shift, ctrl, ... alone)."""
    if key in _MODIFIER_KEYS:
        return ""
    ctrl = bool(mod & pygame.KMOD_CTRL)
    alt = bool(mod & pygame.KMOD_ALT)
    shift = bool(mod & pygame.KMOD_SHIFT)
    typed = unicode if (unicode and len(unicode) == 1 and unicode.isprintable()
                        and not unicode.isspace()) else ""
    if typed and not ctrl and not alt:
        return typed
    raw = pygame.key.name(key) if key else ""
    prefix = ("ctrl+" if ctrl else "") + ("alt+" if alt else "")
    if raw in _NAME_ALIASES:
        name = _NAME_ALIASES[raw]
    elif len(raw) == 1:
        name = raw.upper() if (shift and raw.isalpha()) else raw
        return prefix + name
    elif raw:
        name = raw.upper()
    elif typed:                               # a key pygame has no name for
        return prefix + typed
    else:
        return ""
    return prefix + ("shift+" if shift else "") + name


# =========================================================================== drawing helpers

_BG = (12, 12, 16)
_FG = (235, 235, 235)
_DIM = (160, 160, 170)
_ACCENT = (255, 205, 60)
_BAR = (110, 170, 255)
_BAR_SEL = (255, 205, 60)
_OVER = (255, 70, 70)
_PLAYED = (80, 150, 255)
_CACHE = (120, 200, 120)
_LOOP = (255, 205, 60)
_BADGE_COLOURS = (("REC", (190, 30, 30)), ("BYPASS", (200, 110, 0)), ("BUFFER", (110, 60, 170)),
                  ("PAUSE", (60, 60, 90)))
_FONT_NAMES = "dejavusansmono,notosansmono,liberationmono,ubuntumono,couriernew,monospace"


def fmt_time(t: float) -> str:
    """h:mm:ss.mmm — milliseconds, so a one-frame step shows in the position."""
    if t is None or not np.isfinite(t) or t < 0:
        t = 0.0
    m, s = divmod(round(float(t), 3), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:06.3f}" if h else f"{m}:{s:06.3f}"


class Window:
    """A pygame window on the main thread; see the module docstring.

    Call :meth:`poll` and :meth:`show` from the thread that created it.
    """

    panel_alpha = 165
    help_alpha = 232

    def __init__(self, width: int, height: int, title: str = "rcd-player", resizable: bool = True,
                 key_repeat: tuple[int, int] = (350, 40), sar: float = 1.0):
        self._closed = True
        self._frame_size = (max(1, int(width)), max(1, int(height)))
        self._sar = float(sar)  # pixel aspect: fitted to the window, an anamorphic frame is shown at its shape
        w, h = fit_size(self._shown_width(self._frame_size[0]), self._frame_size[1])
        try:
            pygame.display.init()
            pygame.font.init()
            flags = pygame.RESIZABLE if resizable else 0
            screen = pygame.display.set_mode((w, h), flags)
        except pygame.error as e:
            try:
                pygame.display.quit()
            except pygame.error:
                pass
            msg = str(e).strip().splitlines()[0] if str(e).strip() else "pygame.error"
            raise DisplayUnavailable(
                f"no display available to open the player window ({msg}); "
                f"run with --headless, or set DISPLAY to an X server") from None
        self._closed = False
        self._size = screen.get_size()
        pygame.display.set_caption(title)
        # Key repeat is made here, not by pygame.key.set_repeat: pygame repeats a key until its
        # release reaches the window, and a key that makes a new window (fullscreen) is released
        # in none — pygame went on toggling fullscreen every 40 ms. Here a new window forgets the
        # held keys. Repeats are marked, so the player can leave toggles unrepeated, as mpv does.
        self._repeat = (key_repeat[0] / 1000.0, key_repeat[1] / 1000.0) if key_repeat else None
        self._held: dict[int, list] = {}  # pygame key code → [name, time of its next repeat]
        self._switch_guard: dict[int, float] = {}  # key code → until when its presses are dropped (set_fullscreen)
        self._video_rect = pygame.Rect(letterbox_rect(self._shown_width(self._frame_size[0]), self._frame_size[1], *self._size))
        self._timeline = None            # (track Rect, band Rect) of the last drawn timeline
        self._frame_ref = None           # keeps the array behind the frombuffer surface alive
        self._mapped_bufs: list[np.ndarray | None] = []  # the display mapping's output (_mapped)
        self._fonts: dict[int, pygame.font.Font] = {}
        self._text: dict[tuple, pygame.Surface] = {}
        self._dark: pygame.Surface | None = None
        self._help_cache: tuple | None = None
        self._resizable = resizable
        self._windowed = (w, h)          # the size to go back to when fullscreen ends
        self.fullscreen = False
        self._last_press = (-1.0, (0, 0))  # time and place of the last left press on the picture
        self._halves: tuple | None = None  # side by side: the (left, right) image rects
        self._places: list[tuple] = []  # (screen Rect, frame x0, y0, frame pixels per screen pixel x, y) shown
        self._scrub: list | None = None  # dragging the playhead: [time of the last seek, fraction not sought yet]
        self.hud_rows = 0  # text lines of the last HUD panel drawn (tests)
        self.panel_rect = pygame.Rect(0, 0, 0, 0)  # the last HUD panel and badges drawn (tests)
        self.badge_rects: list[pygame.Rect] = []
        self.help_fits = True  # every line of the last help page could be read in full
        self.help_page, self.help_pages = 0, 1  # the help page shown, of how many (small windows page it)

    # ------------------------------------------------------------------ basics

    def _shown_width(self, fw: int) -> int:
        """A frame's width on screen at one screen pixel per frame line (its pixel aspect applied)."""
        return max(1, round(fw * self._sar))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the window."""
        if not self._closed:
            surf = pygame.display.get_surface()
            if surf is not None:
                self._size = surf.get_size()
        return self._size

    def set_fullscreen(self, on: bool) -> None:
        """Fill the screen (desktop resolution) or give the window back at the size it had.

        Through set_mode, which makes a new X window each way. SDL's own call on the same window
        (pygame._sdl2's Window.set_fullscreen) left pygame's display surface pointing at the
        freed one: the next blit corrupted the heap (a segfault within a second under Xvfb)."""
        if self._closed or bool(on) == self.fullscreen:
            return
        if on:
            self._windowed = self.size
            pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
        else:
            flags = pygame.RESIZABLE if self._resizable else 0
            if pygame.display.set_mode(self._windowed, flags).get_size() != self._windowed:
                pygame.display.set_mode(self._windowed, flags)  # SDL's dummy driver keeps the full size once
        # The keys held now were pressed in the old window and may be released in none (see
        # __init__). One still held makes a fresh press in the new window (X's autorepeat): held f
        # toggled fullscreen every half second. Their presses are dropped for SWITCH_GUARD_S,
        # released or not: SDL releases every key when the old window goes, so a release says nothing.
        until = time.monotonic() + SWITCH_GUARD_S
        self._switch_guard = {k: until for k in self._held}
        self._held.clear()
        self.fullscreen = bool(on)
        self._help_cache = None

    def close(self) -> None:
        """Close the window (pygame.display.quit()); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._frame_ref = None
        self._text.clear()
        self._fonts.clear()
        self._dark = None
        self._help_cache = None
        pygame.display.quit()

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def screenshot(self) -> np.ndarray:
        """What is on screen now: uint8 (H, W, 3) RGB of the window surface."""
        if self._closed:
            raise RuntimeError("window is closed")
        surf = pygame.display.get_surface()
        w, h = surf.get_size()
        return np.frombuffer(pygame.image.tobytes(surf, "RGB"), np.uint8).reshape(h, w, 3).copy()

    # ------------------------------------------------------------------ events

    def _fraction(self, pos) -> tuple[float, float]:
        r = self._video_rect
        if self._halves is not None and pos[0] >= self._halves[1].x:  # side by side: the same point in either half
            r = self._halves[1]
        fx = (pos[0] - r.x + 0.5) / max(1, r.w)
        fy = (pos[1] - r.y + 0.5) / max(1, r.h)
        return min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)

    def frame_point(self, pos) -> tuple[float, float]:
        """The frame's pixel coordinates at a screen position, as last shown; (-1, -1) off the picture."""
        for r, x0, y0, sx, sy in self._places:
            if r.collidepoint(pos):
                return x0 + (pos[0] - r.x + 0.5) * sx, y0 + (pos[1] - r.y + 0.5) * sy
        return -1.0, -1.0

    def _draw_probe(self, screen, probe: tuple[int, int, int]) -> None:
        """The probe's square, outlined where it is on the picture (light on a dark edge: seen on
        any content)."""
        x, y, size = probe
        for r, x0, y0, sx, sy in self._places:
            left, top = r.x + (x - size // 2 - x0) / sx, r.y + (y - size // 2 - y0) / sy
            box = pygame.Rect(round(left), round(top), max(3, round(size / sx)), max(3, round(size / sy)))
            if not box.colliderect(r):
                continue
            screen.set_clip(r)
            pygame.draw.rect(screen, (0, 0, 0), box.inflate(2, 2), 1)
            pygame.draw.rect(screen, _ACCENT, box, 1)
            screen.set_clip(None)

    def _along_timeline(self, pos) -> float:
        track = self._timeline[0] if self._timeline is not None else pygame.Rect(0, 0, max(1, self._size[0]), 1)
        return min(max((pos[0] - track.x) / max(1, track.w), 0.0), 1.0)

    def poll(self) -> list[Event]:
        """Pending pygame events as :class:`Event` s (see there), oldest first."""
        if self._closed:
            return []
        out: list[Event] = []
        motion_at = -1
        for e in pygame.event.get():
            t = e.type
            if t == pygame.QUIT:
                out.append(Event("quit"))
            elif t == pygame.KEYDOWN and time.monotonic() < self._switch_guard.get(e.key, 0.0):
                continue  # still held from before a fullscreen switch (set_fullscreen)
            elif t == pygame.KEYDOWN:
                name = key_name(e.key, getattr(e, "mod", 0), getattr(e, "unicode", ""))
                if name:
                    out.append(Event("key", name))
                    if self._repeat:
                        self._held[e.key] = [name, time.monotonic() + self._repeat[0]]
            elif t == pygame.KEYUP:
                self._held.pop(e.key, None)
            elif t == pygame.WINDOWFOCUSLOST:
                self._held.clear()  # input focus lost: the releases go elsewhere
            elif t == pygame.MOUSEMOTION and self._scrub is not None:  # dragging the playhead
                if getattr(e, "buttons", (0, 0, 0))[0]:
                    self._scrub[1] = self._along_timeline(e.pos)
                else:
                    self._scrub = None  # released where the window did not see it
            elif t == pygame.MOUSEBUTTONUP and e.button == 1 and self._scrub is not None:
                if self._scrub[1] is not None:  # where it was let go: always
                    out.append(Event("click", "timeline", x=self._scrub[1], y=0.5, button=1))
                self._scrub = None
            elif t == pygame.MOUSEMOTION:
                fx, fy = self._fraction(e.pos)
                held = getattr(e, "buttons", (0, 0, 0))
                button = next((i + 1 for i, b in enumerate(held) if b), 0)
                px_, py_ = self.frame_point(e.pos)
                ev = Event("mouse", x=fx, y=fy, button=button, frame_x=px_, frame_y=py_)
                if motion_at >= 0:
                    out[motion_at] = ev
                else:
                    motion_at = len(out)
                    out.append(ev)
            elif t == pygame.MOUSEBUTTONDOWN:
                if e.button not in (1, 2, 3):
                    continue                 # 4/5: the wheel, reported by MOUSEWHEEL
                tl = self._timeline
                if tl is not None and tl[1].collidepoint(e.pos):
                    out.append(Event("click", "timeline", x=self._along_timeline(e.pos), y=0.5, button=e.button))
                    if e.button == 1:  # held and moved, it drags the playhead (mpv's OSC)
                        self._scrub = [time.monotonic(), None]
                else:
                    fx, fy = self._fraction(e.pos)
                    px_, py_ = self.frame_point(e.pos)
                    out.append(Event("click", x=fx, y=fy, button=e.button, frame_x=px_, frame_y=py_))
                    if e.button == 1:
                        now, (t0, p0) = time.monotonic(), self._last_press
                        near = abs(e.pos[0] - p0[0]) <= DOUBLE_CLICK_PX and abs(e.pos[1] - p0[1]) <= DOUBLE_CLICK_PX
                        if now - t0 <= DOUBLE_CLICK_S and near:
                            out.append(Event("key", "MBTN_LEFT_DBL"))
                            now = -1.0           # a third press starts a new pair
                        self._last_press = (now, tuple(e.pos))
            elif t == pygame.MOUSEWHEEL:
                if e.y:
                    out.append(Event("key", "WHEEL_UP" if e.y > 0 else "WHEEL_DOWN"))
            elif t == pygame.VIDEORESIZE:
                self._size = (e.w, e.h)
                self._help_cache = None
                out.append(Event("resize", x=float(e.w), y=float(e.h)))
        now = time.monotonic()
        if self._scrub is not None and self._scrub[1] is not None and now - self._scrub[0] >= SCRUB_S:
            out.append(Event("click", "timeline", x=self._scrub[1], y=0.5, button=1))
            self._scrub = [now, None]
        for held in self._held.values():
            if now >= held[1]:  # one repeat per poll at most: a stalled loop does not get a burst
                out.append(Event("key", held[0], repeat=True))
                held[1] = max(held[1] + self._repeat[1], now)
        return out

    # ------------------------------------------------------------------ text

    def _font(self, px: int) -> pygame.font.Font:
        f = self._fonts.get(px)
        if f is None:
            try:
                f = pygame.font.SysFont(_FONT_NAMES, px)
            except Exception:  # noqa: BLE001 - no fontconfig etc.: pygame's own font
                f = pygame.font.Font(None, px + 4)
            self._fonts[px] = f
        return f

    def _render(self, text: str, px: int, colour=_FG) -> pygame.Surface:
        k = (text, px, colour)
        s = self._text.get(k)
        if s is None:
            if len(self._text) > 2048:
                self._text.clear()
            s = self._font(px).render(text, True, colour)
            self._text[k] = s
        return s

    def _fit(self, text: str, px: int, max_w: int, colour=_FG) -> pygame.Surface:
        """`text` rendered at `px`, cut with an ellipsis to at most `max_w` pixels (a narrow window)."""
        s = self._render(text, px, colour)
        if s.get_width() <= max_w or len(text) < 2:
            return s
        font = self._font(px)
        lo, hi = 0, len(text)  # the most characters that fit with the ellipsis
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if font.size(text[:mid] + "…")[0] <= max_w:
                lo = mid
            else:
                hi = mid - 1
        return self._render(text[:lo].rstrip() + "…", px, colour)

    def _darken(self, screen: pygame.Surface, rect: pygame.Rect, alpha: int | None = None) -> None:
        """Blend a dark rectangle over ``rect`` (a surface-alpha blit: cheap)."""
        sw, sh = screen.get_size()
        if self._dark is None or self._dark.get_size() != (sw, sh):
            self._dark = pygame.Surface((sw, sh)).convert()
            self._dark.fill(_BG)
        self._dark.set_alpha(self.panel_alpha if alpha is None else alpha)
        rect = rect.clip(screen.get_rect())
        if rect.w > 0 and rect.h > 0:
            screen.blit(self._dark, rect.topleft, pygame.Rect(0, 0, rect.w, rect.h))

    def _label(self, screen, text: str, x: int, y: int, px: int, anchor: str = "left") -> None:
        s = self._render(text, px)
        w, h = s.get_size()
        if anchor == "right":
            x -= w
        elif anchor == "center":
            x -= w // 2
        self._darken(screen, pygame.Rect(x - 3, y - 1, w + 6, h + 2))
        screen.blit(s, (x, y))

    # ------------------------------------------------------------------ show

    def show(self, original: np.ndarray, tuned: np.ndarray, view: str = "tuned", split: float = 0.5,
             zoom: int = 0, center: tuple[float, float] = (0.5, 0.5), hud: Hud | None = None,
             help_lines: list[str] | None = None, tuned_label: str = "tuned", display=None) -> None:
        """Draw one frame pair in ``view`` (see :func:`compose_view`, and its ``display``: only
        the pixels in the window are mapped), letterboxed into the window, then the HUD and the
        help page if given, and flip."""
        if self._closed:
            return
        ratio = max(0, int(zoom))  # screen pixels per frame pixel; 0: the frame fitted to the window
        fh, fw = tuned.shape[:2]
        screen = pygame.display.get_surface()
        ww, wh = screen.get_size()
        self._size = (ww, wh)
        self._frame_size = (fw, fh)
        self._halves = None
        if view == "side":  # each frame in its half of the window, at full resolution
            self._show_side(screen, original, tuned, ratio, center, display)
            self._overlays(screen, view, split, 1.0, fw, hud, help_lines, tuned_label)
            return
        if ratio == 0:
            crop = None
            x, y, dw, dh = letterbox_rect(self._shown_width(fw), fh, ww, wh)
        else:  # as many frame pixels as the window holds at this ratio, around the centre
            crop = crop_box(fh, fw, -(-wh // ratio), -(-ww // ratio), center)
            dw, dh = min(ww, crop[3] * ratio), min(wh, crop[2] * ratio)
            x, y = (ww - dw) // 2, (wh - dh) // 2
        small = _compose_small(original, tuned, view, split, crop)
        if display is not None and view != "diff":
            # shown smaller than it is: only the pixels shown, picked as they are mapped (nearest
            # neighbour, as the scaling below; the mapping is per pixel, so the same picture) — a
            # 4K frame mapped whole took 104 ms, in a 1600×900 window
            smaller = ratio == 0 and dw * dh < small.shape[0] * small.shape[1]
            small = display(small, out=self._mapped((dh, dw, 3) if smaller else small.shape),
                            size=(dw, dh) if smaller else None)
        elif not small.flags.c_contiguous:
            small = np.ascontiguousarray(small)
        sh, sw = small.shape[:2]
        self._video_rect = pygame.Rect(x, y, dw, dh)
        self._places = [(self._video_rect, 0, 0, fw / dw, fh / dh) if crop is None else
                        (self._video_rect, crop[1], crop[0], 1 / ratio, 1 / ratio)]

        # letterbox bars
        if dh < wh:
            screen.fill((0, 0, 0), (0, 0, ww, y))
            screen.fill((0, 0, 0), (0, y + dh, ww, wh - y - dh))
        if dw < ww:
            screen.fill((0, 0, 0), (0, y, x, dh))
            screen.fill((0, 0, 0), (x + dw, y, ww - x - dw, dh))

        self._frame_ref = small
        surf = pygame.image.frombuffer(small.data, (sw, sh), "RGB")
        tw, th = (dw, dh) if ratio == 0 else (sw * ratio, sh * ratio)  # nearest neighbour: pixels stay square
        if (tw, th) == (sw, sh):
            screen.blit(surf, (x, y))
        else:
            screen.blit(pygame.transform.scale(surf, (tw, th)), (x, y), pygame.Rect(0, 0, dw, dh))

        self._overlays(screen, view, split, tw / sw, sw, hud, help_lines, tuned_label)

    def _overlays(self, screen, view, split, scale, small_w, hud, help_lines, tuned_label) -> None:
        """The view's labels, the HUD and the help page; then flip."""
        px = max(12, min(20, screen.get_height() // 45))
        self._view_overlay(screen, self._video_rect, view, split, scale, small_w, px,
                           hud is not None and hud.timeline, tuned_label)
        self._timeline = None
        if hud is not None and hud.probe is not None:
            self._draw_probe(screen, hud.probe)
        if hud is not None:
            self._draw_hud(screen, hud, px)
        if help_lines is not None:
            self._draw_help(screen, help_lines, px)
        else:
            self.help_page = 0  # opened again, it starts at its first page
        pygame.display.flip()

    def _mapped(self, shape: tuple[int, ...], i: int = 0) -> np.ndarray:
        """A buffer for the display's mapping of a view (two for side by side), kept from frame to
        frame (a fresh 720p one a frame cost its page faults: more than the mapping's arithmetic)."""
        bufs = self._mapped_bufs
        bufs += [None] * (i + 1 - len(bufs))
        if bufs[i] is None or bufs[i].shape != shape:
            bufs[i] = np.empty(shape, np.uint8)
        return bufs[i]

    def _show_side(self, screen, original: np.ndarray, tuned: np.ndarray, ratio: int,
                   center: tuple[float, float], display=None) -> None:
        """Side by side: original in the left half of the window, tuned in the right, each at
        `ratio` screen pixels per frame pixel around `center` (0: fitted to its half). It was one
        frame-size image of two halves at half resolution: half the noise, in the view for it."""
        ww, wh = screen.get_size()
        fh, fw = tuned.shape[:2]
        half = ww // 2
        if ratio == 0:
            y0, x0, ch, cw = 0, 0, fh, fw
            _, _, tw, th = letterbox_rect(self._shown_width(fw), fh, half, wh)
        else:
            y0, x0, ch, cw = crop_box(fh, fw, -(-wh // ratio), -(-half // ratio), center)
            tw, th = cw * ratio, ch * ratio
        dw, dh = min(half, tw), min(wh, th)
        screen.fill((0, 0, 0))
        refs, rects = [], []
        for i, img in enumerate((original, tuned)):
            part = img[y0:y0 + ch, x0:x0 + cw]
            part = np.ascontiguousarray(part) if display is None else display(part, out=self._mapped(part.shape, i))
            refs.append(part)
            surf = pygame.image.frombuffer(part.data, (cw, ch), "RGB")
            if (tw, th) != (cw, ch):
                surf = pygame.transform.scale(surf, (tw, th))
            r = pygame.Rect(i * half + (half - dw) // 2, (wh - dh) // 2, dw, dh)
            screen.blit(surf, r.topleft, pygame.Rect(0, 0, dw, dh))
            rects.append(r)
        self._places = [(r, x0, y0, cw / tw, ch / th) for r in rects]
        self._frame_ref = refs
        self._halves = tuple(rects)
        self._video_rect = rects[0]

    # ------------------------------------------------------------------ overlays

    def _view_overlay(self, screen, vr: pygame.Rect, view: str, split: float, scale: float,
                      small_w: int, px: int, has_hud: bool, tuned_label: str = "tuned") -> None:
        lh = self._font(px).get_linesize()
        bottom = min(vr.bottom, screen.get_height() - (self._timeline_height(px) if has_hud else 0))
        label_y = bottom - lh - 6
        if view == "split":
            sx = _split_column(small_w, split)
            lx = vr.x + round(sx * scale)
            lx = min(max(lx, vr.x), vr.right - 1)
            screen.fill((255, 255, 255), (lx, vr.y, 1, vr.h))
            self._label(screen, "original", lx - 6, label_y, px, "right")
            self._label(screen, tuned_label, lx + 7, label_y, px, "left")
        elif view == "side" and self._halves is not None:
            for r, text in zip(self._halves, ("original", tuned_label)):
                self._label(screen, text, r.centerx, min(r.bottom + 4, label_y), px, "center")
        elif view == "diff":
            self._label(screen, f"|tuned \u2212 original| \u00d7{DIFF_GAIN}", vr.x + 8, label_y, px)
        elif view == "original":
            self._label(screen, "original", vr.x + 8, label_y, px)

    def _timeline_height(self, px: int) -> int:
        return self._font(px).get_linesize() + 12

    def _draw_hud(self, screen, hud: Hud, px: int) -> None:
        ww, wh = screen.get_size()
        font = self._font(px)
        lh = font.get_linesize()
        pad = 8

        # ---- panel: lines + bars
        rows = list(hud.lines)
        if hud.details and (len(rows) + len(hud.details) + len(hud.bars)) * lh + 2 * pad <= HUD_MAX_SHARE * wh:
            rows += hud.details
        # In a window too small for all of it, the panel keeps clear of the timeline: the level
        # bars go first, then the last lines (at 200×150 it ran over the timeline).
        floor = wh - (self._timeline_height(px) if hud.timeline else 0)  # the timeline's top
        free_rows = max(0, (floor - 2 * pad) // lh)
        bars = list(hud.bars) if len(rows) + len(hud.bars) <= free_rows else []
        rows = rows[:free_rows]
        lines = [self._fit(str(s), px, ww - 2 * pad - 12) for s in rows]
        self.hud_rows = len(lines)  # what was drawn (tests)
        bar_rows = []
        label_w = 0
        for label, value, vmax, selected in bars:
            ls = self._render(("\u25b6 " if selected else "  ") + str(label), px,
                              _ACCENT if selected else _FG)
            label_w = max(label_w, ls.get_width())
            bar_rows.append((ls, float(value), float(vmax), bool(selected)))
        track_w = max(80, min(200, ww // 8))
        val_w = font.size("+00.000")[0]
        width = max([s.get_width() for s in lines] + [0])
        if bar_rows:
            width = max(width, label_w + 8 + track_w + 8 + val_w)
        height = len(lines) * lh + len(bar_rows) * lh
        if width and height:
            self._darken(screen, pygame.Rect(pad - 6, pad - 4, width + 12, height + 8))
            yy = pad
            for s in lines:
                screen.blit(s, (pad, yy))
                yy += lh
            tx = pad + label_w + 8
            for ls, value, vmax, selected in bar_rows:
                screen.blit(ls, (pad, yy))
                cy = yy + lh // 2
                bh = max(4, lh // 2)
                screen.fill((55, 55, 62), (tx, cy - bh // 2, track_w, bh))
                zero = tx + track_w // 2
                scale = vmax if vmax > 0 else 1.0
                frac = value / scale if np.isfinite(value) else 0.0
                over = abs(frac) > 1.0
                frac = min(max(frac, -1.0), 1.0)
                n = int(round(frac * (track_w // 2)))
                col = _BAR_SEL if selected else _BAR
                if n > 0:
                    screen.fill(col, (zero, cy - bh // 2, n, bh))
                elif n < 0:
                    screen.fill(col, (zero + n, cy - bh // 2, -n, bh))
                if over:
                    ex = zero + n - 2 if n > 0 else zero + n
                    screen.fill(_OVER, (ex, cy - bh // 2 - 2, 2, bh + 4))
                screen.fill((220, 220, 220), (zero, cy - bh // 2 - 2, 1, bh + 4))
                if selected:
                    pygame.draw.rect(screen, _ACCENT, (tx - 1, cy - bh // 2 - 1, track_w + 2, bh + 2), 1)
                screen.blit(self._render(f"{value:+.3f}", px, _ACCENT if selected else _DIM),
                            (tx + track_w + 8, yy))
                yy += lh

        panel_bottom = pad - 4 + height + 8 if (width and height) else 0
        panel_right = pad - 6 + width + 12 if (width and height) else 0
        self.panel_rect = pygame.Rect(pad - 6, pad - 4, panel_right - (pad - 6), panel_bottom - (pad - 4))

        # ---- badges, top-right, in rows read left to right and set flush right: beside the panel
        # where there is room, else below it (stacked one per row, they ran into the timeline in
        # small windows)
        words = [str(b) for b in hud.badges if str(b)]
        rendered = [self._render(word, px) for word in words]
        step = max((r.get_height() for r in rendered), default=0) + 12  # a badge's height and the gap

        def room(y: int) -> int:  # the width free for badges in a row at y
            return ww - pad - (panel_right + 6 if y < panel_bottom else pad)

        rows: list[tuple[int, list]] = []  # (y, [(word, rendered)])
        used = 0
        for word, r in zip(words, rendered):
            w = r.get_width() + 10
            if rows and used + 6 + w <= room(rows[-1][0]):
                rows[-1][1].append((word, r))
                used += 6 + w
                continue
            y = rows[-1][0] + step if rows else pad
            if w > room(y) and y < panel_bottom:
                y = panel_bottom + 4  # not even one beside the panel: below it
            rows.append((y, [(word, r)]))
            used = w
        badges_bottom, bx = 0, ww
        self.badge_rects = []
        for by, items in rows:
            if by + step - 8 > floor:
                break  # rows that would run into the timeline are left out (a very small window)
            x = ww - pad - (sum(r.get_width() + 10 for _, r in items) + 6 * (len(items) - 1))
            bx = min(bx, x)
            for word, r in items:
                w, h = r.get_size()
                colour = next((c for k, c in _BADGE_COLOURS if word.upper().startswith(k)), None)
                box = pygame.Rect(x, by - 2, w + 10, h + 4)
                if colour is None:
                    self._darken(screen, box)
                else:
                    screen.fill(colour, box)
                screen.blit(r, (x + 5, by))
                badges_bottom = box.bottom
                self.badge_rects.append(box)
                x += w + 16

        # ---- transient message
        if hud.message:
            mpx = px + px // 2
            while mpx > px and self._font(mpx).size(str(hud.message))[0] > ww - 24:
                mpx -= 1  # a long message: smaller first, then cut
            ms = self._fit(str(hud.message), mpx, ww - 24)
            mw, mh = ms.get_size()
            mx = (ww - mw) // 2
            my = pad + lh + 12
            if mx - 10 < panel_right and my < panel_bottom:
                my = panel_bottom + 8          # keep clear of the panel
            if words and mx + mw + 10 > bx and my < badges_bottom:
                my = badges_bottom + 8         # and of the badges
            covers = my + mh + 8 > floor
            if covers:
                my = pad  # no room between them and the timeline: over the panel, for the message's time
            self._darken(screen, pygame.Rect(mx - 10, my - 4, mw + 20, mh + 8), self.help_alpha if covers else None)
            screen.blit(ms, (mx, my))

        # ---- timeline
        if hud.timeline:
            self._draw_timeline(screen, hud, px)

    def _draw_timeline(self, screen, hud: Hud, px: int) -> None:
        ww, wh = screen.get_size()
        th = self._timeline_height(px)
        band = pygame.Rect(0, wh - th, ww, th)
        self._darken(screen, band)
        pos = float(hud.position or 0.0)
        dur = float(hud.duration or 0.0)
        text = fmt_time(pos) + (f" #{hud.frame}" if hud.frame is not None else "")
        text += f" / {fmt_time(dur)}" if dur > 0 else ""
        ts = self._render(text, px)
        lh = self._font(px).get_linesize()
        ty = band.y + (th - lh) // 2
        screen.blit(ts, (8, ty))
        tx0 = 8 + self._font(px).size("0:00:00.000 #000000 / 0:00:00.000")[0] + 12
        track = pygame.Rect(tx0, band.y + th // 2 - 4, max(10, ww - tx0 - 12), 6)
        self._timeline = (track, band)
        screen.fill((70, 70, 78), track)
        ends = [pos] + [float(e) for _, e in hud.cache] + [float(v) for v in hud.loop if v is not None]
        span = dur if dur > 0 else max(ends + [0.0])
        if span <= 0:
            return

        def xat(t: float) -> int:
            return track.x + int(round(min(max(t / span, 0.0), 1.0) * (track.w - 1)))

        # played
        px_pos = xat(pos)
        if px_pos > track.x:
            screen.fill(_PLAYED, (track.x, track.y, px_pos - track.x, track.h))
        # cache ranges: thin bar just under the track
        cy = track.bottom + 2
        for a, b in hud.cache:
            xa, xb = xat(float(a)), xat(float(b))
            if xb >= xa:
                screen.fill(_CACHE, (xa, cy, max(1, xb - xa), 3))
        # A-B loop
        a, b = hud.loop
        if a is not None and b is not None:
            xa, xb = sorted((xat(float(a)), xat(float(b))))
            screen.fill(_LOOP, (xa, track.y - 3, max(1, xb - xa), 2))
        for v in (a, b):
            if v is not None:
                screen.fill(_LOOP, (xat(float(v)), track.y - 5, 2, track.h + 10))
        # playhead
        screen.fill((255, 255, 255), (px_pos - 1, track.y - 4, 3, track.h + 8))

    def next_help_page(self) -> bool:
        """Turn to the help page after the one shown; False (and back to the first) after the last."""
        self.help_page += 1
        if self.help_page < self.help_pages:
            return True
        self.help_page = 0
        return False

    def _draw_help(self, screen, help_lines: list[str], px: int) -> None:
        ww, wh = screen.get_size()
        key = (tuple(str(s) for s in help_lines), ww, wh, px, self.help_page)
        if self._help_cache is None or self._help_cache[0] != key:
            page = pygame.Surface((ww, wh)).convert()
            page.fill(_BG)
            lines = list(key[0])
            margin = 24 if min(ww, wh) >= 480 else 8
            # The largest font (up to the HUD's) at which the page fits in one column, else in two:
            # at a fixed size the page was cut off in windows of 800 px and less.
            for size in range(px, HELP_MIN_PX - 1, -1):
                font = self._font(size)
                lh = font.get_linesize()
                rows = max(1, (wh - 2 * margin) // lh)
                widest = max(font.size(line)[0] for line in lines) + 12
                ncol = next((n for n in (1, 2) if rows * n >= len(lines) and widest <= (ww - 2 * margin) // n), 0)
                if ncol:
                    break
            footer = None
            if not ncol:  # more lines than the window holds: pages (`?` turns them), at the largest
                # font whose lines fit a column, as mpv's console pages its list
                size = next((z for z in range(px, HELP_MIN_PX - 1, -1)
                             if max(self._font(z).size(line)[0] for line in lines) + 12 <= ww - 2 * margin), None)
                font = self._font(size or HELP_MIN_PX)
                lh = font.get_linesize()
                rows = max(1, (wh - 2 * margin) // lh - 1)  # the last row: which page, and how to turn it
                if size is None:
                    # not even the smallest font holds the longest lines (320 px): they wrap, cut they
                    # lost their last words
                    lines = _wrap_help(lines, font, ww - 2 * margin - 12)
                widest = max(font.size(line)[0] for line in lines) + 12
                ncol = 2 if widest <= (ww - 2 * margin) // 2 else 1
                per_page = rows * ncol
                self.help_pages = -(-len(lines) // per_page)
                self.help_page %= self.help_pages
                lines = lines[self.help_page * per_page:(self.help_page + 1) * per_page]
                last = self.help_page + 1 == self.help_pages
                footer = f"page {self.help_page + 1}/{self.help_pages}: ? {'closes' if last else 'for the next'}"
            else:
                self.help_pages, self.help_page = 1, 0
            self.help_fits = widest <= ww - 2 * margin  # every line can be read in full, on some page
            per_col = -(-len(lines) // ncol)
            col_w = (ww - 2 * margin) // ncol
            for i, line in enumerate(lines):
                c, r = divmod(i, per_col)
                s = font.render(line, True, _FG)
                if s.get_width() > col_w - 12:
                    s = s.subsurface((0, 0, max(1, col_w - 12), s.get_height()))
                page.blit(s, (margin + c * col_w, margin + r * lh))
            if footer:
                page.blit(font.render(footer, True, _FG), (margin, margin + rows * lh))
            page.set_alpha(self.help_alpha)
            self._help_cache = (key, page)
        screen.blit(self._help_cache[1], (0, 0))


class NullWindow:
    """The :class:`Window` API without a display (headless runs, tests).

    ``show()`` composes the view with :func:`compose_view` (native frame size,
    no HUD; its ``display`` mapping applied when ``.last`` is read) into ``.last`` and counts ``.frames_shown``; ``screenshot()``
    returns ``.last``; ``poll()`` returns [].  The last HUD and help lines are
    kept in ``.last_hud`` / ``.last_help`` for inspection.
    """

    def __init__(self, width: int, height: int, title: str = "rcd-player", resizable: bool = True,
                 **_ignored):
        self._size = fit_size(width, height)
        self.title = title
        self.frames_shown = 0
        self._last: tuple[np.ndarray, object] | None = None  # (the view composed, its display mapping or None)
        self.last_hud: Hud | None = None
        self.last_help: list[str] | None = None
        self.closed = False
        self.fullscreen = False
        self.help_page = 0  # no pages: the help lines are kept whole in last_help

    def set_fullscreen(self, on: bool) -> None:
        self.fullscreen = bool(on)  # nothing to fill: kept so the player's state reads the same

    def next_help_page(self) -> bool:
        return False

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def poll(self) -> list[Event]:
        return []

    def show(self, original: np.ndarray, tuned: np.ndarray, view: str = "tuned", split: float = 0.5,
             zoom: int = 0, center: tuple[float, float] = (0.5, 0.5), hud: Hud | None = None,
             help_lines: list[str] | None = None, tuned_label: str = "tuned", display=None) -> None:
        # its screen is the frame's own size: a ratio is the crop factor there (0, fit: the frame)
        img = compose_view(original, tuned, view, split, max(1, int(zoom)), center)
        if img is original or img is tuned:
            img = img.copy()                   # the caller may reuse its frame buffers
        # The display mapping (HDR video) waits until the picture is asked for: headless runs,
        # benchmarks among them, do not pay 7 ms a 720p frame for a picture nobody sees.
        self._last = img, (display if view != "diff" else None)
        self.last_hud = hud
        self.last_help = help_lines
        self.frames_shown += 1

    @property
    def last(self) -> np.ndarray | None:
        """The view last shown, as the screen would show it (mapped, for HDR video)."""
        if self._last is None:
            return None
        img, display = self._last
        if display is not None:
            img = display(img)
            self._last = img, None
        return img

    def screenshot(self) -> np.ndarray:
        if self.last is None:
            w, h = self._size
            return np.zeros((h, w, 3), np.uint8)
        return self.last

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "NullWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
