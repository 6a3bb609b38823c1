"""The tuning and view properties, as an immutable snapshot, and the commands that change them.

Owns `Controls` (what the compositor and the display read: the mix, bypass, view, zoom, HUD…)
and `apply(controls, command, ctx)` for the property commands — pure functions, no threads. A
command is a string: "add strength 2", "set view split", "cycle bypass". Playback commands
(seek, pause, loop, presets, screenshots, recording, quit) belong to the player.

Property table (name: type, range):
  strength   float 0..60 (removed-noise std, 8-bit units; "auto" = AutoTune)
  character  float −1..1
  coeff.N    float −1..2 (expert coefficient of the N-th adjustable level; switches to expert mode)
  level      int 1..L' (the adjustable level that + / − adjust: the levels above 0 in order; a
             level-0 map is all zero, so its coefficient changes nothing)
  luma       float 0..2 (gain on the luma part of the removed noise)
  chroma     float 0..2 (gain on the chroma part)
  bypass     bool (show the original)
  view       tuned | original | split | side | diff
  split      float 0..1 (split-wipe position)
  zoom       fit (0) | 1 | 2 | 4 | 8: screen pixels per frame pixel;  center  "x,y" fractions
  hud, help  bool
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from engine import compose
from engine.compose import Mix

VIEWS = ("tuned", "original", "split", "side", "diff")
ZOOMS = (0, 1, 2, 4, 8)  # 0: the frame fitted to the window; else screen pixels per frame pixel
COEFF_RANGE = (-1.0, 2.0)
GAIN_RANGE = (0.0, 2.0)
# Commands that change what the blend produces: their latency to the screen is measured.
BLEND_PROPERTIES = {"strength", "character", "coeff", "luma", "chroma", "bypass", "autotune"}


class CommandError(Exception):
    """A malformed or unknown command; one line."""


@dataclass(frozen=True)
class Controls:
    mix: Mix = field(default_factory=Mix)
    bypass: bool = False
    view: str = "tuned"
    split: float = 0.5
    zoom: int = 0  # ZOOMS: 0 fits the frame to the window
    center: tuple[float, float] = (0.5, 0.5)
    level: int = 1  # selected adjustable level, 1-based (adjustable_levels)
    hud: bool = True
    help: bool = False
    serial: int = 0  # increases on every change that alters the blend
    changed_at: float = 0.0  # time.monotonic() of that change


@dataclass
class Context:
    """What a command may need to know about the frame on screen."""

    levels: tuple[float, ...]
    auto: torch.Tensor | None = None  # AutoTune coefficients of the current frame


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


def parse_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise CommandError(f"not a number: {s!r}") from None
    if not np.isfinite(v):
        raise CommandError(f"not a finite number: {s!r}")
    return v


def parse_bool(s: str) -> bool:
    if s in ("yes", "on", "true", "1"):
        return True
    if s in ("no", "off", "false", "0"):
        return False
    raise CommandError(f"not yes/no: {s!r}")


def property_args(verb: str, args: list[str]) -> tuple[str, str | None]:
    """(name, value) of a property command: "cycle NAME" takes no value, "set|add|multiply NAME
    VALUE" exactly one — a mistyped "set speed 2 3" said nothing and set 2."""
    if not args:
        raise CommandError(f"{verb}: needs a property name")
    name, rest = args[0], args[1:]
    if verb == "cycle" and rest:
        raise CommandError(f"cycle {name}: takes no value, got {' '.join(rest)!r}")
    if verb != "cycle" and len(rest) != 1:
        raise CommandError(f"{verb} {name}: needs a value" if not rest else
                           f"{verb} {name}: takes one value, got {' '.join(rest)!r}")
    return name, rest[0] if rest else None


def current_coeffs(mix: Mix, ctx: Context) -> torch.Tensor:
    auto = ctx.auto if ctx.auto is not None else torch.full((len(ctx.levels),), 1.0 / len(ctx.levels), dtype=torch.float64)
    c, _ = compose.coefficients(mix.with_(luma=1.0, chroma=1.0), ctx.levels, auto)
    return c


def current_strength(mix: Mix, ctx: Context) -> float:
    if mix.strength is not None and mix.coeffs is None:
        return float(mix.strength)
    return compose.strength_of(current_coeffs(mix, ctx), ctx.levels)


def with_mix(c: Controls, mix: Mix, blend: bool = True) -> Controls:
    if not blend:
        return replace(c, mix=mix)
    return replace(c, mix=mix, serial=c.serial + 1, changed_at=time.monotonic())


def apply(c: Controls, command: str, ctx: Context) -> Controls:
    """Apply one property command; returns the new snapshot (the old one is untouched)."""
    parts = command.split()
    if not parts:
        raise CommandError("empty command")
    verb, args = parts[0], parts[1:]
    mix = c.mix
    if verb == "autotune":  # the reset point: AutoTune's coefficients, luma and chroma gains ×1
        if args:
            raise CommandError(f"autotune: takes no arguments, got {' '.join(args)!r}")
        return with_mix(c, Mix())
    if verb not in ("set", "add", "cycle") or not args:
        raise CommandError(f"unknown command: {command!r}")
    name, value = property_args(verb, args)

    if name == "strength":
        if verb == "set" and value == "auto":
            return with_mix(c, Mix(luma=mix.luma, chroma=mix.chroma))
        base = current_strength(mix, ctx)
        s = parse_float(value) if verb == "set" else base + parse_float(value)
        character = mix.character if mix.strength is not None else 0.0
        return with_mix(c, mix.with_(strength=_clamp(s, 0.0, compose.STRENGTH_MAX), character=character, coeffs=None))
    if name == "character":
        s = current_strength(mix, ctx)
        ch = parse_float(value) if verb == "set" else mix.character + parse_float(value)
        return with_mix(c, mix.with_(strength=s, character=_clamp(ch, -1.0, 1.0), coeffs=None))
    if name.startswith("coeff"):
        n = c.level if name == "coeff" else _level_number(name.split(".", 1)[1], ctx)
        idx = level_index(n, ctx.levels)
        coeffs = current_coeffs(mix, ctx).tolist()
        v = parse_float(value) if verb == "set" else coeffs[idx] + parse_float(value)
        coeffs[idx] = _clamp(v, *COEFF_RANGE)
        return with_mix(c, mix.with_(coeffs=tuple(coeffs)))
    if name in ("luma", "chroma"):
        v = parse_float(value) if verb == "set" else getattr(mix, name) + parse_float(value)
        return with_mix(c, mix.with_(**{name: round(_clamp(v, *GAIN_RANGE), 4)}))
    if name == "level":
        n = len(adjustable_levels(ctx.levels))
        lv = (c.level % n) + 1 if verb == "cycle" else _level_number(value, ctx) if verb == "set" else int(_clamp(c.level + int(parse_float(value)), 1, n))
        return replace(c, level=lv)
    if name == "bypass":
        b = (not c.bypass) if verb == "cycle" else parse_bool(value)
        return replace(c, bypass=b, serial=c.serial + 1, changed_at=time.monotonic())
    if name == "view":
        if verb == "cycle":
            return replace(c, view=VIEWS[(VIEWS.index(c.view) + 1) % len(VIEWS)])
        if value not in VIEWS:
            raise CommandError(f"view must be one of {', '.join(VIEWS)}")
        return replace(c, view=value)
    if name == "split":
        v = parse_float(value) if verb == "set" else c.split + parse_float(value)
        return replace(c, split=_clamp(v, 0.0, 1.0))
    if name == "zoom":
        if verb == "cycle":
            return replace(c, zoom=ZOOMS[(ZOOMS.index(c.zoom) + 1) % len(ZOOMS)])
        z = 0 if value == "fit" else int(parse_float(value))
        if z not in ZOOMS:
            raise CommandError(f"zoom must be fit or one of {', '.join(str(z) for z in ZOOMS[1:])} (screen pixels per frame pixel)")
        return replace(c, zoom=z)
    if name == "center":
        try:
            x, y = (float(v) for v in value.split(","))
        except ValueError:
            raise CommandError("center needs x,y fractions, e.g. 0.5,0.5") from None
        return replace(c, center=(_clamp(x, 0.0, 1.0), _clamp(y, 0.0, 1.0)))
    if name in ("hud", "help"):
        v = (not getattr(c, name)) if verb == "cycle" else parse_bool(value)
        return replace(c, **{name: v})
    raise CommandError(f"unknown property: {name!r}")


def adjustable_levels(levels) -> list[int]:
    """0-based indices of the levels a user can adjust: those above 0, in order. (A level-0 map is
    all zero, as in the authors' model: AutoTune's weight on it scales the others down, and a
    coefficient on it changes nothing.)"""
    return [i for i, v in enumerate(levels) if v > 0]


def level_index(n: int, levels) -> int:
    """The 0-based index among all levels of adjustable level n (1-based)."""
    return adjustable_levels(levels)[n - 1]


def _level_number(s: str, ctx: Context) -> int:
    adj = adjustable_levels(ctx.levels)
    what = f"level must be 1..{len(adj)} (the maps of σ {', '.join(f'{ctx.levels[i]:g}' for i in adj)})"
    try:
        i = int(s)
    except ValueError:
        raise CommandError(f"{what}, got {s!r}") from None
    if not 1 <= i <= len(adj):
        raise CommandError(f"{what}, got {i}")
    return i


PRESET_DECIMALS = 4  # preset files as people read and edit them (tuning tracks keep every digit)


def mix_to_json(mix: Mix, decimals: int | None = None) -> dict:
    """A mix as JSON; `decimals` rounds its numbers (None: exact, as a re-render needs)."""
    r = (lambda v: float(v)) if decimals is None else (lambda v: round(float(v), decimals))  # noqa: E731
    return {"strength": None if mix.strength is None else r(mix.strength), "character": r(mix.character),
            "coeffs": [r(v) for v in mix.coeffs] if mix.coeffs is not None else None,
            "luma": r(mix.luma), "chroma": r(mix.chroma)}


MIX_KEYS = ("strength", "character", "coeffs", "luma", "chroma")  # a preset's settings, as mix_to_json writes them


def mix_from_json(d: dict) -> Mix:
    """A mix from JSON (a preset or a track), every value checked against the range its command
    allows: a NaN or 1e309 strength used to render every pixel white."""
    if not isinstance(d, dict):
        raise CommandError(f"invalid preset: expected an object like {{\"strength\": 12}}, got {type(d).__name__}")
    unknown = [k for k in d if k not in MIX_KEYS]
    if unknown or not d:  # a misspelt key ("strenght") loaded as AutoTune without a word
        raise CommandError(f"invalid preset: {f'unknown key {unknown[0]!r}' if unknown else 'no settings'} "
                           f"(keys: {', '.join(MIX_KEYS)}; or presets A and B of them)")

    coeffs = d.get("coeffs")
    if coeffs is not None and not isinstance(coeffs, list):
        raise CommandError(f"invalid preset: coeffs must be a list of numbers, got {coeffs!r}")
    strength = d.get("strength")
    return Mix(strength=None if strength is None else _checked(strength, "strength", 0.0, compose.STRENGTH_MAX),
               character=_checked(d.get("character", 0.0), "character", -1.0, 1.0),
               coeffs=None if coeffs is None else tuple(_checked(v, "coeffs", *COEFF_RANGE) for v in coeffs),
               luma=_checked(d.get("luma", 1.0), "luma", *GAIN_RANGE),
               chroma=_checked(d.get("chroma", 1.0), "chroma", *GAIN_RANGE))


def _checked(v, key: str, lo: float, hi: float) -> float:
    """A JSON number within lo..hi (finite), else a one-line CommandError naming the key."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise CommandError(f"invalid preset: {key} must be a number in {lo:g}..{hi:g}, got {v!r}")
    return float(v)


def read_json(path, what: str, error: type[Exception]):
    """Parse a JSON file, or raise `error` with one line naming the file and what is wrong."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (expected JSON)") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def read_presets(path: str) -> dict[str, Mix]:
    """A preset file: {"A": mix, "B": mix} (as preset-save writes) or a single mix → {"A": mix}."""
    data = read_json(path, "preset file", CommandError)
    try:
        if isinstance(data, dict) and ("A" in data or "B" in data):
            other = [k for k in data if k not in ("A", "B")]
            if other:
                raise CommandError(f"invalid preset file: unknown preset {other[0]!r} (presets are A and B)")
            return {k: mix_from_json(v) for k, v in data.items()}
        return {"A": mix_from_json(data)}
    except CommandError as e:
        raise CommandError(f"{path}: {e}") from None
