"""Recording (key R / `record` / --record), the tuning track, and the offline render (--render).

Every player run is a headless subprocess (`run_player.py --headless`, SDL dummy drivers from
conftest) with a random-initialised live model saved in a temporary directory.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from media import read_frame_index

REPO = Path(__file__).resolve().parent.parent
FPS = 30


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    import torch

    from engine import checkpoint
    from engine.model import PRESETS, RCDNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_live.pt"
    checkpoint.save(RCDNet(PRESETS["live"]), path)
    return path


def run_player(*args, timeout=180, check=False) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "run_player.py", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, "SDL_VIDEODRIVER": "dummy",
                                                        "SDL_AUDIODRIVER": "dummy"})
    if check:
        assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr}"
    return r


def decode_video(path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as c:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return [t for t, _ in frames], [x for _, x in frames]


def decode_audio(path) -> np.ndarray | None:
    """(channels, n) float32, or None without an audio stream."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        parts = [f.to_ndarray() for f in c.decode(audio=0)]
    return np.concatenate(parts, axis=1)


def container_duration(path) -> float:
    with av.open(str(path)) as c:
        return c.duration / 1e6


def assert_prefix(idx: list[int]) -> None:
    """Frames in order from the first one; at the cut the B-frames (≤ 3) coded after the last
    P-frame may be missing — the P-frame itself still decodes."""
    assert idx and all(b > a for a, b in zip(idx, idx[1:])), idx
    gaps = [(a, b) for a, b in zip(idx, idx[1:]) if b != a + 1]
    assert not gaps or (len(gaps) == 1 and gaps[0] == (idx[-2], idx[-1]) and idx[-1] - idx[-2] <= 4), gaps


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if "error" in ln]


def dominant_hz(mono: np.ndarray, rate: int = 48000) -> float:
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spec) * rate / len(mono))


def assert_source_audio(rec: np.ndarray, src: np.ndarray, start_pts: float) -> None:
    """The recording's audio is the source's from start_pts on, to the sample (its first and last
    50 ms apart: the AAC encoder's edges)."""
    s0 = round(start_pts * 48000)
    body = rec[:, 2400:-2400]

    def err(offset):
        seg = src[:, s0 + offset + 2400: s0 + offset + 2400 + body.shape[1]]
        return float(np.abs(seg - body[:, : seg.shape[1]]).max())

    errors = {off: err(off) for off in (-2, -1, 0, 1, 2)}
    assert min(errors, key=errors.get) == 0 and errors[0] < 0.01, errors


# --------------------------------------------------------------------------- a scripted session

@pytest.fixture(scope="module")
def session(clip, weights, tmp_path_factory):
    """Record 0.3 → 2.2 s of the 3 s clip with a strength change (5 → 40) at 1.2 s."""
    d = tmp_path_factory.mktemp("session")
    out = d / "rec.mp4"
    script = d / "script.txt"
    script.write_text(f"0.0 set strength 5\n0.3 record {out}\n1.2 set strength 40\n2.2 record\n")
    stats = d / "stats.json"
    r = run_player(clip, "--weights", weights, "--headless", "--script", script, "--stats-json", stats,
                   "--threads", "1", check=True)
    return dict(out=out, track=Path(str(out) + ".json"), stats=json.loads(stats.read_text()), stderr=r.stderr,
                dir=d, clip=clip)


def test_recording_decodes_with_frames_duration_and_audio(session):
    out, stats = session["out"], session["stats"]
    assert out.exists(), session["stderr"]
    assert not list(session["dir"].glob(".*part*")), "temporary file left behind"
    n = stats["record_frames"]
    assert stats["record_frames_dropped"] == 0
    assert 40 <= n <= 60, stats  # ~1.9 s at 30 fps (frames late-dropped by a loaded machine are not presented)
    times, frames = decode_video(out)
    assert abs(len(frames) - n) <= 1
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(times, times[1:]))
    track = json.loads(session["track"].read_text())
    span = track["end_pts"] - track["start_pts"]
    assert span == pytest.approx(1.9, abs=0.25)
    assert container_duration(out) == pytest.approx(span, abs=0.1)
    with av.open(str(out)) as c:
        v = c.streams.video[0].codec_context
        assert (c.streams.video[0].codec_context.name, v.width, v.height, v.pix_fmt) == ("h264", 320, 240, "yuv420p")
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    pcm = decode_audio(out)
    assert pcm.shape[1] / 48000 == pytest.approx(span, abs=0.06)
    assert dominant_hz(pcm[0]) == pytest.approx(440, abs=3)
    # no holes: every 10 ms block of the tone (amplitude 0.25) is there
    body = pcm[0, 2400:-2400]
    rms = np.sqrt((body[: len(body) // 480 * 480].reshape(-1, 480) ** 2).mean(axis=1))
    assert rms.min() > 0.1, f"silent block in the recorded audio (min RMS {rms.min():.3f})"


def test_recorded_audio_is_the_source_audio_of_the_span(session):
    """Sample-exact: the recording's audio is the source's from the first recorded frame's pts."""
    track = json.loads(session["track"].read_text())
    rec, src = decode_audio(session["out"]), decode_audio(session["clip"])
    assert_source_audio(rec, src, track["start_pts"])


def test_a_recording_made_at_other_speeds_keeps_the_source_sound(clip, weights, tmp_path):
    """Played at 0.5× and 2× the sound is stretched (pitch kept); what is recorded is still the
    source's sound, sample-exact, at the source's pace — across speed changes too (each change
    used to drop 30–180 ms of it: the sound restarted a little ahead)."""
    out = tmp_path / "slow.mp4"
    script = tmp_path / "script.txt"
    script.write_text(f"0.0 set speed 0.5\n0.3 record {out}\n1.0 set speed 2\n1.3 set speed 0.5\n1.6 record\n")
    run_player(clip, "--weights", weights, "--headless", "--script", script, "--threads", "1", check=True)
    track = json.loads(Path(str(out) + ".json").read_text())
    span = track["end_pts"] - track["start_pts"]
    # 0.7 s and 0.3 s of playback at half speed, 0.3 s at 2×: 1.1 s of the source, less the last
    # frame's duration, were each speed change heard at once; it is heard once the sound already
    # queued at the old speed has played, which costs the 2× stretch up to about 0.2 s of the source.
    # Measured on a 2-core VM: 0.83–1.03 over 20 runs (session 27's tree and session 28's alike; the
    # 0.85 this bound was before failed one CI run). All at half speed would give 0.65, all at 1× 1.3.
    assert 0.75 <= span <= 1.2, span
    rec, src = decode_audio(out), decode_audio(clip)
    assert rec.shape[1] / 48000 == pytest.approx(span, abs=0.06)
    assert dominant_hz(rec[0]) == pytest.approx(440, abs=3)
    assert_source_audio(rec, src, track["start_pts"])


def test_a_matroska_source_with_pcm_sound_is_recorded_sample_exact(weights, tmp_path):
    """Matroska stores times in whole milliseconds: each 1024-sample PCM chunk arrived 16 samples
    (1/3 ms) before where the last one ended, and the recorder cut those samples out as an overlap."""
    from media import make_test_clip

    clip = make_test_clip(tmp_path / "pcm.mkv", seconds=2.0, audio_codec="pcm_s16le")
    out = tmp_path / "rec.mp4"
    script = tmp_path / "script.txt"
    script.write_text(f"0.2 record {out}\n1.6 record\n")
    run_player(clip, "--weights", weights, "--headless", "--script", script, "--threads", "1", check=True)
    with av.open(str(clip)) as c:  # the source as float stereo at 48 kHz
        rs = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        src = np.concatenate([g.to_ndarray() for f in c.decode(audio=0) for g in rs.resample(f)], axis=1)
    assert_source_audio(decode_audio(out), src, json.loads(Path(str(out) + ".json").read_text())["start_pts"])


def test_tuning_track(session, weights, clip):
    from engine import checkpoint

    track = json.loads(session["track"].read_text())
    assert track["format"] == "rcd-track/1" and track["complete"] is True
    assert track["model"]["sha256"] == checkpoint.sha256(weights)
    assert track["source"]["kind"] == "file" and track["source"]["sha256"] == checkpoint.sha256(clip)
    assert track["device"] == "cpu"
    assert track["frame_count"] == len(track["frames"]) == session["stats"]["record_frames"]
    assert track["start_pts"] == track["frames"][0]
    assert 0.2 <= track["start_pts"] <= 0.6
    assert track["initial"]["mix"]["strength"] == 5.0 and track["initial"]["bypass"] is False
    assert [c["mix"]["strength"] for c in track["changes"]] == [5.0, 40.0]
    change = track["changes"][1]["pts"]
    assert change in track["frames"]
    assert 1.0 <= change <= 1.6


def test_frames_follow_the_strength_change(session):
    """Strength 40 removes far more than strength 5: after the change the recorded frames are much
    further from the source frames (and smoother) than before it."""
    track = json.loads(session["track"].read_text())
    change = track["changes"][1]["pts"]
    _, rec = decode_video(session["out"])
    with av.open(str(session["clip"])) as c:
        src = {round(f.time * FPS): f.to_ndarray(format="rgb24") for f in c.decode(video=0)}

    def hf(img):  # high-frequency energy: mean |horizontal difference| below the barcode strip
        g = img[40:].astype(np.float32).mean(axis=2)
        return float(np.abs(np.diff(g, axis=1)).mean())

    before, after = [], []
    for pts, img in zip(track["frames"], rec):
        s = src[round(pts * FPS)]
        d = float(np.abs(img.astype(np.int16) - s.astype(np.int16)).mean())
        (after if pts >= change else before).append((d, hf(img) - hf(s)))
    assert len(before) > 10 and len(after) > 10
    d_before = np.median([d for d, _ in before])
    d_after = np.median([d for d, _ in after])
    assert d_after > 3 * d_before, (d_before, d_after)
    assert d_before < 8


def test_render_from_track_is_identical(session, weights):
    out2 = session["dir"] / "rerender.mp4"
    r = run_player(session["clip"], "--render", out2, "--track", session["track"], "--threads", "1", check=True)
    assert "rendered" in r.stdout and str(out2) in r.stdout
    t1, live = decode_video(session["out"])
    t2, again = decode_video(out2)
    assert len(again) == len(live)
    assert t2 == t1
    for i, (a, b) in enumerate(zip(live, again)):
        assert np.array_equal(a, b), f"frame {i} differs"
    assert decode_audio(out2) is not None
    # the render writes its own track
    track2 = json.loads(Path(str(out2) + ".json").read_text())
    assert track2["frames"] == json.loads(session["track"].read_text())["frames"]


def test_render_from_a_cache_mode_track_is_identical(clip, weights, tmp_path):
    """Frames played from the render cache were blended from its float16 bases; the track says so
    and the re-render blends from the same (it used to differ by up to 49 levels)."""
    out, out2, script = tmp_path / "cached.mp4", tmp_path / "again.mp4", tmp_path / "script.txt"
    script.write_text(f"0.2 record {out}\n0.6 set strength 30\n1.2 record\n")
    run_player(clip, "--weights", weights, "--headless", "--mode", "cache", "--script", script, "--threads", "1",
               check=True)
    changes = json.loads(Path(str(out) + ".json").read_text())["changes"]
    assert changes and all(c.get("bases") == "float16" for c in changes)
    run_player(clip, "--render", out2, "--track", Path(str(out) + ".json"), "--threads", "1", check=True)
    (t1, played), (t2, again) = decode_video(out), decode_video(out2)
    assert t1 == t2 and len(played) > 15
    for i, (a, b) in enumerate(zip(played, again)):
        assert np.array_equal(a, b), f"frame {i} differs"


def test_a_render_from_a_track_reads_each_frame_as_the_recording_did(tmp_path):
    """Playback chooses the backbone of a frame whose noise sits at the luma threshold with the
    frames before it (engine.denoiser.NoiseChoice); the track notes each frame's choice, so a render
    of a recording started mid-clip, which has not seen those frames, still reproduces it. The clip
    (FFV1 RGB, lossless): colour ramps with luma-only detail whose σ̂ is above the threshold for the
    first 0.3 s and then below and above it by turns."""
    import torch
    from dataclasses import replace

    from engine import checkpoint
    from engine.denoiser import luma_noise
    from engine.model import PRESETS, RCDNet

    torch.manual_seed(0)
    weights = tmp_path / "random_live_mono.pt"
    checkpoint.save(RCDNet(replace(PRESETS["live"], mono=True)), weights)
    y, x = np.mgrid[0:64, 0:96]
    ramps = np.stack([60 + x, 100 + y, 40 + x + y], axis=2)  # linear: no 2×2 diagonal detail of its own
    frames = []
    for i in range(45):
        f = ramps.copy()
        f[0::2, 0::2] += 5 if i < 9 or i % 2 == 0 else 4  # σ̂ 3.71 or 2.97, the same in R, G and B
        frames.append(f.astype(np.uint8))
    assert [luma_noise(f) for f in frames[8:12]] == [True, False, True, False]
    clip = tmp_path / "threshold.mkv"
    with av.open(str(clip), mode="w") as c:
        vs = c.add_stream("ffv1", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 96, 64, "bgr0"
        vs.codec_context.time_base = Fraction(1, FPS)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="bgr0")
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for pkt in vs.encode(vf):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)

    out, out2, script, stats = tmp_path / "rec.mp4", tmp_path / "again.mp4", tmp_path / "s.txt", tmp_path / "st.json"
    script.write_text(f"0.0 set strength 20\n0.3 record {out}\n1.4 record\n")
    run_player(clip, "--weights", weights, "--headless", "--script", script, "--stats-json", stats, "--threads", "1",
               check=True)
    track = json.loads(Path(str(out) + ".json").read_text())
    assert 0.2 <= track["start_pts"] <= 0.6 and len(track["frames"]) > 20
    assert [c.get("noise") for c in track["changes"]] == ["luma"]  # every recorded frame from the luma
    run_player(clip, "--render", out2, "--track", Path(str(out) + ".json"), "--threads", "1", check=True)
    (t1, played), (t2, again) = decode_video(out), decode_video(out2)
    assert t1 == t2
    for i, (a, b) in enumerate(zip(played, again)):
        assert np.array_equal(a, b), f"frame {i} differs"
    assert [c.get("noise") for c in json.loads(Path(str(out2) + ".json").read_text())["changes"]] == ["luma"]


# --------------------------------------------------------------------------- whole-file render

def test_render_whole_file_with_strength(make_clip, weights, tmp_path):
    clip = make_clip(width=160, height=120, seconds=1.0)
    out = tmp_path / "whole.mkv"
    r = run_player(clip, "--render", out, "--strength", "20", "--weights", weights, "--threads", "1", check=True)
    summary = [ln for ln in r.stdout.splitlines() if "rendered" in ln]
    assert len(summary) == 1 and "30 frames" in summary[0] and "fps" in summary[0] and "MiB" in summary[0]
    src_t, src = decode_video(clip)
    t, frames = decode_video(out)
    assert len(frames) == len(src) == 30
    assert t == pytest.approx(src_t, abs=1e-3)
    assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, src)]) > 3
    pcm = decode_audio(out)
    assert pcm is not None and pcm.shape[1] / 48000 == pytest.approx(1.0, abs=0.06)
    track = json.loads(Path(str(out) + ".json").read_text())
    assert track["initial"]["mix"]["strength"] == 20.0 and len(track["frames"]) == 30


def test_a_still_image_renders_to_a_lossless_image(weights, tmp_path, clip):
    """`--render OUT.png` (or .tif) of a still image writes its one frame as 8-bit RGB: strength 0
    gives the decoded image itself, a strength denoises it; a video input is refused in one line
    and leaves nothing behind."""
    from PIL import Image

    rng = np.random.default_rng(2)
    clean = np.repeat(np.linspace(30, 220, 80)[None, :, None], 60, axis=0) * np.ones(3)  # (60, 80, 3)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    src = tmp_path / "capture.png"
    Image.fromarray(noisy).save(src)
    same, tuned = tmp_path / "same.png", tmp_path / "tuned.tif"
    run_player(src, "--render", same, "--strength", "0", "--weights", weights, check=True)
    r = run_player(src, "--render", tuned, "--strength", "25", "--weights", "live", check=True)  # (the shipped model)
    assert "rendered the image" in r.stdout
    assert np.array_equal(np.asarray(Image.open(same)), noisy)
    out = np.asarray(Image.open(tuned))
    assert out.shape == noisy.shape and out.dtype == np.uint8
    err = lambda a: np.sqrt(np.mean((a.astype(float) - clean) ** 2))  # noqa: E731
    assert err(out) < 0.7 * err(noisy)
    assert json.loads(Path(str(tuned) + ".json").read_text())["video"]["codec"] == "tiff"
    r = run_player(clip, "--render", tmp_path / "v.png", "--weights", weights)
    assert r.returncode != 0 and "still image input" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".v", "v."))) == []


def test_raw_video_renders_and_its_track_opens_it_again(weights, tmp_path):
    """A render of headerless raw video keeps its frame rate; its tuning track says how the file was
    opened, so `--render --track` with no INPUT reads it the same way and gives the same frames."""
    from media import read_frame_index, synth_frame

    images = [synth_frame(i, 96, 64) for i in range(5)]
    raw = tmp_path / "dump.bin"
    raw.write_bytes(b"".join(av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv444p").to_ndarray().tobytes()
                             for a in images))
    first, again = tmp_path / "first.mkv", tmp_path / "again.mkv"
    run_player(raw, "--raw", "96x64:yuv444p", "--fps", "8", "--range", "full", "--render", first, "--strength", "10",
               "--lossless", "--weights", weights, "--threads", "1", check=True)
    track = json.loads(Path(str(first) + ".json").read_text())
    assert track["source"]["demuxer"] == "rawvideo" and track["source"]["range"] == "full"
    assert track["source"]["options"] == {"video_size": "96x64", "pixel_format": "yuv444p", "framerate": "8"}
    run_player("--render", again, "--track", Path(str(first) + ".json"), "--threads", "1", check=True)
    (t1, f1), (t2, f2) = decode_video(first), decode_video(again)
    assert t1 == t2 == pytest.approx([i / 8 for i in range(5)])
    assert [read_frame_index(f) for f in f1] == list(range(5))
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2))


def test_a_render_to_raw_yuv_gives_a_raw_source_back_at_strength_0(weights, tmp_path, clip):
    """`--render OUT.yuv` writes a raw source's own pixel format (NV12 here), frame after frame, and
    says how to read it back; at strength 0 that is the input again within one code wherever its RGB
    did not clip (chroma is the mean of the pixels it covers, as the decoder repeats it over them;
    swscale's filtered chroma moved it by up to 10 codes). `.y4m` says size, rate and chroma in its
    header. A video file renders to 8-bit 4:2:0. Neither is for live recording."""
    rng = np.random.default_rng(6)
    h, w, n = 64, 96, 4
    y = rng.integers(50, 181, (n, h, w))  # noisy luma, chroma near grey: no RGB clips (BT.601 at this size)
    uv = rng.integers(108, 149, (n, h // 2, w))  # NV12: (U, V) pairs, a row of pairs per two rows of pixels
    raw = tmp_path / "cap_96x64_nv12_8fps.yuv"
    raw.write_bytes(b"".join(np.concatenate([y[i].ravel(), uv[i].ravel()]).astype(np.uint8).tobytes() for i in range(n)))
    same = tmp_path / "same.yuv"
    r = run_player(raw, "--render", same, "--strength", "0", "--weights", weights, check=True)
    assert "96x64 nv12 at 8 fps, BT.601: play it with --raw 96x64:nv12 --fps 8" in r.stdout
    back = np.frombuffer(same.read_bytes(), np.uint8).astype(int)
    assert back.shape == (n * h * w * 3 // 2,)
    assert np.abs(back - np.frombuffer(raw.read_bytes(), np.uint8)).max() <= 1
    y4m = tmp_path / "tuned.y4m"
    run_player(raw, "--render", y4m, "--strength", "20", "--weights", weights, check=True)
    assert y4m.read_bytes().startswith(b"YUV4MPEG2 W96 H64 F8:1")
    with av.open(str(y4m)) as c:
        frames = [f.to_ndarray() for f in c.decode(video=0)]
    assert len(frames) == n and frames[0].shape == (h * 3 // 2, w)
    assert np.abs(frames[0][:h].astype(int) - y[0]).mean() > 2  # denoised
    from_clip = tmp_path / "clip.yuv"
    r = run_player(clip, "--render", from_clip, "--strength", "5", "--weights", weights, check=True)
    assert "320x240 yuv420p at 30 fps" in r.stdout and from_clip.stat().st_size == 90 * 320 * 240 * 3 // 2
    r = run_player(raw, "--matrix", "bt709", "--render", tmp_path / "709.yuv", "--strength", "0", "--weights", weights,
                   check=True)  # read as BT.709 and written so: a reader of this size would guess BT.601
    assert "96x64 nv12 at 8 fps, BT.709: play it with --raw 96x64:nv12 --fps 8 --matrix bt709" in r.stdout
    full = tmp_path / "full.yuv"  # the same samples read as full range come back as full range
    r = run_player(raw, "--range", "full", "--render", full, "--strength", "0", "--weights", weights, check=True)
    assert "96x64 nv12 at 8 fps, BT.601, full range: play it with --raw 96x64:nv12 --fps 8 --range full" in r.stdout
    assert np.abs(np.frombuffer(full.read_bytes(), np.uint8).astype(int) - np.frombuffer(raw.read_bytes(), np.uint8)).max() <= 1
    for args, words in (([raw, "--record", tmp_path / "live.y4m", "--headless"], [".y4m is for --render"]),
                        ([raw, "--render", tmp_path / "x.yuv", "--lossless"], ["--lossless is for .mp4"])):
        r = run_player(*args, "--weights", weights)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and all(w in r.stderr for w in words), r.stderr


def test_a_render_to_an_image_sequence_writes_every_frame_once_done(make_clip, weights, tmp_path):
    """`--render 'DIR/f_%03d.png'` writes one lossless PNG a frame, numbered from 1 as FFmpeg does;
    at strength 0 each is the decoded source frame. They appear only when the render is done (its
    folder of parts is gone), an existing sequence is not overwritten without --force, and the
    player reads them back as an image sequence."""
    from PIL import Image

    from player.decode import FileSource

    clip = make_clip(width=160, height=120, seconds=0.5, audio=False)  # 15 frames
    out = tmp_path / "seq"
    out.mkdir()
    r = run_player(clip, "--render", out / "f_%03d.png", "--strength", "0", "--weights", weights, check=True)
    assert "rendered 15 frames" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([f"f_{i:03d}.png" for i in range(1, 16)] + ["f_%03d.png.json"])
    src = [f.rgb for f in FileSource(str(clip)).read(0.0, "video")]
    assert len(src) == 15
    assert all(np.array_equal(np.asarray(Image.open(out / f"f_{i + 1:03d}.png")), a) for i, a in enumerate(src))
    r = run_player(clip, "--render", out / "f_%03d.png", "--strength", "0", "--weights", weights)
    assert r.returncode == 1 and "f_001.png: already exists (use --force" in r.stderr
    back = [f for f in FileSource(str(out / "f_%03d.png"), fps=30).read(0.0, "video")]
    assert [f.pts for f in back] == pytest.approx([i / 30 for i in range(15)])
    assert all(np.array_equal(f.rgb, a) for f, a in zip(back, src))


PATCHES = np.array([[220, 30, 30], [30, 200, 40], [40, 50, 210], [128, 128, 128]], np.uint8)  # RGB


def test_hd_colour_goes_through_with_one_matrix_and_the_tags_say_so(weights, tmp_path):
    """An untagged HD file is BT.709 (what players assume): decoded with that matrix, rendered back
    with it, and the render is tagged BT.709 / limited range. Decoded as BT.601, this red patch
    came out as (201, 8, 30) and the render, untagged, read back in BT.709 by other players."""
    from player.decode import FileSource

    rgb = np.repeat(np.repeat(PATCHES[None], 64, axis=0), 320, axis=1)  # (64, 1280, 3): four flat patches
    src = tmp_path / "hd_untagged.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 1280, 64, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "1"}
        for i in range(4):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")
            f.pts = i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)

    def patches(frame_rgb):
        return np.stack([frame_rgb[16:48, x - 100 : x + 100].reshape(-1, 3).mean(0) for x in (160, 480, 800, 1120)])

    source = FileSource(str(src))
    assert source.info.colour.name == "BT.709"
    decoded = next(iter(source.read(0.0, "video"))).rgb
    assert np.abs(patches(decoded) - PATCHES).max() < 5  # swscale's fast path is ~1–3 levels dark
    out = tmp_path / "hd.mp4"
    run_player(src, "--render", out, "--strength", "0", "--weights", weights, "--threads", "1", check=True)
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)  # BT.709, limited
        first = next(c.decode(video=0))
        assert first.colorspace == 1
        assert np.abs(patches(first.to_ndarray(format="rgb24")) - PATCHES).max() < 7  # two conversions


@pytest.mark.parametrize("degrees, corner", [(90, (1, 0)), (-90, (0, 1)), (180, (1, 1))])
def test_a_rotated_clip_plays_and_renders_upright(weights, tmp_path, degrees, corner):
    """A display matrix (a phone's portrait clip) is applied: frames come out turned as FFmpeg's
    players show them (counter-clockwise by the matrix's angle), and so does a render."""
    from player.decode import FileSource

    src = tmp_path / "rot.mp4"
    img = np.zeros((48, 64, 3), np.uint8)
    img[:16, :16] = (255, 0, 0)  # red in the top-left corner of the coded frame
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(degrees)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    source = FileSource(str(src))
    h, w = (48, 64) if degrees == 180 else (64, 48)
    assert (source.info.width, source.info.height) == (w, h)
    rgb = next(iter(source.read(0.0, "video"))).rgb
    cy, cx = np.argwhere(rgb[..., 0] > 200).mean(0)
    assert (round(cy / h), round(cx / w)) == corner  # which corner the red block turned to
    out = tmp_path / "upright.mp4"
    run_player(src, "--render", out, "--strength", "0", "--weights", weights, "--threads", "1", check=True)
    _, frames = decode_video(out)
    assert frames[0].shape == (h, w, 3)


def test_render_keeps_irregular_timestamps(weights, tmp_path):
    """A variable-frame-rate source keeps its timestamps."""
    from media import synth_frame

    src = tmp_path / "vfr.mkv"
    steps_ms = [33, 50, 17, 40, 33, 66, 20, 33, 45, 33, 30, 60]
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, step in enumerate(steps_ms):
            f = av.VideoFrame.from_ndarray(synth_frame(i, 160, 120), format="rgb24")
            f.pts, f.time_base = pts, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
            pts += step
        for p in s.encode():
            c.mux(p)
    src_t, _ = decode_video(src)
    out = tmp_path / "vfr_out.mp4"
    run_player(src, "--render", out, "--strength", "10", "--weights", weights, "--threads", "1", check=True)
    t, frames = decode_video(out)
    assert len(frames) == len(steps_ms)
    assert t == pytest.approx(src_t, abs=1e-3)


def test_render_of_a_source_that_starts_late_starts_at_zero(weights, tmp_path):
    """A source whose times start at 10 s (a cut from a longer stream) renders as a recording of it
    does: picture and sound from 0 (the picture stayed at 10 s behind 10 s of silent sound)."""
    from media import sine, synth_frame

    src = tmp_path / "from10.mkv"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 96, "yuv420p"
        v.codec_context.time_base = Fraction(1, 25)
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i in range(50):
            af = av.AudioFrame.from_ndarray(sine(1920, i * 1920, 48000, 440.0, 2), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, 480000 + i * 1920, Fraction(1, 48000)
            for p in a.encode(af):
                c.mux(p)
            f = av.VideoFrame.from_ndarray(synth_frame(i, 160, 96), format="rgb24")
            f.pts, f.time_base = 250 + i, Fraction(1, 25)
            for p in v.encode(f.reformat(format="yuv420p")):
                c.mux(p)
        for s in (v, a):
            for p in s.encode():
                c.mux(p)
    out = tmp_path / "from10.mp4"
    run_player(src, "--render", out, "--strength", "0", "--weights", weights, "--threads", "1", check=True)
    t, frames = decode_video(out)
    assert len(frames) == 50 and t[0] == pytest.approx(0.0, abs=1e-3) and t[-1] == pytest.approx(49 / 25, abs=1e-3)
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(2.0, abs=0.1)
        first = next(c.decode(audio=0))
        assert first.time == pytest.approx(0.0, abs=0.03)
        assert np.abs(first.to_ndarray()).max() > 0.05  # the tone, not silence


# --------------------------------------------------------------------------- crash safety

def test_killed_recording_still_decodes(make_clip, weights, tmp_path):
    clip = make_clip(width=160, height=120, seconds=8.0)
    out = tmp_path / "killed.mp4"
    part_track = tmp_path / ".killed.part.mp4.json"  # written as soon as the first frame is encoded
    p = subprocess.Popen([sys.executable, "run_player.py", str(clip), "--weights", str(weights), "--headless",
                          "--record", str(out), "--threads", "1"], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"})
    try:
        deadline = time.monotonic() + 60
        while not part_track.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert part_track.exists(), p.stderr.read() if p.poll() is not None else "recording did not start"
        t0 = time.monotonic()
        time.sleep(3.0)
        os.kill(p.pid, signal.SIGKILL)
        elapsed = time.monotonic() - t0
    finally:
        p.kill()
        p.wait()
    assert not out.exists()  # only a finished recording gets the final name
    part = tmp_path / ".killed.part.mp4"
    _, frames = decode_video(part)
    idx = [read_frame_index(f) for f in frames]
    # in order; a frame the player dropped (late, on a busy machine) was never presented nor recorded
    assert idx and all(b > a for a, b in zip(idx, idx[1:])), idx
    assert len(idx) >= 0.8 * (idx[-1] - idx[0] + 1), idx
    # ≤ ~1 s lost: a fragment (0.25 s) + the encoder's lookahead; slack for a machine busy with other work
    assert (idx[-1] - idx[0] + 1) / FPS >= elapsed - 1.5, (idx[0], idx[-1], elapsed)
    pcm = decode_audio(part)
    assert pcm is not None and pcm.shape[1] / 48000 >= len(idx) / FPS - 0.6


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_recording_file_playable_at_any_moment(tmp_path, ext):
    """In-process, exact: a snapshot of the file as it is being written (what SIGKILL leaves)
    decodes up to within a second of the frames the encoder had been given."""
    from media import synth_frame
    from player.record import AudioTap, Recorder

    tap = AudioTap()
    rec = Recorder(tmp_path / f"r.{ext}", False, FPS, True, tap, lambda: {}, lambda s: None)
    rec.start()
    tone = (0.25 * np.sin(2 * np.pi * 440 * np.arange(1600) / 48000)).astype(np.float32)[:, None].repeat(2, 1)
    snapshot = tmp_path / f"snapshot.{ext}"
    t0 = time.monotonic()
    pushed_at_snapshot = lag_at_snapshot = None
    for i in range(100):
        pts = i / FPS
        tap.put(pts, tone)
        rec.present(pts, 1 / FPS, synth_frame(i, 160, 120), {"mix": {}, "bypass": False})
        if i == 80:
            time.sleep(0.1)  # let the encoder catch up
            lag_at_snapshot = rec.lag_frames()
            pushed_at_snapshot = rec.frames_queued
            snapshot.write_bytes(next(tmp_path.glob(f".r.part*.{ext}")).read_bytes())
        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
    rec.stop()
    rec.join(timeout=60)
    assert rec.error is None
    _, frames = decode_video(snapshot)
    idx = [read_frame_index(f) for f in frames]
    assert idx[0] == 0
    assert_prefix(idx)
    lost = pushed_at_snapshot - lag_at_snapshot - (idx[-1] + 1)
    assert lost <= FPS, f"{lost} frames handed to the encoder were not decodable from the snapshot"
    # and the finished file has everything
    _, frames = decode_video(tmp_path / f"r.{ext}")
    assert [read_frame_index(f) for f in frames] == list(range(100))


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_irregular_timestamps_keep_their_order_and_times(tmp_path, ext):
    """A source with irregular frame times (a phone's variable rate), with sound: every frame is
    written at its own time, in order. In MP4 the muxer guessed the duration of a fragment's last
    sample, and with B-frames a 0.85 s frame came out at 0.69 s."""
    from media import synth_frame
    from player.record import MediaWriter

    steps = np.tile([0.1, 0.1, 0.09, 0.09, 0.08, 0.1, 0.099], 6)
    times = np.round(np.concatenate([[0.0], np.cumsum(steps)]), 4)
    w = MediaWriter(tmp_path / f"v.{ext}", "mp4" if ext == "mp4" else "matroska", 320, 240, 10.5, 0.0, True)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(4800) / 48000)).astype(np.float32)[:, None].repeat(2, 1)
    for i, t in enumerate(times):
        w.audio(float(t), tone)
        w.video(float(t), synth_frame(i, 320, 240))
        w.encode_audio_until(float(t) + 0.1)
    w.close(end_pts=float(times[-1]) + 0.1)
    with av.open(str(tmp_path / f"v.{ext}")) as c:
        got = [(f.time, read_frame_index(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)]
    assert [i for _, i in got] == list(range(len(times)))
    assert np.allclose([t for t, _ in got], times, atol=1e-3), [(round(t, 4), x) for (t, _), x in zip(got, times)]


@pytest.mark.parametrize("lossless", [False, True])
def test_the_same_frames_encode_to_the_same_file_every_time(tmp_path, lossless):
    """What makes a re-render bit-identical to its recording: on CPUs with AVX-512, x264's AVX-512
    code gave a different file on some encodes of the same frames in one process (player/record.py,
    X264_ASM_UP_TO_AVX2)."""
    from media import synth_frame
    from player.record import MediaWriter

    rng = np.random.default_rng(3)
    frames = [np.clip(synth_frame(i, 160, 120).astype(np.int16) + rng.integers(-20, 21, (120, 160, 3)), 0, 255)
              .astype(np.uint8) for i in range(20)]  # noisy: the encoder's decisions are not trivial
    files = set()
    for k in range(6):
        path = tmp_path / f"e{k}.mkv"
        w = MediaWriter(path, "matroska", 160, 120, 30.0, 0.0, False, lossless=lossless)
        for i, f in enumerate(frames):
            w.video(i / 30.0, f)
        w.close(end_pts=len(frames) / 30.0)
        with av.open(str(path)) as c:
            files.add(b"".join(bytes(p) for p in c.demux(video=0) if p.size))
    assert len(files) == 1


def test_reblend_of_the_same_frame_keeps_the_last_version(tmp_path):
    from player.record import Recorder

    rec = Recorder(tmp_path / "r.mkv", False, FPS, False, None, lambda: {}, lambda s: None)
    rec.start()
    black, white, grey = (np.full((64, 64, 3), v, np.uint8) for v in (0, 255, 128))
    rec.present(0.0, 1 / FPS, black, {"v": "black"})
    rec.present(0.0, 1 / FPS, white, {"v": "white"})  # re-blend after an edit: same pts
    rec.present(1 / FPS, 1 / FPS, grey, {"v": "grey"})
    rec.present(0.5 / FPS, 1 / FPS, black, {"v": "black"})  # before what is recorded (a seek back): skipped
    rec.stop()
    rec.join(timeout=60)
    assert rec.error is None and rec.frames_written == 2
    _, frames = decode_video(tmp_path / "r.mkv")
    assert [int(round(f.mean())) for f in frames] == pytest.approx([255, 128], abs=3)
    track = json.loads((tmp_path / "r.mkv.json").read_text())
    assert [c["v"] for c in track["changes"]] == ["white", "grey"]


# --------------------------------------------------------------------------- refusing early

def test_existing_file_is_not_overwritten(clip, weights, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    t = time.monotonic()
    r = run_player(clip, "--weights", weights, "--headless", "--record", out, "--duration", "1")
    assert r.returncode != 0
    errs = error_lines(r)
    assert len(errs) == 1 and "already exists" in errs[0] and "--force" in errs[0], r.stderr
    assert out.read_bytes() == b"keep me"
    assert time.monotonic() - t < 30
    r = run_player(clip, "--render", out, "--strength", "5", "--weights", weights)
    assert r.returncode != 0 and "already exists" in r.stderr and out.read_bytes() == b"keep me"
    assert not list(tmp_path.glob(".*part*"))
    # with --force it is replaced
    run_player(clip, "--weights", weights, "--headless", "--record", out, "--force", "--duration", "1",
               "--threads", "1", check=True)
    _, frames = decode_video(out)
    assert len(frames) >= 15


@pytest.mark.parametrize("target, message", [
    ("missing-dir/x.mp4", "does not exist"),
    ("x.avi", "use .mp4, .mov or .mkv"),
    ("", "is a directory: name a file in it"),  # (tmp_path itself)
    (None, "the output file name is empty"),  # --record "": nothing was recorded, without a word
])
def test_unwritable_or_unsupported_target_fails_before_playback(tmp_path, target, message):
    # the weights do not exist either: the recording target is checked first, before anything loads
    r = run_player("--headless", "--record", "" if target is None else tmp_path / target, "--weights", tmp_path / "none.pt",
                   "--duration", "1", timeout=60)
    assert r.returncode != 0
    errs = error_lines(r)
    assert len(errs) == 1 and message in errs[0], r.stderr
    assert not list(tmp_path.rglob("*.mp4"))


def test_read_only_directory_fails_before_playback(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write into a read-only directory")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run_player("--headless", "--record", ro / "x.mp4", "--weights", tmp_path / "none.pt", timeout=60)
    finally:
        ro.chmod(0o755)
    assert r.returncode != 0
    errs = error_lines(r)
    assert len(errs) == 1 and "cannot write" in errs[0], r.stderr


@pytest.mark.parametrize("extra, message", [
    (["--start", "1", "--track", "x.json"], "--start: not with --track"),
    (["--script", "s.txt", "--duration", "2"], "--script: not with --render"),
    (["--loop", "0", "1"], "--loop: not with --render"),
    (["--duration", "0"], "--duration > 0"),
    (["--strength", "12", "--preset", "p.json"], "--preset and --strength: choose one"),  # (--preset was ignored)
])
def test_render_refuses_playback_options(clip, tmp_path, extra, message):
    """--render plays nothing: options that shape playback are refused, not silently ignored."""
    r = run_player(clip, "--render", tmp_path / "out.mp4", *extra, timeout=60)
    assert r.returncode == 2
    errs = error_lines(r)
    assert len(errs) == 1 and message in errs[0], r.stderr
    assert not list(tmp_path.iterdir())


def test_a_render_of_a_span_starts_at_start_and_lasts_duration(clip, weights, tmp_path):
    """--render with --start S --duration D renders that excerpt (as FFmpeg's -ss and -t): its frames
    from the one at S, timed from 0, its sound with them, and a track that renders it again; a
    start past the end renders nothing, in one line."""
    out, again = tmp_path / "excerpt.mkv", tmp_path / "again.mkv"
    r = run_player(clip, "--render", out, "--start", "1", "--duration", "0.5", "--strength", "5", "--weights", weights,
                   check=True)
    assert "15 frames (0.50 s of video)" in r.stdout
    t, frames = decode_video(out)
    assert [read_frame_index(f) for f in frames] == list(range(30, 45))
    assert t == pytest.approx([i / 30 for i in range(15)], abs=1e-3)
    pcm = decode_audio(out)
    assert pcm is not None and pcm.shape[1] / 48000 == pytest.approx(0.5, abs=0.03)
    track = json.loads(Path(str(out) + ".json").read_text())
    assert track["start_pts"] == pytest.approx(1.0) and len(track["frames"]) == 15
    run_player("--render", again, "--track", Path(str(out) + ".json"), "--weights", weights, check=True)
    _, frames2 = decode_video(again)
    assert len(frames2) == 15 and all(np.array_equal(a, b) for a, b in zip(frames, frames2))
    r = run_player(clip, "--render", tmp_path / "none.mkv", "--start", "9", "--weights", weights)
    assert r.returncode == 1 and "no frames to render from 9 s" in r.stderr and len(error_lines(r)) == 1
    assert not list(tmp_path.glob("*none*"))


@pytest.mark.parametrize("mode", ["--render", "--record"])
def test_the_input_is_never_the_output(make_clip, tmp_path, mode):
    src = make_clip(width=64, height=48, seconds=0.2)
    before = src.read_bytes()
    r = run_player(src, mode, src, "--force", "--headless", timeout=60)
    assert r.returncode == 2 and "is an input" in r.stderr
    assert src.read_bytes() == before


@pytest.mark.parametrize("name", ["r.mp4", "r_%04d.png"])
def test_sigterm_stops_a_render_and_leaves_nothing(make_clip, weights, tmp_path, name):
    src = make_clip(width=320, height=240, seconds=20.0, audio=False)
    out = tmp_path / "out" / name
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "run_player.py", str(src), "--render", str(out), "--weights", str(weights),
                             "--threads", "1"], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"})
    deadline = time.monotonic() + 60
    while not list(out.parent.iterdir()) and time.monotonic() < deadline:  # the part file: rendering has begun
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "render interrupted; nothing written" in err
    assert not list(out.parent.iterdir())  # no output, no part file (or folder of frames), no sidecar


def test_lossless_render_keeps_every_pixel(make_clip, weights, tmp_path):
    """--lossless: strength 0 returns the input exactly, and the file holds exactly that (the
    default 4:2:0 CRF 18 encoding changes pixels by up to tens of levels)."""
    from player.decode import FileSource

    src = make_clip(width=160, height=120, seconds=0.5)
    out = tmp_path / "exact.mkv"
    run_player(src, "--render", out, "--strength", "0", "--lossless", "--weights", weights, "--threads", "1", check=True)
    played = [f.rgb for f in FileSource(str(src)).read(0.0, "video")]  # the frames as the player decodes them
    _, frames = decode_video(out)
    assert len(frames) == len(played) == 15
    assert all(np.array_equal(a, b) for a, b in zip(frames, played))
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "gbrp"  # H.264 RGB (High 4:4:4)
    track = json.loads(Path(str(out) + ".json").read_text())
    assert track["video"]["codec"] == "libx264rgb" and track["video"]["qp"] == 0


def test_an_anamorphic_source_is_recorded_with_its_pixel_aspect(weights, tmp_path):
    """A 176×144 clip with 12:11 pixels was recorded with square ones (a 4:3 picture came out 11:9)."""
    from fractions import Fraction

    from media import make_test_clip

    clip = tmp_path / "pal.mp4"
    make_test_clip(clip, width=176, height=144, seconds=1.0, audio=False)
    with av.open(str(clip)) as c:  # the same pictures, tagged 12:11 (as a PAL DV camera writes them)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(clip), "w") as o:
        s = o.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 176, 144, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(12, 11)
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 30)
            for pkt in s.encode(f):
                o.mux(pkt)
        for pkt in s.encode():
            o.mux(pkt)
    out = tmp_path / "rec.mkv"
    run_player(clip, "--weights", weights, "--headless", "--record", out, "--duration", "0.8", check=True)
    with av.open(str(out)) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(12, 11)


def test_an_encoder_that_fails_is_reported_and_its_badge_goes_without_another_frame(tmp_path):
    """Paused, no frame is presented: the failure must still be said and REC ● taken down (it
    stayed up until the next frame, and the notice came only at exit)."""
    import shutil
    from types import SimpleNamespace

    from engine.compose import Mix
    from player.record import Recording

    notices = []
    player = SimpleNamespace(info=SimpleNamespace(fps=FPS, has_audio=False, colour=None, sar=Fraction(1), name="x", pix_fmt="yuv420p",
                                                  chroma=(2, 2)),
                             controls=SimpleNamespace(serial=0, mix=Mix(), bypass=False),
                             notice=notices.append, message=lambda s: None)
    gone = tmp_path / "gone"
    gone.mkdir()
    recording = Recording(player, None, force=False)
    recording.start(gone / "r.mp4")
    assert recording.badges() == ["REC ●"]
    shutil.rmtree(gone)  # the disk goes away: the encoder cannot open its file
    rec = recording.current
    frame = np.zeros((32, 32, 3), np.uint8)
    rec.present(0.0, 1 / FPS, frame, {})
    rec.present(1 / FPS, 1 / FPS, frame, {})  # the first frame goes to the encoder
    rec.join(timeout=30)
    assert not rec.is_alive() and rec.error is not None
    assert "REC ●" not in recording.badges()  # no present() since
    assert len(notices) == 1 and notices[0].startswith(f"recording to {gone / 'r.mp4'} failed: "), notices
    recording.check_errors()
    assert len(notices) == 1  # said once
    recording.close()


# ---- renders over 8 bits (--depth) ----------------------------------------------------------------

def _ten_bit_ramp(path: Path, n: int = 4, h: int = 48, w: int = 96, sigma: float = 2.0) -> Path:
    """A 10-bit 4:2:0 clip (x264 High 10, lossless): a grey-blue ramp with light noise, frames whose
    8-bit rounding loses their steps. Untagged, BT.601 (the guess for its size)."""
    from media import write_frames

    rng = np.random.default_rng(9)
    ramp = np.linspace(40.0, 200.0, w)[None, :, None] * np.array([0.9, 1.0, 1.1])  # (1, w, 3) 8-bit units
    frames = [np.rint(np.clip(ramp + rng.normal(0, sigma, (h, w, 3)), 0, 255) * 257).astype(np.uint16)
              for _ in range(n)]  # rgb48
    return write_frames(path, frames, pix_fmt="yuv420p10le", options={"qp": "0", "crf": "0"})


def _y4m_planes(path: Path, h: int, w: int) -> list[np.ndarray]:
    """The Y planes (int64) of a 4:2:0 .y4m in 8 or 10 bits, as written."""
    data = path.read_bytes()
    header, body = data.split(b"\n", 1)
    deep = b"C420p10" in header
    size = 2 if deep else 1
    frame_bytes = h * w * 3 // 2 * size
    out, pos = [], 0
    while pos < len(body):
        pos = body.index(b"\n", pos) + 1  # "FRAME\n"
        y = np.frombuffer(body[pos : pos + h * w * size], "<u2" if deep else np.uint8).reshape(h, w)
        out.append(y.astype(np.int64))
        pos += frame_bytes
    return out


def test_a_ten_bit_source_renders_in_ten_bits(weights, tmp_path):
    """A 10-bit source renders in 10 bits by default (--depth auto): at strength 0 a .y4m gives the
    source's own samples back within a code (an 8-bit render moves them by up to 2, and keeps only a
    quarter of the levels); an .mp4 is x264's High 10, whose denoised frames use every 10-bit level
    rather than the 8-bit steps. --depth 8 renders 8 bits."""
    src = _ten_bit_ramp(tmp_path / "ramp10.mp4")
    with av.open(str(src)) as c:
        source = [np.frombuffer(f.planes[0], "<u2").reshape(f.planes[0].height, -1)[:, : f.width].astype(np.int64)
                  for f in c.decode(video=0)]
    fine, coarse = tmp_path / "fine.y4m", tmp_path / "coarse.y4m"
    r = run_player(src, "--render", fine, "--strength", "0", "--weights", weights, check=True)
    assert "48x96" not in r.stdout and "96x48 yuv420p10le" in r.stdout
    run_player(src, "--render", coarse, "--strength", "0", "--depth", "8", "--weights", weights, check=True)
    assert fine.read_bytes().startswith(b"YUV4MPEG2 W96 H48") and b"C420p10" in fine.read_bytes()[:80]
    got, got8 = _y4m_planes(fine, 48, 96), _y4m_planes(coarse, 48, 96)
    assert len(got) == len(got8) == len(source) == 4
    assert max(np.abs(a - b).max() for a, b in zip(got, source)) <= 1
    err8 = np.concatenate([(4 * a - b).ravel() for a, b in zip(got8, source)])  # 8-bit samples in 10-bit codes
    assert np.abs(err8).max() >= 2 and len(np.unique(got[0])) > 2 * len(np.unique(got8[0]))
    tuned = tmp_path / "tuned.mp4"
    r = run_player(src, "--render", tuned, "--strength", "10", "--weights", "live", check=True)  # (the shipped model)
    assert r.stdout.strip().endswith("10 bits")
    with av.open(str(tuned)) as c:
        v = c.streams.video[0].codec_context
        assert v.pix_fmt == "yuv420p10le" and v.profile == "High 10"
        y = [np.frombuffer(f.planes[0], "<u2").reshape(f.planes[0].height, -1)[:, : f.width] for f in c.decode(video=0)]
    assert len(y) == 4 and np.mean(y[0] % 4 != 0) > 0.5  # between the 8-bit steps
    assert np.abs(y[0].astype(np.int64) - source[0]).mean() > 1  # denoised, not the source
    assert json.loads(Path(str(tuned) + ".json").read_text())["video"]["pix_fmt"] == "yuv420p10le"
    eight = tmp_path / "eight.mp4"
    run_player(src, "--render", eight, "--strength", "10", "--depth", "8", "--weights", weights, check=True)
    with av.open(str(eight)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    exact = tmp_path / "exact.mkv"  # --lossless over 8 bits: x264 at qp 0 in 10-bit YUV, the .y4m's samples exactly
    run_player(src, "--render", exact, "--strength", "0", "--lossless", "--weights", weights, check=True)
    with av.open(str(exact)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
        lossless = [np.frombuffer(f.planes[0], "<u2").reshape(f.planes[0].height, -1)[:, : f.width].astype(np.int64)
                    for f in c.decode(video=0)]
    assert len(lossless) == 4 and all(np.array_equal(a, b) for a, b in zip(lossless, got))
    assert json.loads(Path(str(exact) + ".json").read_text())["video"]["qp"] == 0


def test_a_live_recording_of_a_ten_bit_source_says_how_to_render_it_in_ten_bits(weights, tmp_path):
    """A live recording is the 8-bit frames shown; its closing line says how to render its tuning from
    the 10-bit source, and the track re-renders in 8 bits by default (the recording's frames) or in
    10 with --depth 10."""
    src = _ten_bit_ramp(tmp_path / "ramp10.mp4", n=8)
    rec = tmp_path / "live.mp4"
    r = run_player(src, "--headless", "--duration", "0.2", "--record", rec, "--weights", weights, check=True)
    assert f"--track {rec}.json --depth 10 renders it from the 10-bit source" in r.stderr
    again, deep = tmp_path / "again.mp4", tmp_path / "deep.mp4"
    run_player(src, "--render", again, "--track", f"{rec}.json", check=True)
    run_player(src, "--render", deep, "--track", f"{rec}.json", "--depth", "10", check=True)
    (_, recorded), (_, rendered) = decode_video(rec), decode_video(again)
    assert len(recorded) == len(rendered) > 0 and all(np.array_equal(a, b) for a, b in zip(recorded, rendered))
    for path, fmt in ((rec, "yuv420p"), (again, "yuv420p"), (deep, "yuv420p10le")):
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.pix_fmt == fmt and len(list(c.decode(video=0))) == len(recorded)


def test_depth_10_renders_an_eight_bit_source_without_its_steps_and_stills_in_16_bits(make_clip, weights, tmp_path):
    """--depth 10 on an 8-bit source: the blend is kept unrounded, so denoised gradients are not
    put back on 8-bit steps. A 16-bit PNG renders to a 16-bit PNG (the same samples at strength 0),
    and to 8 bits with --depth 8. --depth without --render is refused in one line."""
    src = make_clip(width=160, height=120, seconds=0.3, audio=False)
    out = tmp_path / "deep.mkv"
    run_player(src, "--render", out, "--strength", "20", "--depth", "10", "--weights", weights, check=True)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
        y = np.frombuffer((f := next(c.decode(video=0))).planes[0], "<u2").reshape(f.planes[0].height, -1)[:, : f.width]
    assert np.mean(y % 4 != 0) > 0.5
    rng = np.random.default_rng(4)
    still = (np.linspace(2000, 60000, 40)[None, :, None] + rng.normal(0, 300, (30, 40, 3))).clip(0, 65535).astype(np.uint16)
    png = tmp_path / "capture16.png"
    frame = av.VideoFrame.from_ndarray(still, format="rgb48le").reformat(format="rgb48be")
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = 40, 30, "rgb48be"
    png.write_bytes(b"".join(bytes(p) for p in [*cc.encode(frame), *cc.encode(None)]))
    same, same8 = tmp_path / "same.png", tmp_path / "same8.png"
    r = run_player(png, "--render", same, "--strength", "0", "--weights", weights, check=True)
    assert "16 bits" in r.stdout
    run_player(png, "--render", same8, "--strength", "0", "--depth", "8", "--weights", weights, check=True)
    with av.open(str(same)) as c:
        f = next(c.decode(video=0))
        assert f.format.name == "rgb48be" and np.array_equal(f.to_ndarray(format="rgb48le"), still)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(same8)), np.rint(still / 257))  # (swscale's v/256 was up to 1.4 codes high)
    r = run_player(src, "--headless", "--record", tmp_path / "r.mkv", "--depth", "10", "--weights", weights)
    assert r.returncode != 0 and "--depth needs --render" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "error" in ln]) == 1 and not list(tmp_path.glob("*r.mkv*"))


def test_depth_auto_follows_a_recordings_track_and_the_source():
    """--depth auto: a re-render from a recording's track keeps its depth (so it gives the same frames),
    else the source's, --lossless too (10-bit YUV samples exactly, or the 8-bit RGB frames)."""
    from player.render import _deep

    assert _deep("auto", 10, None, False) and not _deep("auto", 8, None, False)
    assert not _deep("auto", 10, {"video": {"pix_fmt": "yuv420p"}}, False)
    assert _deep("auto", 8, {"video": {"pix_fmt": "yuv420p10le"}}, False)
    assert _deep("10", 10, {"video": {"pix_fmt": "yuv420p"}}, False) and _deep("10", 8, None, False)
    assert not _deep("8", 10, None, False) and _deep("auto", 10, None, True) and not _deep("auto", 8, None, True)
    assert not _deep("auto", 10, {"video": {"pix_fmt": "rgb24", "codec": "libx264rgb"}}, True)


def test_recordings_and_renders_keep_the_sources_chroma_subsampling(weights, tmp_path):
    """A 4:2:2 source (ProRes, 10-bit) renders to 4:2:2 (x264's High 4:2:2, 10-bit), and at strength 0
    a .y4m gives its samples back within a code, chroma included (4:2:0 halved the chroma's rows);
    a 4:4:4 source records in 4:4:4. Where the size cannot hold the subsampling (an odd width), 4:4:4."""
    from media import write_frames
    from player.record import video_pix_fmt

    assert [video_pix_fmt(96, 64, c) for c in ((2, 2), (1, 2), (1, 1), (2, 1))] == ["yuv420p", "yuv422p", "yuv444p", "yuv444p"]
    assert video_pix_fmt(95, 64, (1, 2), 10) == "yuv444p10le" and video_pix_fmt(96, 63, (2, 2)) == "yuv444p"
    assert video_pix_fmt(96, 63, (1, 2)) == "yuv422p"
    rng = np.random.default_rng(5)
    smooth = np.linspace(60, 190, 96)[None, :, None] * np.array([1.0, 0.8, 1.2])  # (1, 96, 3) in 8-bit units
    frames = [np.rint(np.clip(smooth + rng.normal(0, 4, (64, 96, 3)), 0, 255) * 257).astype(np.uint16) for _ in range(3)]
    src = write_frames(tmp_path / "pro.mov", frames, codec="prores_ks", pix_fmt="yuv422p10le")
    with av.open(str(src)) as c:
        first = next(c.decode(video=0))
        planes = [np.frombuffer(p, "<u2").reshape(p.height, -1)[:, : p.width].astype(np.int64) for p in first.planes]
    same, tuned = tmp_path / "same.y4m", tmp_path / "tuned.mp4"
    run_player(src, "--render", same, "--strength", "0", "--weights", weights, check=True)
    data = same.read_bytes()
    assert b"C422p10" in data[:80]
    body = data[data.index(b"FRAME\n") + 6 :]
    y = np.frombuffer(body[: 64 * 96 * 2], "<u2").reshape(64, 96)
    u = np.frombuffer(body[64 * 96 * 2 : 64 * 96 * 3], "<u2").reshape(64, 48)
    assert np.abs(y - planes[0]).max() <= 1 and np.abs(u - planes[1]).max() <= 1
    run_player(src, "--render", tuned, "--strength", "10", "--weights", weights, check=True)
    with av.open(str(tuned)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.pix_fmt, cc.profile) == ("yuv422p10le", "High 4:2:2")
    src444 = write_frames(tmp_path / "cap444.mp4", [(f >> 8).astype(np.uint8) for f in frames], pix_fmt="yuv444p")
    rec = tmp_path / "rec.mkv"
    run_player(src444, "--headless", "--duration", "0.1", "--record", rec, "--weights", weights, check=True)
    with av.open(str(rec)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
