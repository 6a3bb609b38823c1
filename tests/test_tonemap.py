"""player/tonemap.py: HDR and wide-gamut video mapped to an SDR screen, against the standards'
formulas written out here; and the player's window showing it (the codes everywhere else)."""
from __future__ import annotations

import av
import numpy as np
import pytest

from engine import native
from player import colour as col
from player import tonemap as tm
from media import write_frames
from player.outputs.window import compose_view
from test_player import play, weights  # noqa: F401  (fixture)


# ---- the standards, written out independently of player/tonemap.py ------------------------------
def st2084_nits(e):
    """SMPTE ST 2084's EOTF."""
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    p = np.power(e, 1 / m2)
    return 10000 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)


def bt2100_hlg_scene(e):
    """BT.2100's HLG inverse OETF."""
    a = 0.17883277
    b, c = 1 - 4 * a, 0.5 - a * np.log(4 * a)
    return np.where(e <= 0.5, e**2 / 3, (np.exp((e - c) / a) + b) / 12)


BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]])  # BT.2087


def reference(rgb, trc, peak):
    """What the screen should show, float64 codes: the transfer, the OOTF (HLG), BT.2020 → BT.709,
    BT.2390 on the largest channel (hue kept; beyond the peak, the top of the curve), gamma 2.4."""
    e = rgb / 255.0
    if trc == col.TRC_PQ:
        lin = st2084_nits(e) / 203
    elif trc == col.TRC_HLG:
        scene = bt2100_hlg_scene(e)
        y = scene @ np.array([0.2627, 0.6780, 0.0593])
        lin = 1000 / 203 * np.power(np.maximum(y, 1e-30), 0.2)[..., None] * scene
    else:
        lin = e**2.4
    lin = lin @ tm.gamut_matrix(col.PRI_BT2020).T
    mx = np.maximum(lin.max(-1, keepdims=True), 1e-30)
    top = tm.bt2390(np.minimum(mx, peak / 203) * 203, peak) / 203 if trc in (col.TRC_PQ, col.TRC_HLG) else np.minimum(mx, 1)
    return 255 * np.clip(lin * (top / mx), 0, 1) ** (1 / 2.4)


def test_the_transfers_and_the_gamut_are_the_standards():
    assert st2084_nits(np.array([0.5080784])) == pytest.approx(100, rel=1e-4)  # ST 2084's 100 nits
    assert tm.pq_to_nits(np.array([0.5, 0.75, 1.0])) == pytest.approx(st2084_nits(np.array([0.5, 0.75, 1.0])), rel=1e-9)
    assert tm.nits_to_pq(np.array([0.1, 203, 1000, 10000])) == pytest.approx([0.0623, 0.5807, 0.7518, 1.0], abs=1e-4)
    assert tm.hlg_to_scene(np.array([0.3, 0.75])) == pytest.approx(bt2100_hlg_scene(np.array([0.3, 0.75])), rel=1e-9)
    # HLG's reference white (75 %) on a 1000-nit display is BT.2408's 203 nits
    assert 1000 * bt2100_hlg_scene(0.75) ** 1.2 == pytest.approx(203, abs=1)
    assert tm.gamut_matrix(col.PRI_BT2020) == pytest.approx(BT2020_TO_BT709, abs=1e-4)
    assert tm.gamut_matrix(col.PRI_BT2020).sum(axis=1) == pytest.approx([1, 1, 1], abs=1e-9)  # white stays white
    # Display P3 → sRGB / BT.709 (as colour-science libraries give it)
    assert tm.gamut_matrix(tm.PRI_P3_D65) == pytest.approx(np.array([[1.2249, -0.2247, 0.0], [-0.0420, 1.0419, 0.0],
                                                                     [-0.0197, -0.0786, 1.0979]]), abs=5e-4)


@pytest.mark.parametrize("peak", [400.0, 1000.0, 4000.0])
def test_bt2390_keeps_the_midtones_and_rolls_the_highlights_off_to_white(peak):
    nits = np.linspace(0, peak, 2001)
    out = tm.bt2390(nits, peak)
    assert np.all(np.diff(out) > 0)  # monotonic: no highlight inverts
    assert out[-1] == pytest.approx(203, rel=1e-6) and out[0] == 0  # the content's peak is the screen's white
    knee = tm.pq_to_nits((1.5 * tm.nits_to_pq(203) / tm.nits_to_pq(peak) - 0.5) * tm.nits_to_pq(peak))
    below = nits < knee
    assert np.allclose(out[below], nits[below], rtol=1e-9)  # unchanged below the knee
    assert 30 < knee < 203
    assert tm.bt2390(np.array([peak * 2]), peak)[0] == pytest.approx(203)  # above the peak: white


@pytest.mark.parametrize("kernel", ["native", "numpy"])
@pytest.mark.parametrize("trc, peak", [(col.TRC_PQ, 1000.0), (col.TRC_PQ, 400.0), (col.TRC_PQ, 4000.0),
                                       (col.TRC_HLG, 1000.0), (col.TRC_BT709, 203.0)])
def test_the_display_map_is_the_mapping_to_half_a_code(kernel, trc, peak, monkeypatch):
    """Every code combination's neighbourhood (random frames, a grey ramp, the primaries and
    secondaries at full and at low level): within rounding of the float64 mapping, natively and
    in NumPy, whole frames and the strided crops of a zoomed view."""
    if kernel == "native" and native.library() is None:
        pytest.skip(f"native kernels not built: {native.why_not}")
    if kernel == "numpy":
        monkeypatch.setattr(native, "tonemap", lambda *a: None)
    rng = np.random.default_rng(int(peak) + trc)
    rgb = rng.integers(0, 256, (61, 77, 3), dtype=np.uint8)  # odd: the AVX2 body and its scalar tail
    rgb[0, :64] = np.arange(0, 256, 4)[:, None]  # greys
    corners = np.array([[a * r, a * g, a * b] for a in (255, 40) for r in (0, 1) for g in (0, 1) for b in (0, 1)])
    rgb[1, :16] = corners
    d = tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, trc), peak)
    out = d(rgb)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out - reference(rgb, trc, peak)).max() <= 0.56
    grey = out[0, :64].astype(int)
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])  # greys stay grey
    assert np.all(np.diff(grey[:, 0]) >= 0) and grey[0, 0] == 0 and grey[-1, 0] > 200
    crop = rgb[5:40, 9:60]  # a view of it, rows strided
    assert np.array_equal(d(crop), out[5:40, 9:60])
    ys, xs = (2 * np.arange(20) + 1) * 35 // 40, (2 * np.arange(30) + 1) * 51 // 60  # shown at 30×20
    assert np.array_equal(d(crop, size=(30, 20)), out[5:40, 9:60][ys[:, None], xs])


def test_an_sdr_frame_carried_in_pq_comes_back_as_it_was():
    """A PQ grade of an SDR frame (its white at 203 nits, BT.2020 primaries) with MaxCLL 203: the
    mapping gives the SDR frame back, but for the 8-bit PQ codes' rounding."""
    rng = np.random.default_rng(3)
    sdr = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    sdr[0] = np.arange(0, 256, 4)[:, None]
    lin2020 = (sdr / 255.0) ** 2.4 @ np.linalg.inv(BT2020_TO_BT709).T
    pq = np.rint(255 * tm.nits_to_pq(203 * lin2020)).astype(np.uint8)
    out = tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, col.TRC_PQ), 203.0)(pq).astype(int)
    assert np.abs(out[0] - sdr[0]).max() <= 3  # greys
    assert np.abs(out - sdr).mean() < 2.0
    coded = pq.astype(int)  # as coded (the player before): flat and dark
    assert np.abs(coded - sdr).mean() > 10 * np.abs(out - sdr).mean()


def test_a_patch_reads_in_nits_on_the_display_it_was_graded_for():
    """PQ codes are nits as graded; HLG's through the OOTF of a 1000-nit display: its 75 % is
    BT.2408's 203-nit white and its top the display's peak."""
    pq = tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, col.TRC_PQ), 1000.0)
    hlg = tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, col.TRC_HLG))
    for nits in (1.0, 100.0, 203.0, 1000.0):
        code = np.full((4, 4, 3), round(255 * float(tm.nits_to_pq(nits))), np.uint8)
        assert pq.nits(code) == pytest.approx(nits, rel=0.03)  # (an 8-bit PQ code is about 2 % apart)
    assert hlg.nits(np.full((2, 2, 3), 191, np.uint8)) == pytest.approx(203, rel=0.01)
    assert hlg.nits(np.full((2, 2, 3), 255, np.uint8)) == pytest.approx(1000, rel=1e-3)
    mixed = np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8)  # the mean of the light, not of the codes
    assert hlg.nits(mixed) == pytest.approx(500, rel=1e-3)


def test_sdr_video_in_bt709_or_bt601_is_not_mapped():
    for c in (col.Colour(col.SPC_BT709, col.PRI_BT709, col.TRC_BT709), col.guess(640, 480)):
        assert tm.display_map(c, 1000.0) is None
    assert tm.display_map(col.Colour(col.SPC_BT2020_NCL, col.PRI_BT2020, col.TRC_BT709)).name == "BT.2020 → BT.709"


def hdr10_clip(path, trc, x265_params="", n=4, size=(64, 48)):
    """A 10-bit HEVC clip tagged BT.2020 and `trc`, with HDR10 metadata as x265's parameters give it."""
    if "libx265" not in av.codecs_available:
        pytest.skip("this PyAV has no libx265")
    w, h = size
    ramp = (np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 3)) * 65535).astype(np.uint16)
    return write_frames(path, [ramp] * n, codec="libx265", pix_fmt="yuv420p10le", matrix="BT2020",
                        tags=(col.SPC_BT2020_NCL, col.PRI_BT2020, trc),
                        options={"x265-params": "log-level=error" + (":" + x265_params if x265_params else "")})


MASTERING = "hdr10=1:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(40000000,50)"


@pytest.mark.parametrize("params, peak", [(MASTERING + ":max-cll=400,200", 400.0), (MASTERING, 4000.0), ("", 0.0)])
def test_the_content_peak_is_maxcll_else_the_mastering_displays(tmp_path, params, peak):
    from player.decode import FileSource

    path = hdr10_clip(tmp_path / "hdr10.mp4", col.TRC_PQ, params)
    info = FileSource(str(path)).info
    assert info.colour.trc == col.TRC_PQ and info.peak_nits == peak
    d = tm.display_map(info.colour, info.peak_nits)
    assert d.name == f"PQ {peak or tm.HDR_PEAK_NITS:.0f} nits → SDR"


def test_the_window_shows_hdr_mapped_and_t_shows_the_codes(tmp_path, weights):
    """The view on screen is the mapping of the frame (every view but the difference, which is the
    codes'); `cycle tone-mapping` shows the codes and says so; the HUD names the mapping; the tuned
    frame, which recordings and renders take, stays coded."""
    path = hdr10_clip(tmp_path / "pq.mp4", col.TRC_PQ, MASTERING + ":max-cll=1000,400", n=20)
    shown = []

    def setup(p):
        show = p.window.show

        def watch(original, tuned, **kw):
            show(original, tuned, **kw)
            shown.append((original.copy(), tuned.copy(), p.window.last.copy(), kw["view"], p.tone_mapping,
                          p.window.last_hud))

        p.window.show = watch

    script = [(0.1, "set view split; set probe 32,24"), (0.2, "set view diff"), (0.3, "cycle tone-mapping"),
              (0.4, "set view original")]
    p, _, stats = play(tmp_path, weights, path, script=script, duration=0.55, setup=setup)
    patch = p.last.frame.rgb[16:32, 24:40]  # the probe's square: its mean in nits as graded
    assert stats["probe"]["nits"][0] == pytest.approx(p.display.nits(patch), abs=0.05)
    assert "nits)" in p.window.last_hud.lines[-1]
    assert p.display is not None and p.display.name == "PQ 1000 nits → SDR"
    assert any("shown tone-mapped (PQ 1000 nits → SDR" in n for n in stats["notices"])
    seen = set()
    for original, tuned, last, view, on, hud in shown:
        want = compose_view(original, tuned, view, 0.5, display=p.display if on else None)
        assert np.array_equal(last, want)
        if view != "diff":
            assert on == (not np.array_equal(last, compose_view(original, tuned, view, 0.5)))
        if hud is not None and hud.details:
            assert ("PQ 1000 nits → SDR" in hud.details[0]) == on and ("HDR (PQ) as coded" in hud.details[0]) == (not on)
        seen.add((view, on))
    assert {("split", True), ("diff", True), ("original", False)} <= seen
    assert not p.tone_mapping


def test_tone_mapping_on_sdr_video_says_there_is_nothing_to_map(tmp_path, weights, clip):
    messages = []

    def setup(p):
        message = p.message
        p.message = lambda text: (messages.append(text), message(text))

    p, _, _ = play(tmp_path, weights, clip, script=[(0.1, "set tone-mapping yes")], duration=0.2, setup=setup)
    assert p.display is None and not p.tone_mapping
    assert any("shown as coded, nothing to map" in m for m in messages)


def png_chunks(path):
    data, out, at = path.read_bytes(), [], 8
    while at < len(data):
        n = int.from_bytes(data[at:at + 4], "big")
        out.append((data[at + 4:at + 8], data[at + 8:at + 8 + n]))
        at += 12 + n
    return out


def test_screenshots_of_hdr_codes_say_so_in_cicp_and_the_view_as_shown_is_mapped(tmp_path, weights):
    """The original/tuned pair keeps the codes, tagged with PNG's cICP chunk (BT.2020, PQ, RGB, full
    range) before the pixels; the view as shown (S) is the window's mapping, untagged; shown as coded,
    the view is tagged again."""
    from engine.images import read_rgb

    path = hdr10_clip(tmp_path / "pq.mp4", col.TRC_PQ, n=20)
    shots = tmp_path / "shots"
    script = [(0.1, f"screenshot {shots / 'a'}; screenshot-view {shots / 'a'}"),
              (0.2, "set tone-mapping no"), (0.3, f"screenshot-view {shots / 'b'}")]
    p, _, _ = play(tmp_path, weights, path, script=script, duration=0.4)
    (original,), (tuned,) = (shots / "a").glob("*[0-9]-original.png"), (shots / "a").glob("*[0-9]-tuned.png")
    (view,), (coded_view,) = (shots / "a").glob("*-view-tuned.png"), (shots / "b").glob("*-view-tuned.png")
    pq = bytes([col.PRI_BT2020, col.TRC_PQ, col.SPC_RGB, 1])
    for f in (original, tuned, coded_view):
        names = [n for n, _ in png_chunks(f)]
        assert dict(png_chunks(f))[b"cICP"] == pq and names.index(b"cICP") < names.index(b"IDAT"), f.name
    assert b"cICP" not in dict(png_chunks(view))
    assert np.array_equal(read_rgb(view), p.display(read_rgb(tuned)))
