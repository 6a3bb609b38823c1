"""player.outputs.window: view composition, NullWindow, Window (SDL dummy driver), a real X window."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from player.outputs.window import (DIFF_GAIN, VIEWS, Event, Hud, NullWindow, compose_view, crop_box,
                                   crop_rect, fit_size, letterbox_rect)

REPO = Path(__file__).resolve().parents[1]


def frames(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    o = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    t = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return o, t


def up(a, z):
    return np.repeat(np.repeat(a, z, axis=0), z, axis=1)


# =========================================================================== compose_view

def test_tuned_and_original_views():
    o, t = frames()
    assert np.array_equal(compose_view(o, t, "tuned"), t)
    assert np.array_equal(compose_view(o, t, "original"), o)


@pytest.mark.parametrize("split", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_split_view(split):
    o, t = frames()
    out = compose_view(o, t, "split", split=split)
    sx = round(split * 64)
    assert out.shape == t.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, :sx], o[:, :sx])
    assert np.array_equal(out[:, sx:], t[:, sx:])


@pytest.mark.parametrize("h,w", [(48, 64), (45, 67)])
def test_side_view(h, w):
    o, t = frames(h, w)
    out = compose_view(o, t, "side")
    assert out.shape == (h, w, 3)
    half = w // 2
    hh = (h + 1) // 2
    top = (h - hh) // 2
    assert np.array_equal(out[top:top + hh, :half], o[::2, ::2][:, :half])
    assert np.array_equal(out[top:top + hh, half:], t[::2, ::2][:, :w - half])
    assert not out[:top].any() and not out[top + hh:].any()   # black bars above and below


@pytest.mark.parametrize("kernel", ["native", "numpy"])
def test_diff_view_values(kernel, monkeypatch):
    """The same values from the engine's one-pass kernel and the NumPy path, whole frames and the
    strided crops of a zoomed view."""
    from engine import native

    if kernel == "native" and native.library() is None:
        pytest.skip(f"native kernels not built: {native.why_not}")
    if kernel == "numpy":
        monkeypatch.setattr(native, "absdiff4", lambda a, b: None)
    o, t = frames(64, 96, seed=3)
    # make sure every difference magnitude 0..255 occurs, both signs
    o[0, :, 0] = np.arange(96) * 2
    t[0, :, 0] = 0
    t[1, :, 0] = np.arange(96) * 2 + 63
    o[1, :, 0] = 0
    out = compose_view(o, t, "diff")
    ref = np.clip(np.abs(t.astype(np.int16) - o) * DIFF_GAIN, 0, 255).astype(np.uint8)
    assert DIFF_GAIN == 4
    assert out.dtype == np.uint8 and np.array_equal(out, ref)
    assert not compose_view(t, t, "diff").any()
    zoomed = compose_view(o, t, "diff", zoom=2, center=(0.3, 0.6))  # from a crop with strided rows
    assert np.array_equal(zoomed, compose_view(o, ref, "tuned", zoom=2, center=(0.3, 0.6)))  # = the diff, zoomed


def test_zoom2_centre_is_pixel_exact_crop():
    o, t = frames(48, 64)
    out = compose_view(o, t, "tuned", zoom=2, center=(0.5, 0.5))
    assert out.shape == t.shape
    assert np.array_equal(out, up(t[12:36, 16:48], 2))
    out = compose_view(o, t, "original", zoom=2, center=(0.25, 0.75))
    y0, x0 = 36 - 12, 16 - 16          # centre (16, 36): crop 32x24 -> x0 0, y0 24
    assert crop_rect(48, 64, 2, (0.25, 0.75)) == (24, 0, 24, 32)
    assert np.array_equal(out, up(o[y0:y0 + 24, x0:x0 + 32], 2))


@pytest.mark.parametrize("center,yx", [((0.0, 0.0), (0, 0)), ((1.0, 1.0), (36, 48)),
                                       ((0.02, 0.98), (36, 0)), ((-3, 7), (36, 0))])
def test_zoom4_clamps_at_the_edges(center, yx):
    o, t = frames(48, 64)
    out = compose_view(o, t, "tuned", zoom=4, center=center)
    y0, x0 = yx
    assert crop_rect(48, 64, 4, center) == (y0, x0, 12, 16)
    assert np.array_equal(out, up(t[y0:y0 + 12, x0:x0 + 16], 4))


def test_zoom_on_odd_sizes_keeps_the_frame_size():
    o, t = frames(45, 67)
    for z in (2, 4):
        for c in ((0, 0), (0.5, 0.5), (1, 1)):
            y0, x0, ch, cw = crop_rect(45, 67, z, c)
            assert 0 <= y0 <= 45 - ch and 0 <= x0 <= 67 - cw
            out = compose_view(o, t, "tuned", zoom=z, center=c)
            assert out.shape == (45, 67, 3)
            assert np.array_equal(out, up(t[y0:y0 + ch, x0:x0 + cw], z)[:45, :67])


@pytest.mark.parametrize("view", ["split", "side", "diff"])
def test_zoom_applies_the_same_crop_to_both_frames(view):
    o, t = frames(48, 64, seed=5)
    y0, x0, ch, cw = crop_rect(48, 64, 2, (0.7, 0.3))
    want = up(compose_view(o[y0:y0 + ch, x0:x0 + cw].copy(), t[y0:y0 + ch, x0:x0 + cw].copy(),
                           view, split=0.3), 2)
    got = compose_view(o, t, view, split=0.3, zoom=2, center=(0.7, 0.3))
    assert np.array_equal(got, want)


def test_compose_view_rejects_bad_input():
    o, t = frames()
    with pytest.raises(ValueError, match="view"):
        compose_view(o, t, "sideways")
    with pytest.raises(ValueError, match="shape"):
        compose_view(o[:10], t)
    with pytest.raises(ValueError, match="uint8"):
        compose_view(o.astype(np.float32), t)
    with pytest.raises(ValueError, match="zoom"):
        compose_view(o, t, zoom=0)


def test_sizes():
    assert fit_size(1280, 720) == (1280, 720)
    assert fit_size(3840, 2160) == (1600, 900)
    assert fit_size(2000, 500) == (1600, 400)
    assert fit_size(1000, 2000) == (450, 900)
    assert letterbox_rect(320, 240, 320, 240) == (0, 0, 320, 240)
    assert letterbox_rect(320, 180, 320, 240) == (0, 30, 320, 180)
    assert letterbox_rect(100, 100, 300, 200) == (50, 0, 200, 200)


# =========================================================================== NullWindow

def test_null_window_records_frames():
    o, t = frames()
    w = NullWindow(64, 48)
    assert w.size == (64, 48) and w.poll() == []
    assert w.screenshot().shape == (48, 64, 3)
    hud = Hud(lines=["x"], badges=["PAUSED"])
    for i, view in enumerate(VIEWS):
        w.show(o, t, view=view, split=0.3, zoom=2, center=(0.2, 0.6), hud=hud, help_lines=["h"])
        assert w.frames_shown == i + 1
        assert np.array_equal(w.last, compose_view(o, t, view, 0.3, 2, (0.2, 0.6)))
        assert w.screenshot() is w.last
    assert w.last_hud is hud and w.last_help == ["h"]
    w.show(o, t)
    assert w.last is not t and np.array_equal(w.last, t)   # a copy: the caller may reuse t
    assert NullWindow(3840, 2160).size == (1600, 900)
    w.close()
    w.close()


# =========================================================================== Window, SDL dummy driver

@pytest.fixture
def window_cls(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from player.outputs.window import Window
    made = []

    def make(*a, **kw):
        w = Window(*a, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def sample_hud(**kw):
    d = dict(lines=["clip 320x240", "strength 22.0 σ 3.1 ×1.00"],
             bars=[("1", 0.5, 1.0, False), ("2", -0.4, 1.0, True), ("4", 1.7, 1.0, False)],
             position=12.5, duration=60.0, cache=[(10.0, 20.0), (30.0, 31.0)], loop=(11.0, 15.0),
             badges=["PAUSED", "BYPASS", "REC ●"], message="strength 22.0")
    d.update(kw)
    return Hud(**d)


def test_window_shows_frame_pixels_exactly(window_cls):
    o, t = frames(240, 320, seed=7)
    w = window_cls(320, 240)
    assert w.size == (320, 240)
    w.show(o, t)                                   # no HUD: the whole window is the frame
    assert np.array_equal(w.screenshot(), t)
    w.show(o, t, hud=sample_hud())
    shot = w.screenshot()
    assert shot.shape == (240, 320, 3)
    # bottom-right area above the timeline: not covered by the HUD
    assert np.array_equal(shot[130:205, 180:], t[130:205, 180:])
    assert not np.array_equal(shot[:20, :60], t[:20, :60])            # the panel is there
    assert not np.array_equal(shot[-10:], t[-10:])                    # the timeline is there


def test_window_help_page_and_every_view(window_cls):
    o, t = frames(240, 320, seed=8)
    w = window_cls(320, 240)
    help_lines = [f"key{i:<3} does thing {i}" for i in range(60)]
    for view in VIEWS:
        for zoom in (1, 2, 4):
            w.show(o, t, view=view, split=0.3, zoom=zoom, center=(0.8, 0.1), hud=sample_hud(),
                   help_lines=help_lines)
    plain = w.screenshot()
    w.show(o, t, hud=sample_hud(message="", badges=[]), help_lines=None)
    assert not np.array_equal(plain, w.screenshot())


def test_the_help_page_fits_a_small_window(window_cls):
    """The whole help page (every binding) fits an 800×450 window: the font shrinks and the page
    goes to two columns (it used to be cut off at 800 px)."""
    from player.keymap import help_lines

    o, t = frames(450, 800, seed=9)
    w = window_cls(800, 450)
    w.show(o, t, help_lines=help_lines())
    assert w.help_fits
    w.show(o, t, help_lines=[f"key {'x' * 300}"])  # cannot fit: cut, not an error
    assert not w.help_fits


@pytest.mark.parametrize("size", [(640, 360), (320, 240)])
def test_a_help_page_longer_than_a_small_window_turns_its_pages(window_cls, size):
    """At 640×360 the bindings do not fit at a readable size: the page is cut into pages that `?`
    turns (the last one closes), each line whole — not cut off at the bottom as it was; at
    320×240 long lines wrap under their column (they were cut at the window's edge)."""
    from player.keymap import help_lines

    o, t = frames(size[1], size[0], seed=11)
    w = window_cls(*size)
    w.show(o, t, help_lines=help_lines())
    first = w.screenshot().copy()
    assert w.help_pages >= 2 and w.help_fits
    shots = [first]
    for _ in range(w.help_pages - 1):
        assert w.next_help_page()
        w.show(o, t, help_lines=help_lines())
        shots.append(w.screenshot().copy())
    assert not any(np.array_equal(a, b) for a, b in zip(shots, shots[1:]))
    assert not w.next_help_page() and w.help_page == 0  # past the last page: the caller closes it
    w.show(o, t, help_lines=help_lines())
    assert np.array_equal(w.screenshot(), first)
    w.close()  # (one SDL display)
    if size != (640, 360):
        return
    big = window_cls(800, 450)
    big.show(o, t, help_lines=help_lines())
    assert big.help_pages == 1 and not big.next_help_page()


@pytest.mark.parametrize("size", [(320, 240), (480, 270), (1280, 720)])
def test_badges_clear_the_panel_the_timeline_and_each_other(window_cls, size):
    """Eight badges with a full HUD: beside the panel where there is room, else in rows below it —
    at 320×240 they were stacked one per row into the timeline."""
    w_, h_ = size
    o, t = frames(h_, w_, seed=12)
    w = window_cls(w_, h_)
    badges = ["PAUSED", "BYPASS", "SPLIT", "2:1", "0.5×", "MUTE", "PRESET A", "REC ●"]
    w.show(o, t, hud=sample_hud(lines=["strength 10.4 (AutoTune) removed σ 9.8", "character +0.00 luma ×1.00"],
                                badges=badges, message=""))
    rects = w.badge_rects
    assert len(rects) == len(badges)
    timeline_top = h_ - w._timeline_height(max(12, min(20, h_ // 45)))
    for i, r in enumerate(rects):
        assert not r.colliderect(w.panel_rect) and r.bottom <= timeline_top and r.right <= w_, (i, r)
        assert not any(r.colliderect(q) for q in rects[i + 1:]), (i, r)
    assert sorted(rects, key=lambda r: (r.y, r.x)) == rects  # read in the order given


def test_a_hidden_hud_still_shows_the_message_and_key_badges(window_cls):
    o, t = frames(240, 320, seed=10)
    w = window_cls(320, 240)
    w.show(o, t, hud=Hud(badges=["BYPASS"], message="bypass on: the original is shown", timeline=False))
    shot = w.screenshot()
    assert not np.array_equal(shot[:40], t[:40])  # badge and message at the top
    assert np.array_equal(shot[-20:], t[-20:])  # no timeline


@pytest.mark.parametrize("view", [v for v in VIEWS if v != "side"])  # the window's side view: below
@pytest.mark.parametrize("zoom", [1, 2, 4])
def test_window_draws_what_compose_view_composes(window_cls, view, zoom):
    o, t = frames(240, 320, seed=9)
    w = window_cls(320, 240)
    w.show(o, t, view=view, split=0.3, zoom=zoom, center=(0.8, 0.1))
    shot = w.screenshot()
    want = compose_view(o, t, view, 0.3, zoom, (0.8, 0.1))
    # the top 110 rows are free of labels; the split line is one column
    mask = np.ones((110, 320), bool)
    if view == "split":
        y0, x0, ch, cw = crop_rect(240, 320, zoom, (0.8, 0.1))
        lx = round(0.3 * cw) * zoom
        mask[:, max(0, lx - 1):lx + 2] = False
    assert np.array_equal(shot[:110][mask], want[:110][mask])


@pytest.mark.parametrize("ratio", [1, 2, 4, 8])
def test_zoom_is_screen_pixels_per_frame_pixel(window_cls, ratio):
    """Zoom N:1 puts each frame pixel on N×N screen pixels whatever the window's size (it was N
    times the fitted size: "1:1" was fit, "4:1" 8 screen pixels at 2× fit), around the centre."""
    o, t = frames(240, 320, seed=12)
    w = window_cls(640, 360)                                  # the frame fits at 1.5×
    w.show(o, t, zoom=ratio, center=(0.5, 0.5))
    shot = w.screenshot()
    ch, cw = min(240, -(-360 // ratio)), min(320, -(-640 // ratio))
    y0, x0, _, _ = crop_box(240, 320, ch, cw, (0.5, 0.5))
    dh, dw = min(360, ch * ratio), min(640, cw * ratio)
    y, x = (360 - dh) // 2, (640 - dw) // 2
    want = up(t[y0:y0 + ch, x0:x0 + cw], ratio)[:dh, :dw]
    assert np.array_equal(shot[y:y + dh, x:x + dw], want)
    if ratio == 1:                                            # smaller than the window: black around it
        assert (dh, dw) == (240, 320) and not shot[:y].any() and not shot[:, :x].any()
    w.show(o, t, zoom=0)                                      # fit: 1.5× (pygame's nearest scaling)
    assert w.screenshot()[:, 80:560].std() > 0 and not w.screenshot()[:, :80].any()


def test_split_and_side_labels_say_bypass(window_cls):
    """With bypass on both halves are the original: the tuned side's label says so."""
    o, t = frames(240, 320, seed=13)
    w = window_cls(320, 240)
    shots = []
    for label in ("tuned", "original (bypass)"):
        w.show(o, o, view="split", split=0.3, tuned_label=label)
        shots.append(w.screenshot()[200:, 100:].astype(int))  # right of the line, the labels' row
    assert np.abs(shots[0] - shots[1]).sum() > 0


@pytest.mark.parametrize("ratio", [0, 1, 2])
def test_side_by_side_shows_each_frame_at_full_resolution(window_cls, ratio):
    """Each half of the window holds one frame at `ratio` screen pixels per frame pixel (fit: the
    frame fitted to its half) — it was one frame-size image of two half-resolution halves."""
    o, t = frames(240, 320, seed=14)
    w = window_cls(640, 240)
    w.show(o, t, view="side", zoom=ratio, center=(0.5, 0.5))
    shot = w.screenshot()[:110]                               # above the labels
    if ratio in (0, 1):                                       # a 320×240 half holds the frame exactly
        want_o, want_t = o[:110], t[:110]
    else:                                                     # 160×120 frame pixels around the centre, ×2
        want_o, want_t = up(o[60:180, 80:240], 2)[:110], up(t[60:180, 80:240], 2)[:110]
    assert np.array_equal(shot[:, :320], want_o) and np.array_equal(shot[:, 320:], want_t)


def test_window_letterboxes_and_scales(window_cls):
    w = window_cls(320, 240)
    o, t = frames(120, 160, seed=10)                # half size: nearest upscale x2, exact
    w.show(o, t)
    assert np.array_equal(w.screenshot(), up(t, 2))
    o, t = frames(180, 320, seed=11)                # 16:9 in 4:3: bars top and bottom
    w.show(o, t)
    shot = w.screenshot()
    assert not shot[:30].any() and not shot[210:].any()
    assert np.array_equal(shot[30:210], t)


def test_window_initial_size_fits_1600x900(window_cls):
    w = window_cls(3840, 2160)
    assert w.size == (1600, 900)
    o, t = frames(2160, 3840, seed=1)
    w.show(o, t, hud=sample_hud())
    assert w.screenshot().shape == (900, 1600, 3)


def test_window_events(window_cls):
    import pygame
    w = window_cls(320, 240)
    o, t = frames(240, 320)
    w.show(o, t, hud=sample_hud())
    pygame.event.clear()
    K = pygame.KEYDOWN

    def key(k, mod=0, uni=""):
        pygame.event.post(pygame.event.Event(K, key=k, mod=mod, unicode=uni, scancode=0))

    key(pygame.K_SPACE, 0, " ")
    key(pygame.K_q, 0, "q")
    key(pygame.K_q, pygame.KMOD_LSHIFT, "Q")
    key(pygame.K_SLASH, pygame.KMOD_LSHIFT, "?")
    key(pygame.K_COMMA, 0, ",")
    key(pygame.K_RIGHTBRACKET, 0, "]")
    key(pygame.K_3, 0, "3")
    key(pygame.K_LEFT)
    key(pygame.K_UP)
    key(pygame.K_TAB, 0, "\t")
    key(pygame.K_ESCAPE, 0, "\x1b")
    key(pygame.K_F1)
    key(pygame.K_PAGEUP)
    key(pygame.K_BACKSPACE, 0, "\x08")
    key(pygame.K_s, pygame.KMOD_LCTRL, "\x13")
    key(pygame.K_s, pygame.KMOD_LCTRL | pygame.KMOD_LSHIFT, "\x13")
    key(pygame.K_LEFT, pygame.KMOD_LALT)
    key(pygame.K_LEFT, pygame.KMOD_LSHIFT)
    key(pygame.K_LSHIFT, pygame.KMOD_LSHIFT)           # a modifier alone: nothing
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(10, 10), rel=(1, 1), buttons=(0, 0, 0)))
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(160, 60), rel=(1, 1), buttons=(1, 0, 0)))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(80, 180), button=3))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(319, 239), button=1))
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=1, flipped=False))
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    evs = w.poll()
    keys = [e.key for e in evs if e.kind == "key"]
    assert keys == ["space", "q", "Q", "?", ",", "]", "3", "LEFT", "UP", "TAB", "ESCAPE", "F1",
                    "PAGE UP", "BACKSPACE", "ctrl+s", "ctrl+S", "alt+LEFT", "shift+LEFT", "WHEEL_UP"]
    mouse = [e for e in evs if e.kind == "mouse"]
    assert len(mouse) == 1                                  # coalesced: the latest position
    assert mouse[0].x == pytest.approx(0.5, abs=0.01) and mouse[0].y == pytest.approx(0.25, abs=0.01)
    assert mouse[0].button == 1
    clicks = [e for e in evs if e.kind == "click"]
    assert clicks[0].key == "" and clicks[0].button == 3
    assert (clicks[0].x, clicks[0].y) == (pytest.approx(0.25, abs=0.01), pytest.approx(0.75, abs=0.01))
    assert clicks[1].key == "timeline" and clicks[1].x == pytest.approx(1.0, abs=0.02)
    assert evs[-1] == Event("quit")
    assert w.poll() == []


def test_the_hud_leaves_its_detail_lines_out_of_a_small_window(window_cls):
    """At 640×360 the full HUD covered 43 % of the picture: the pipeline's numbers (details) go
    where the panel would take more than HUD_MAX_SHARE of the height; the tuning lines stay."""
    from player.outputs.window import HUD_MAX_SHARE
    hud = sample_hud(lines=["strength 22.0", "character +0.00", "noise σ 8"],
                     details=["clip 1280×720", "display 30 fps", "backbone 30 ms"],
                     bars=[(f"{i}", 0.2, 1.0, i == 1) for i in range(6)])
    sizes = {}
    for size in ((640, 360), (1280, 720)):
        w = window_cls(*size)
        o, t = frames(size[1], size[0])
        w.show(o, t, hud=hud)
        sizes[size] = w.hud_rows
        shot = w.screenshot()
        dark = (np.abs(shot.astype(int) - t).sum(axis=2) > 0)[: size[1] // 2, 8]  # the panel's left edge column
        assert dark.mean() <= HUD_MAX_SHARE * 2 + 0.05  # of the top half: the panel, not more
        w.close()
    assert sizes == {(640, 360): 3, (1280, 720): 6}


def test_a_double_click_on_the_picture_is_mpvs_key_event(window_cls):
    """Two left presses close in time and place give MBTN_LEFT_DBL (bound to fullscreen) after the
    second click; a third press starts a new pair; presses apart, or on the timeline, do not."""
    import pygame
    w = window_cls(320, 240)
    w.show(*frames(240, 320), hud=sample_hud())
    pygame.event.clear()

    def press(pos, button=1):
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=button))

    press((100, 100)), press((101, 100)), press((101, 100))
    assert [(e.kind, e.key) for e in w.poll()] == [("click", ""), ("click", ""), ("key", "MBTN_LEFT_DBL"), ("click", "")]
    time.sleep(0.5)
    press((100, 100))                                       # too late after the last press
    press((160, 100))                                       # too far away
    press((160, 100), button=3)                             # not the left button
    press((160, 235)), press((160, 235))                    # on the timeline: seeks, no fullscreen
    evs = w.poll()
    assert not [e for e in evs if e.kind == "key"], evs
    assert [e.key for e in evs if e.kind == "click"][-2:] == ["timeline", "timeline"]


def test_a_held_key_repeats_until_released_or_a_new_window(window_cls):
    """Repeats are made by the window and marked (the player leaves toggles unrepeated, as mpv);
    they stop at the key's release, and at fullscreen, whose new window never sees the release
    (pygame's own repeat toggled fullscreen every 40 ms after one press of f)."""
    import pygame
    w = window_cls(320, 240)
    pygame.event.clear()

    def down(k, uni):
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=k, mod=0, unicode=uni, scancode=0))

    down(pygame.K_UP, "")
    assert [(e.key, e.repeat) for e in w.poll()] == [("UP", False)]
    assert w.poll() == []                                    # not before the repeat delay
    time.sleep(0.45)
    assert [(e.key, e.repeat) for e in w.poll()] == [("UP", True)]
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_UP, mod=0, scancode=0))
    w.poll()
    time.sleep(0.1)
    assert w.poll() == []                                    # released: no more repeats
    down(pygame.K_f, "f")
    assert [e.key for e in w.poll()] == ["f"]
    w.set_fullscreen(True)
    time.sleep(0.45)
    assert [e for e in w.poll() if e.kind == "key"] == []    # the old window's key is forgotten
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_f, mod=0, scancode=0))  # SDL's, at the switch
    down(pygame.K_f, "f")                                    # still held: X's autorepeat in the new window
    assert [e for e in w.poll() if e.kind == "key"] == []
    time.sleep(0.6)                                          # SWITCH_GUARD_S after the switch: a new press
    down(pygame.K_f, "f")
    assert [e.key for e in w.poll() if e.kind == "key"] == ["f"]
    w.set_fullscreen(False)


def test_dragging_along_the_timeline_seeks_as_it_goes(window_cls):
    """Press on the timeline, drag, let go: seeks as it moves (at most every SCRUB_S) and where it
    is let go; the drag moves neither the split nor the zoom centre (no "mouse" events)."""
    import pygame
    from player.outputs.window import SCRUB_S
    w = window_cls(320, 240)
    w.show(*frames(240, 320), hud=sample_hud())
    track = w._timeline[0]
    y = track.centery
    pygame.event.clear()

    def post(kind, x, **kw):
        pygame.event.post(pygame.event.Event(kind, pos=(x, y), **kw))

    post(pygame.MOUSEBUTTONDOWN, track.x, button=1)
    assert [(e.kind, e.key, e.x) for e in w.poll()] == [("click", "timeline", 0.0)]
    post(pygame.MOUSEMOTION, track.x + track.w // 4, rel=(1, 0), buttons=(1, 0, 0))
    assert w.poll() == []                                     # not yet: at most every SCRUB_S
    time.sleep(SCRUB_S + 0.02)
    evs = w.poll()
    assert [(e.kind, e.key) for e in evs] == [("click", "timeline")] and evs[0].x == pytest.approx(0.25, abs=0.01)
    post(pygame.MOUSEMOTION, track.x + track.w // 2, rel=(1, 0), buttons=(1, 0, 0))
    post(pygame.MOUSEBUTTONUP, track.x + track.w // 2, button=1)
    evs = w.poll()
    assert [(e.kind, e.key) for e in evs] == [("click", "timeline")] and evs[0].x == pytest.approx(0.5, abs=0.01)
    post(pygame.MOUSEMOTION, track.x + track.w, rel=(1, 0), buttons=(0, 0, 0))
    assert [e.kind for e in w.poll()] == ["mouse"]            # the drag is over


def test_fullscreen_fills_the_screen_and_gives_the_window_back(window_cls):
    import pygame
    o, t = frames(240, 320, seed=5)
    w = window_cls(320, 240)
    w.show(o, t)
    w.set_fullscreen(True)
    desktop = pygame.display.get_desktop_sizes()[0]
    assert w.fullscreen and w.size == desktop
    w.show(o, t)
    shot = w.screenshot()
    assert shot.shape == (desktop[1], desktop[0], 3)
    x, y, dw, dh = letterbox_rect(320, 240, *desktop)
    assert dw == desktop[0] or dh == desktop[1]  # the frame fills the screen one way
    assert np.array_equal(shot[y + dh // 2, x + dw // 2], t[120, 160])
    w.set_fullscreen(False)
    assert not w.fullscreen and w.size == (320, 240)
    w.show(o, t)
    assert np.array_equal(w.screenshot(), t)


def test_window_close_is_idempotent(window_cls):
    w = window_cls(64, 48)
    w.close()
    w.close()
    assert w.poll() == []
    w.show(*frames())                                       # a no-op once closed


def test_no_display_raises_display_unavailable():
    code = textwrap.dedent("""
        from player.outputs.window import Window, DisplayUnavailable
        try:
            Window(320, 240)
        except DisplayUnavailable as e:
            print("UNAVAILABLE", e)
        else:
            print("OPENED")
    """)
    env = {**os.environ, "SDL_VIDEODRIVER": "x11", "DISPLAY": ":987", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    out = r.stdout.strip()
    assert out.startswith("UNAVAILABLE"), (r.stdout, r.stderr)
    assert len(out.splitlines()) == 1 and "no display" in out and "--headless" in out and "DISPLAY" in out


# =========================================================================== a real X window

_REAL_CHILD = textwrap.dedent("""
    import select, sys, time
    import numpy as np
    import pygame
    from player.outputs.window import Window, Hud
    w = Window(320, 240, title="rcd window test")
    o = np.empty((240, 320, 3), np.uint8); o[:] = (200, 40, 120)
    t = np.empty((240, 320, 3), np.uint8); t[:] = (30, 200, 90)
    hud = Hud(lines=["real display"], badges=["PAUSED"], position=1.0, duration=3.0)
    deadline = time.monotonic() + 60
    w.show(o, t, view="split", split=0.5, hud=hud)
    print("READY", pygame.display.get_driver(), *w.size, flush=True)
    while time.monotonic() < deadline:
        w.poll()
        w.show(o, t, view="split", split=0.5, hud=hud)
        if select.select([sys.stdin], [], [], 0.05)[0]:
            break
    w.close()
""")


@pytest.mark.display
def test_real_window_on_x_display(real_display):
    for tool in ("xdotool", "import"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed")
    import pygame
    env = {**os.environ, "SDL_VIDEODRIVER": "x11", "SDL_VIDEO_X11_WMCLASS": "rcdwin",
           "DISPLAY": real_display, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _REAL_CHILD], env=env, text=True, cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = child.stdout.readline()
        assert line.startswith("READY"), \
            f"child failed: {line!r} {child.stderr.read() if child.poll() is not None else ''}"
        assert line.split()[1:] == ["x11", "320", "240"]
        wids, deadline = [], time.monotonic() + 15
        while time.monotonic() < deadline and not wids:
            r = subprocess.run(["xdotool", "search", "--classname", "rcdwin"], env=env,
                               capture_output=True, text=True, timeout=10)
            wids = r.stdout.split()
            if not wids:
                time.sleep(0.1)
        assert wids, "xdotool did not find the window by its WM class (rcdwin)"
        geo = None
        for wid in wids:
            g = dict(kv.split("=", 1) for kv in subprocess.run(
                ["xdotool", "getwindowgeometry", "--shell", wid], env=env, capture_output=True,
                text=True, timeout=10).stdout.split())
            if (int(g.get("WIDTH", 0)), int(g.get("HEIGHT", 0))) == (320, 240):
                geo = g
        assert geo is not None, f"no 320x240 window among {wids}"
        x, y = int(geo["X"]), int(geo["Y"])
        time.sleep(0.3)                                  # a few more flips
        shot = subprocess.run(["import", "-window", "root", "png:-"], env=env,
                              capture_output=True, timeout=30)
        assert shot.returncode == 0, shot.stderr.decode(errors="replace")
        img = pygame.image.load(BytesIO(shot.stdout), "root.png")
        left = tuple(img.get_at((x + 80, y + 120)))[:3]      # split view: original on the left
        right = tuple(img.get_at((x + 240, y + 120)))[:3]    # tuned on the right
        assert all(abs(a - b) <= 2 for a, b in zip(left, (200, 40, 120))), left
        assert all(abs(a - b) <= 2 for a, b in zip(right, (30, 200, 90))), right
    finally:
        try:
            child.stdin.close()
            child.wait(timeout=10)
        except Exception:  # noqa: BLE001
            child.kill()
            child.wait()
    assert child.returncode == 0, child.stderr.read()


@pytest.mark.parametrize("size", [(200, 150), (240, 180)])
def test_in_a_very_small_window_the_hud_keeps_clear_of_the_timeline(window_cls, size):
    """At 200×150 the panel (5 lines and 9 level bars) ran over the timeline: the bars go first,
    then lines; badges that do not fit above the timeline are left out; the message stays above it."""
    w_, h_ = size
    o, t = frames(h_, w_, seed=13)
    w = window_cls(w_, h_)
    lines = ["strength 10.4 (AutoTune)", "removed σ 9.8  input σ̂ 11", "character +0.00", "luma ×1.00 chroma ×1.00",
             "backbone 80 ms"]
    bars = [(str(i), 0.1 * i, 1.0, i == 2) for i in range(1, 10)]
    w.show(o, t, hud=sample_hud(lines=lines, bars=bars, badges=["PAUSED", "BYPASS", "SPLIT", "2:1", "MUTE", "REC ●"],
                                message="strength 12.0 (character +0.00)"))
    timeline_top = h_ - w._timeline_height(max(12, min(20, h_ // 45)))
    assert 1 <= w.hud_rows <= len(lines) and w.panel_rect.bottom <= timeline_top
    assert w.badge_rects and all(r.bottom <= timeline_top for r in w.badge_rects)
    shot = w.screenshot()
    assert not np.array_equal(shot[timeline_top:], t[timeline_top:])  # the timeline is drawn
    w.show(o, t, hud=sample_hud(lines=lines, bars=bars, badges=[], message="", timeline=False))
    assert w.panel_rect.bottom <= h_ and w.hud_rows <= len(lines)


def test_an_anamorphic_frame_is_shown_at_its_pixel_aspect(window_cls):
    """176×144 with 12:11 pixels (PAL 4:3) is 4:3 on screen: the window opens at 192×144 and the
    frame fills it; fitted into a 400×144 window it is 192 wide, not 176 (the pixel aspect was
    ignored: pictures squeezed)."""
    o, t = frames(144, 176, seed=14)
    w = window_cls(176, 144, sar=12 / 11)
    assert w.size == (192, 144)
    w.show(o, t)
    assert tuple(w._video_rect) == (0, 0, 192, 144)
    shot = w.screenshot()
    assert shot.shape == (144, 192, 3) and shot[:, 0].any() and shot[:, -1].any()


@pytest.mark.parametrize("view, zoom", [("tuned", 0), ("split", 2), ("side", 0), ("side", 2), ("diff", 0)])
def test_the_window_maps_what_it_shows_to_the_screen(window_cls, view, zoom):
    """With a display mapping (HDR video), the window shows the mapped view (each half of side by
    side, the crop of a zoomed one), the same buffers reused frame after frame; the difference view
    shows the codes' difference."""
    from player import colour as col
    from player import tonemap as tm

    d = tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, col.TRC_PQ), 1000.0)
    w = window_cls(640 if view == "side" else 320, 240)
    for seed in (15, 16):  # a second frame through the kept buffers
        o, t = frames(240, 320, seed=seed)
        w.show(o, t, view=view, split=0.3, zoom=zoom, center=(0.5, 0.5), display=d)
        shot = w.screenshot()[:110]                           # above the labels
        if view == "side":
            mo, mt = (d(o), d(t)) if zoom == 0 else (up(d(o[60:180, 80:240]), 2), up(d(t[60:180, 80:240]), 2))
            assert np.array_equal(shot[:, :320], mo[:110]) and np.array_equal(shot[:, 320:], mt[:110])
            continue
        want = compose_view(o, t, view, 0.3, max(1, zoom), (0.5, 0.5), display=d)[:110]
        mask = np.ones((110, 320), bool)
        if view == "split":
            lx = round(0.3 * 160) * 2
            mask[:, lx - 1:lx + 2] = False
        assert np.array_equal(shot[mask], want[mask])
        assert np.array_equal(want, compose_view(o, t, view, 0.3, max(1, zoom), (0.5, 0.5))[:110]) == (view == "diff")


def test_a_frame_shown_smaller_is_mapped_at_the_size_shown(window_cls):
    """Fitted into a smaller window, only the pixels shown are mapped (nearest neighbour, each the
    frame pixel under its centre): the mapping of the frame, downscaled."""
    from player import colour as col
    from player import tonemap as tm

    d = tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, col.TRC_HLG))
    o, t = frames(720, 1280, seed=17)
    w = window_cls(320, 180)
    calls = []
    w.show(o, t, display=lambda rgb, out=None, size=None: (calls.append(size), d(rgb, out, size))[1])
    ys, xs = (2 * np.arange(180) + 1) * 720 // 360, (2 * np.arange(320) + 1) * 1280 // 640
    assert calls == [(320, 180)]
    assert np.array_equal(w.screenshot(), d(t)[ys[:, None], xs])


@pytest.mark.parametrize("view, zoom, probe, pointer, box, frame_xy", [
    ("tuned", 0, (100, 60), (201, 121), (184, 104, 32), (100.75, 60.75)),          # fitted at 2×
    ("tuned", 4, (150, 100), (400, 200), (248, 128, 64), (180.125, 110.125)),      # 4:1 around the centre
    ("side", 0, (100, 60), (420, 180), (412, 172, 16), (100.5, 60.5)),             # the right half
])
def test_the_pointer_reads_as_a_frame_pixel_and_the_probe_is_outlined_there(window_cls, view, zoom, probe,
                                                                              pointer, box, frame_xy):
    """Mouse events carry the frame pixel under the pointer, however the picture is shown; the
    probe's square is outlined over the frame pixels it reads (in both halves side by side)."""
    import pygame
    from player.outputs.window import _ACCENT

    o, t = frames(240, 320, seed=18)
    w = window_cls(640, 480)
    w.show(o, t, view=view, zoom=zoom, center=(0.5, 0.5), hud=Hud(probe=(*probe, 16), timeline=False))
    shot = w.screenshot()
    x, y, size = box
    for bx in ([x, x - 320] if view == "side" else [x]):
        assert tuple(shot[y + size // 2, bx]) == _ACCENT and tuple(shot[y + size // 2, bx - 1]) == (0, 0, 0)
        assert tuple(shot[y, bx + size // 2]) == _ACCENT and tuple(shot[y + size - 1, bx + size // 2]) == _ACCENT
    pygame.event.clear()
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pointer, rel=(1, 1), buttons=(0, 0, 0)))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pointer, button=3))
    mouse, click = w.poll()
    assert (mouse.frame_x, mouse.frame_y) == frame_xy and (click.frame_x, click.frame_y) == frame_xy
    w.show(o, t, view=view, zoom=zoom, center=(0.5, 0.5))
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(639, 5) if view == "side" else (5, 5), rel=(1, 1),
                                         buttons=(0, 0, 0)))
    (off,) = w.poll()
    assert (off.frame_x, off.frame_y) == ((-1.0, -1.0) if view == "side" else (2.75 if zoom == 0 else 81.375,
                                                                              2.75 if zoom == 0 else 61.375))
