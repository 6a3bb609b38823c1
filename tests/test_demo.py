"""Tests for player/demo.py: the built-in synthetic test source."""
from __future__ import annotations


import numpy as np
import pytest

from player.demo import CHANNEL_CORR, DemoSource


@pytest.fixture(scope="module")
def small():
    return DemoSource(320, 240, fps=30.0, duration=4.0, seed=3)


@pytest.fixture(scope="module")
def hd():
    return DemoSource()  # 1280x720, the player's default


# ------------------------------------------------------------------ API, shapes, dtypes
def test_attributes_and_shapes(small):
    d = small
    assert d.name == "demo"
    assert (d.width, d.height, d.fps, d.duration) == (320, 240, 30.0, 4.0)
    assert (d.sample_rate, d.channels) == (48000, 2)
    assert d.num_frames == 120
    noisy, clean = d.frame(0)
    for a in (noisy, clean):
        assert a.shape == (240, 320, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    assert d.pts(0) == 0.0 and d.pts(45) == pytest.approx(1.5)
    assert d.noise_sigma_map.shape == (240, 320) and d.noise_sigma_map.dtype == np.float32
    assert 10.0 <= d.nominal_sigma <= 18.0
    assert np.array_equal(d.clean(7), d.frame(7)[1])


def test_defaults_are_720p(hd):
    assert (hd.width, hd.height, hd.fps, hd.num_frames) == (1280, 720, 30.0, 600)
    noisy, clean = hd.frame(123)
    assert noisy.shape == clean.shape == (720, 1280, 3)


@pytest.mark.parametrize("w,h", [(17, 33), (33, 17), (1, 1), (2, 3), (640, 360), (321, 239)])
def test_odd_sizes(w, h):
    d = DemoSource(w, h, duration=1.0, seed=1)
    for i in (0, 1, d.num_frames - 1, d.num_frames + 2):
        noisy, clean = d.frame(i)
        assert noisy.shape == clean.shape == (h, w, 3)
        assert noisy.dtype == clean.dtype == np.uint8
    assert np.array_equal(d.frame(2)[0], DemoSource(w, h, duration=1.0, seed=1).frame(2)[0])


def test_returned_arrays_are_fresh(small):
    noisy, clean = small.frame(0)
    keep_n, keep_c = noisy.copy(), clean.copy()
    small.frame(50)
    assert np.array_equal(noisy, keep_n) and np.array_equal(clean, keep_c)


# ------------------------------------------------------------------ determinism, motion, looping
def test_deterministic_for_seed(small):
    other = DemoSource(320, 240, fps=30.0, duration=4.0, seed=3)
    for i in (0, 17, 119):
        a, b = small.frame(i), other.frame(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(small.frame(5)[0], small.frame(5)[0])  # and across calls
    diff_seed = DemoSource(320, 240, fps=30.0, duration=4.0, seed=4)
    assert not np.array_equal(small.frame(5)[0], diff_seed.frame(5)[0])


def test_motion_and_fresh_noise(small):
    c0, c1, c10 = small.clean(0), small.clean(1), small.clean(10)
    assert not np.array_equal(c0, c10)  # the chart pans and the object moves
    moved = np.mean(np.any(c0 != c10, axis=-1))
    assert moved > 0.05
    # the pan is slow: consecutive frames are similar, not a jump cut
    assert np.mean(np.abs(c0.astype(np.int16) - c1)) < np.mean(np.abs(c0.astype(np.int16) - c10))
    # the noise differs from frame to frame even where the clean pixels agree
    n0, n1 = small.frame(0)[0], small.frame(1)[0]
    same = np.all(c0 == c1, axis=-1)
    assert same.sum() > 1000
    r0 = n0.astype(np.float64)[same] - c0[same]
    r1 = n1.astype(np.float64)[same] - c1[same]
    assert abs(np.corrcoef(r0.ravel(), r1.ravel())[0, 1]) < 0.1


def test_loop_wraps_and_no_loop_raises(small):
    n = small.num_frames
    for i in (0, 5, n - 1):
        a, b = small.frame(i), small.frame(i + n)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(small.frame(-1)[1], small.frame(n - 1)[1])
    once = DemoSource(32, 24, duration=1.0, loop=False)
    once.frame(once.num_frames - 1)
    with pytest.raises(IndexError):
        once.frame(once.num_frames)


# ------------------------------------------------------------------ noise statistics
def _residuals(d, value, frames=(0, 1, 2, 3)):
    """Residuals noisy - clean at pixels whose clean value is (value,)*3, and predicted std there."""
    res, pred = [], []
    for i in frames:
        noisy, clean = d.frame(i)
        m = np.all(clean == value, axis=-1)
        res.append(noisy.astype(np.float64)[m] - clean[m])
        pred.append(d.sigma_at(value)[m])
    return np.concatenate(res), np.concatenate(pred)


def test_noise_level_on_flat_mid_grey(small):
    res, pred = _residuals(small, 128)  # the chart's flat background is exactly 128
    assert res.shape[0] > 20000
    measured = res.std()
    expected = float(np.sqrt(np.mean(pred.astype(np.float64) ** 2)))
    assert 10.0 <= measured <= 18.0, measured  # the documented range
    assert measured == pytest.approx(expected, rel=0.05)
    assert abs(res.mean()) < 0.3  # unbiased
    corr = np.corrcoef(res.T)
    off = corr[np.triu_indices(3, 1)]
    assert np.all(np.abs(off - CHANNEL_CORR) < 0.05), corr


@pytest.mark.parametrize("value", [46, 93, 162, 209])  # grey-scale steps, away from clipping
def test_noise_is_signal_dependent(small, value):
    res, pred = _residuals(small, value, frames=range(0, 40, 4))
    assert res.shape[0] > 2000
    expected = float(np.sqrt(np.mean(pred.astype(np.float64) ** 2)))
    assert res.std() == pytest.approx(expected, rel=0.1)


def test_noise_stronger_at_bottom_and_corners(small):
    g = small.gain_map
    assert g.min() == pytest.approx(1.0) and g.max() == pytest.approx(1.8, abs=1e-5)
    h, w = g.shape
    assert g[-1, 0] > g[h // 2, w // 2] and g[-1, w // 2] > g[0, w // 2]
    res_top, res_bot = [], []
    for i in range(0, 40, 4):
        noisy, clean = small.frame(i)
        m = np.all(clean == 128, axis=-1)
        r = noisy.astype(np.float64) - clean
        res_top.append(r[: h // 3][m[: h // 3]])
        res_bot.append(r[-h // 3:][m[-h // 3:]])
    assert np.concatenate(res_bot).std() > 1.15 * np.concatenate(res_top).std()


def test_clean_is_noise_free_reference(small):
    # the clean frame has exact flat patches (the background) - no noise in the reference
    clean = small.clean(0)
    assert np.mean(np.all(clean == 128, axis=-1)) > 0.05
    assert not np.array_equal(small.frame(0)[0], clean)


# ------------------------------------------------------------------ audio
def test_audio_shape_and_continuity(small):
    n = 4801
    a = small.audio(0, n)
    assert a.shape == (n, 2) and a.dtype == np.float32
    assert np.array_equal(np.concatenate([small.audio(0, n), small.audio(n, n)]), small.audio(0, 2 * n))
    start = 123_457
    assert np.array_equal(np.concatenate([small.audio(start, 1000), small.audio(start + 1000, 37)]),
                          small.audio(start, 1037))
    assert np.array_equal(a[:, 0], a[:, 1])
    assert small.audio(0, 0).shape == (0, 2)


def test_audio_level_and_beeps(small):
    sr = small.sample_rate
    a = small.audio(0, 3 * sr)[:, 0].astype(np.float64)
    amp = 10 ** (-12 / 20)
    assert np.abs(a).max() <= amp + 1e-4
    tone = a[int(0.3 * sr):int(0.8 * sr)]
    assert np.abs(tone).max() == pytest.approx(amp, rel=0.01)  # -12 dBFS sine

    def crossings(x):
        return int(np.sum(np.signbit(x[1:]) != np.signbit(x[:-1])))

    win = int(0.02 * sr)  # 20 ms: 1 kHz → ~40 crossings, 440 Hz → ~17.6
    for s in (0, 1, 2):
        beep = a[s * sr + int(0.01 * sr): s * sr + int(0.01 * sr) + win]
        quiet = a[s * sr + int(0.4 * sr): s * sr + int(0.4 * sr) + win]
        assert 36 <= crossings(beep) <= 42
        assert 15 <= crossings(quiet) <= 20


def test_audio_loops_with_video_and_flash_matches_beep(small):
    loop = int(round(small.num_frames / small.fps * small.sample_rate))
    assert np.array_equal(small.audio(loop - 100, 300), np.concatenate([small.audio(loop - 100, 100), small.audio(0, 200)]))
    assert small.flash(0) and small.flash(30) and small.flash(31) and not small.flash(15)
    clean_flash, clean_dark = small.clean(30), small.clean(15)
    s = small._slate
    hb, m = s["hb"], s["m"]
    sq = (slice(m, m + hb), slice(m, m + hb))
    assert np.all(clean_flash[sq] == 255) and np.all(clean_dark[sq] < 100)


# ------------------------------------------------------------------ speed (lenient: CI machines vary)


def test_banded_threads_give_the_single_thread_frame(monkeypatch):
    """The noisy frame is made in row bands on a thread pool; the object and the slate (which cross
    band edges) must come out exactly as on one thread, and close() must end the pool."""
    from player import demo

    a = DemoSource(960, 540, fps=60.0, duration=2.0, seed=5)
    monkeypatch.setattr(demo, "BAND_THREADS", 2)
    monkeypatch.setattr(demo, "THREADS_ABOVE", 0)
    threaded = [a.frame(i) for i in (0, 31, 77)]
    workers = list(a._pool._threads)
    assert workers and all(t.is_alive() and t.name.startswith("demo-noise") for t in workers)
    a.close()
    assert not any(t.is_alive() for t in workers)
    monkeypatch.setattr(demo, "BAND_THREADS", 1)
    b = DemoSource(960, 540, fps=60.0, duration=2.0, seed=5)
    for (n1, c1), i in zip(threaded, (0, 31, 77)):
        n2, c2 = b.frame(i)
        assert np.array_equal(c1, c2) and np.array_equal(n1, n2)
    assert b._pool is None
