"""Foundation checks: the synthetic media, a real X display, a real sound device."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from io import BytesIO

import av
import numpy as np
import pytest
from PIL import Image

from media import DEFAULT_CLIP, expected_frame_count, read_frame_index


def _decode_video(path):
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = dict(codec=vs.codec_context.name, width=vs.codec_context.width,
                    height=vs.codec_context.height, pix_fmt=vs.codec_context.pix_fmt)
        idx = [read_frame_index(f.to_ndarray(format="rgb24")) for f in c.decode(vs)]
    return info, idx


def _decode_audio(path):
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None, None
        st = c.streams.audio[0]
        info = dict(codec=st.codec_context.name, rate=st.codec_context.sample_rate,
                    channels=st.codec_context.channels)
        frames = [f.to_ndarray() for f in c.decode(st)]
    pcm = np.concatenate([f if f.shape[0] == info["channels"] else f.reshape(-1, info["channels"]).T
                          for f in frames], axis=1)
    return info, pcm


def _dominant_hz(mono, rate):
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return np.argmax(spec) * rate / len(mono)


# --------------------------------------------------------------------------- media

def test_clip_decodes(clip):
    info, idx = _decode_video(clip)
    n = expected_frame_count(DEFAULT_CLIP["fps"], DEFAULT_CLIP["seconds"])
    assert n == 90
    assert abs(len(idx) - n) <= 1
    assert (info["width"], info["height"]) == (320, 240)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    # every frame carries its own index, in order: the content moves and is recoverable
    assert idx == list(range(len(idx)))

    ainfo, pcm = _decode_audio(clip)
    assert ainfo is not None, "clip has no audio stream"
    assert ainfo["codec"] == "aac" and ainfo["rate"] == 48000 and ainfo["channels"] == 2
    assert abs(pcm.shape[1] / 48000 - 3.0) < 0.1
    assert abs(_dominant_hz(pcm[0], 48000) - 440) < 2
    assert 0.1 < np.abs(pcm).max() < 0.5


def test_clip_frames_differ(clip):
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(10), c.decode(video=0))]
    # below the barcode strip the picture moves from frame to frame
    assert all(np.abs(a[40:].astype(int) - b[40:].astype(int)).mean() > 1
               for a, b in zip(frames, frames[1:]))


@pytest.mark.parametrize("kw, want", [
    (dict(width=321, height=241, pix_fmt="yuv444p", audio=False),
     dict(codec="h264", pix_fmt="yuv444p", audio=None)),
    (dict(width=321, height=241, codec="libvpx-vp9", ext="webm"),
     dict(codec="vp9", pix_fmt="yuv420p", audio="opus")),
    (dict(width=64, height=48, fps=25, seconds=0.8, ext="mkv"),
     dict(codec="h264", pix_fmt="yuv420p", audio="aac")),
])
def test_make_clip_variants(make_clip, kw, want):
    path = make_clip(**kw)
    assert path.suffix == "." + kw.get("ext", "mp4")
    info, idx = _decode_video(path)
    assert (info["width"], info["height"]) == (kw["width"], kw["height"])
    assert info["codec"] == want["codec"] and info["pix_fmt"] == want["pix_fmt"]
    n = expected_frame_count(kw.get("fps", 30), kw.get("seconds", 1.0))
    assert abs(len(idx) - n) <= 1 and idx == list(range(len(idx)))
    ainfo, pcm = _decode_audio(path)
    if want["audio"] is None:
        assert ainfo is None
    else:
        assert ainfo["codec"] == want["audio"] and ainfo["rate"] == 48000
        assert abs(_dominant_hz(pcm[0], 48000) - 440) < 3


# --------------------------------------------------------------------------- X display

_WINDOW_CHILD = textwrap.dedent("""
    import select, sys, time
    import pygame
    pygame.display.init()
    screen = pygame.display.set_mode((200, 150))
    pygame.display.set_caption("rcdtest")
    colour = (255, 0, 128)
    deadline = time.monotonic() + 60
    print("READY", pygame.display.get_driver(), flush=True)
    while time.monotonic() < deadline:
        for event in pygame.event.get():
            pass
        screen.fill(colour)
        pygame.display.flip()
        if select.select([sys.stdin], [], [], 0.05)[0]:
            break  # parent wrote or closed stdin: done
    pygame.display.quit()
""")


def _xdotool(*args, timeout=10):
    return subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.display
def test_pygame_window_on_real_display(real_display):
    for tool in ("xdotool", "import"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed")
    env = {**os.environ, "SDL_VIDEODRIVER": "x11", "SDL_VIDEO_X11_WMCLASS": "rcdtest",
           "DISPLAY": real_display}
    child = subprocess.Popen([sys.executable, "-c", _WINDOW_CHILD], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        line = child.stdout.readline()
        assert line.startswith("READY"), f"child failed: {line!r} {child.stderr.read() if child.poll() is not None else ''}"
        assert line.split()[1] == "x11"
        wids = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not wids:
            r = _xdotool("search", "--onlyvisible", "--classname", "rcdtest")
            wids = r.stdout.split()
            if not wids:
                time.sleep(0.1)
        assert wids, "xdotool did not find the window by its WM class"
        geo = dict(kv.split("=", 1) for kv in
                   _xdotool("getwindowgeometry", "--shell", wids[-1]).stdout.split())
        x, y, w, h = (int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        assert (w, h) == (200, 150)
        time.sleep(0.3)  # a few more flips
        shot = subprocess.run(["import", "-window", "root", "png:-"], env=env,
                              capture_output=True, timeout=30)
        assert shot.returncode == 0, shot.stderr.decode(errors="replace")
        img = Image.open(BytesIO(shot.stdout)).convert("RGB")
        px = img.getpixel((x + w // 2, y + h // 2))
        assert all(abs(a - b) <= 2 for a, b in zip(px, (255, 0, 128))), px
    finally:
        try:
            child.stdin.close()
            child.wait(timeout=10)
        except Exception:  # noqa: BLE001
            child.kill()
            child.wait()
    assert child.returncode == 0, child.stderr.read()


# --------------------------------------------------------------------------- sound

_AUDIO_CHILD = textwrap.dedent("""
    import json, threading
    import numpy as np
    import sounddevice as sd
    dev = sd.query_devices(kind="output")
    rate = int(dev["default_samplerate"])
    total = rate // 2  # 0.5 s
    state = {"calls": 0, "frames": 0, "status": []}
    done = threading.Event()

    def callback(out, frames, time_info, status):
        if status:
            state["status"].append(str(status))
        start = state["frames"]
        t = np.arange(start, start + frames) / rate
        out[:] = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
        state["calls"] += 1
        state["frames"] += frames
        if state["frames"] >= total:
            raise sd.CallbackStop

    with sd.OutputStream(samplerate=rate, channels=min(2, dev["max_output_channels"]),
                         dtype="float32", callback=callback,
                         finished_callback=done.set) as stream:
        finished = done.wait(10)
        state["latency"] = stream.latency
    state.update(finished=finished, rate=rate, device=dev["name"],
                 hostapi=sd.query_hostapis(dev["hostapi"])["name"])
    print("RESULT " + json.dumps(state), flush=True)
""")


@pytest.mark.audio
def test_sounddevice_plays_sine(sound_device):
    r = subprocess.run([sys.executable, "-c", _AUDIO_CHILD], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    result = next(json.loads(ln[7:]) for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    assert result["finished"], f"stream did not finish 0.5 s of audio: {result}"
    assert result["calls"] > 0
    assert result["frames"] >= result["rate"] // 2
