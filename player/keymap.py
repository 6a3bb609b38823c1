"""Key bindings as data: key name → command string (mpv's input.conf idea).

Keys follow mpv where mpv has a binding (space pause, arrows seek, shift+arrows 1 s, `,` `.` frame
step, `l` A-B loop, `s` screenshot, `i` stats/HUD, `f` and double click fullscreen, ESC leaves it,
`m` mute, `/` `*` volume, `{` `}` speed, `q` quit); the denoise controls take the free keys (mpv's
UP/DOWN, `[` `]`, BACKSPACE and `9` `0` among them, so normal speed is shift+BACKSPACE). The README's table and the on-screen help page are generated from
this one table.
"""

from __future__ import annotations

# (key, command, description). Order = order in the help page.
BINDINGS: list[tuple[str, str, str]] = [
    ("space", "cycle pause", "pause / play"),
    ("p", "cycle pause", "pause / play"),
    ("LEFT", "seek -5", "seek back 5 s"),
    ("RIGHT", "seek 5", "seek forward 5 s"),
    ("shift+LEFT", "seek -1", "seek back 1 s"),
    ("shift+RIGHT", "seek 1", "seek forward 1 s"),
    (",", "frame-back-step", "step one frame back (pauses)"),
    (".", "frame-step", "step one frame forward (pauses)"),
    ("l", "ab-loop", "A-B loop: set A, set B, clear"),
    ("L", "ab-loop-clear", "clear the A-B loop"),
    ("UP", "add strength 1", "strength +1 (removed-noise σ)"),
    ("DOWN", "add strength -1", "strength −1"),
    ("PAGE UP", "add strength 5", "strength +5"),
    ("PAGE DOWN", "add strength -5", "strength −5"),
    ("]", "add character 0.1", "character → smoother (heavier levels)"),
    ("[", "add character -0.1", "character → keep texture (lighter levels)"),
    ("1", "set level 1", "select the 1st level above 0 (2…9, 0 likewise)"),
    ("2", "set level 2", ""),
    ("3", "set level 3", ""),
    ("4", "set level 4", ""),
    ("5", "set level 5", ""),
    ("6", "set level 6", ""),
    ("7", "set level 7", ""),
    ("8", "set level 8", ""),
    ("9", "set level 9", ""),
    ("0", "set level 10", ""),  # L ≤ 12 levels: a model may have 10 above 0
    ("+", "add coeff 0.05", "raise the selected level's coefficient"),
    ("=", "add coeff 0.05", "raise the selected level's coefficient"),
    ("-", "add coeff -0.05", "lower the selected level's coefficient"),
    ("Y", "add luma 0.1", "luma strength +10 %"),
    ("y", "add luma -0.1", "luma strength −10 %"),
    ("C", "add chroma 0.1", "chroma strength +10 %"),
    ("c", "add chroma -0.1", "chroma strength −10 %"),
    ("r", "autotune", "reset to AutoTune (luma, chroma ×1)"),
    ("BACKSPACE", "autotune", "reset to AutoTune (luma, chroma ×1)"),
    ("b", "cycle bypass", "bypass: original ⇄ tuned"),
    ("v", "cycle view", "view: tuned, original, split, side by side, difference"),
    ("ctrl+a", "preset-store A", "store the current settings as preset A"),
    ("ctrl+b", "preset-store B", "store the current settings as preset B"),
    ("TAB", "preset-flip", "flip presets A ⇄ B (edits stay with the preset)"),
    ("ctrl+s", "preset-save", "save presets A/B (--preset file, else rcd-presets.json)"),
    ("ctrl+o", "preset-load", "load presets A/B (--preset file, else rcd-presets.json)"),
    ("z", "cycle zoom", "zoom fit, 1:1 … 8:1 (screen:frame pixels) at the mouse"),
    ("s", "screenshot", "screenshot: original + tuned PNG pair"),
    ("S", "screenshot-view", "screenshot of the view as shown (split, side…), no HUD"),
    ("R", "record", "start / stop recording the tuned frames"),
    ("i", "cycle hud", "show / hide the HUD"),
    ("n", "cycle probe", "noise probe at the pointer: luma, chroma σ"),
    ("t", "cycle tone-mapping", "HDR video: tone-mapped ⇄ as coded"),
    ("f", "cycle fullscreen", "fullscreen on / off"),
    ("MBTN_LEFT_DBL", "cycle fullscreen", "fullscreen on / off"),
    ("ESCAPE", "set fullscreen no; set help no", "leave fullscreen, close the help page"),
    ("{", "multiply speed 0.5", "half speed (to 0.25×; the sound keeps its pitch)"),
    ("}", "multiply speed 2", "double speed (up to 4×)"),
    ("shift+BACKSPACE", "set speed 1", "normal speed"),
    ("m", "cycle mute", "mute on / off"),
    ("*", "add volume 2", "volume +2 %"),
    ("/", "add volume -2", "volume −2 %"),
    ("?", "cycle help", "this help page"),
    ("F1", "cycle help", "this help page"),
    ("q", "quit", "quit"),
]

# How the help page writes key names that are not keys on a keyboard.
SHOWN_AS = {"MBTN_LEFT_DBL": "double-click"}

KEYMAP: dict[str, str] = {key: cmd for key, cmd, _ in BINDINGS}


def command_for(key: str) -> str | None:
    return KEYMAP.get(key)


# Commands a held key repeats (mpv's rule: steps repeat, toggles do not — a held space would
# otherwise flicker pause, a held f the whole screen).
REPEATABLE_VERBS = {"add", "seek", "frame-step", "frame-back-step"}


def repeatable(command: str) -> bool:
    return command.split(maxsplit=1)[0] in REPEATABLE_VERBS if command.strip() else False


def help_lines() -> list[str]:
    """One line per distinct description, keys that share it joined."""
    rows: dict[str, list[str]] = {}
    for key, cmd, desc in BINDINGS:
        if desc:
            rows.setdefault(desc, []).append(SHOWN_AS.get(key, key))
    rows["split position (split view), zoom centre (split view: drag)"] = ["mouse"]
    width = max(len(" / ".join(keys)) for keys in rows.values())
    return [f"{' / '.join(keys):<{width}} {desc}" for desc, keys in rows.items()]


def markdown_table() -> str:
    lines = ["| key | command | what it does |", "|---|---|---|"]
    for key, cmd, desc in BINDINGS:
        lines.append(f"| `{key}` | `{cmd}` | {desc or 'select this level'} |")
    return "\n".join(lines)
