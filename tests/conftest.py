"""Shared pytest fixtures and marker handling.

Markers (registered in pyproject.toml):
* ``display`` -- needs a real X display (Xvfb in CI). Such tests get the
  ``real_display`` fixture automatically: skipped when no X server answers,
  failed instead when the environment variable CI is set.
* ``audio`` -- needs a real PortAudio output device (the JACK dummy server in
  CI). Such tests get the ``sound_device`` fixture automatically: skip / fail
  as for ``display``.
* ``gpu`` -- needs CUDA: always skipped when torch.cuda is not available, CI
  or not.
* ``slow`` -- only a label.

Everything else runs headless: SDL's video and audio drivers default to
``dummy`` for the whole test process (and the subprocesses it starts), unless
the caller set them already.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pytest  # noqa: E402

from media import DEFAULT_CLIP, make_test_clip  # noqa: E402


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when running in CI (where the thing must exist)."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- X display

@functools.lru_cache(maxsize=None)
def _x_display_problem(display: str) -> str | None:
    """None when an X server answers on ``display``, else why not."""
    if not display:
        return "DISPLAY is not set (no X server)"
    env = {**os.environ, "DISPLAY": display}
    probes = []
    if shutil.which("xdpyinfo"):
        probes.append(["xdpyinfo"])
    if shutil.which("xdotool"):
        probes.append(["xdotool", "getdisplaygeometry"])
    if not probes:
        return "neither xdpyinfo nor xdotool is installed to check the X display"
    try:
        r = subprocess.run(probes[0], env=env, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"X server on DISPLAY={display} did not answer within 20 s"
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        return f"no X server answers on DISPLAY={display}: {err[-1] if err else r.returncode}"
    return None


@pytest.fixture
def real_display(monkeypatch) -> str:
    """A real X display: returns its DISPLAY string and sets SDL_VIDEODRIVER=x11."""
    display = os.environ.get("DISPLAY", "")
    problem = _x_display_problem(display)
    if problem:
        skip_or_fail(problem)
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    return display


# --------------------------------------------------------------------------- sound

_SOUND_PROBE = textwrap.dedent("""
    import json
    import sounddevice as sd
    dev = sd.query_devices(kind="output")  # raises when there is no default output
    api = sd.query_hostapis(dev["hostapi"])["name"]
    print("RESULT " + json.dumps({"index": sd.default.device[1], "name": dev["name"],
          "hostapi": api, "max_output_channels": dev["max_output_channels"],
          "default_samplerate": dev["default_samplerate"]}))
""")


@functools.lru_cache(maxsize=None)
def _probe_sound() -> tuple[dict | None, str | None]:
    """Ask a child Python for PortAudio's default output device.

    A child process, so a missing or broken PortAudio (or a sound server that
    hangs) cannot take the test process down.
    """
    try:
        r = subprocess.run([sys.executable, "-c", _SOUND_PROBE], capture_output=True,
                           text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None, "probing PortAudio for an output device timed out (60 s)"
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            info = json.loads(line[len("RESULT "):])
            if info["max_output_channels"] < 1:
                return None, f"PortAudio default output {info['name']!r} has no output channels"
            return info, None
    err = [ln for ln in (r.stderr or "").strip().splitlines() if ln.strip()]
    return None, ("no PortAudio output device (is libportaudio2 installed and a sound server "
                  f"such as jackd running?): {err[-1] if err else 'exit code ' + str(r.returncode)}")


@pytest.fixture
def sound_device() -> dict:
    """PortAudio's default output device: dict(index, name, hostapi, max_output_channels,
    default_samplerate). Skips (fails when CI is set) when there is none."""
    info, problem = _probe_sound()
    if problem:
        skip_or_fail(problem)
    return info


# --------------------------------------------------------------------------- markers

@pytest.fixture(autouse=True)
def _marker_requirements(request):
    """Tests marked ``display`` / ``audio`` get their fixture without asking for it."""
    if request.node.get_closest_marker("display"):
        request.getfixturevalue("real_display")
    if request.node.get_closest_marker("audio"):
        request.getfixturevalue("sound_device")


def pytest_collection_modifyitems(config, items):
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch
        cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch / broken CUDA: no GPU
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


# --------------------------------------------------------------------------- media

@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 3 s 320x240 30 fps H.264 (yuv420p) MP4 with a 440 Hz 48 kHz stereo AAC tone.

    Each frame's index is readable with ``media.read_frame_index``; see
    ``media.DEFAULT_CLIP`` for the parameters.
    """
    kw = dict(DEFAULT_CLIP)
    ext = kw.pop("ext")
    return make_test_clip(tmp_path_factory.mktemp("media") / f"clip.{ext}", **kw)


@pytest.fixture
def make_clip(tmp_path):
    """Factory: ``make_clip(width=, height=, fps=, seconds=, codec='libx264',
    pix_fmt='yuv420p', audio=True, ext='mp4', **more)`` -> Path of a new clip in
    tmp_path. Other keywords go to ``media.make_test_clip``."""
    counter = iter(range(1_000_000))

    def _make(width: int = 320, height: int = 240, fps=30, seconds: float = 1.0,
              codec: str = "libx264", pix_fmt: str = "yuv420p", audio: bool = True,
              ext: str = "mp4", name: str | None = None, **more) -> Path:
        ext = ext.lstrip(".")
        stem = name or f"clip{next(counter)}_{width}x{height}_{codec}_{pix_fmt}"
        return make_test_clip(tmp_path / f"{stem}.{ext}", width=width, height=height,
                              fps=fps, seconds=seconds, codec=codec, pix_fmt=pix_fmt,
                              audio=audio, **more)

    return _make
