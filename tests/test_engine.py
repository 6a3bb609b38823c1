"""Engine checks on randomly initialised models at small sizes: Noise Decorrelation, the blend and
its controls (strength, character, luma/chroma), odd sizes, checkpoints, and smoke runs of the
evaluate and bench commands. Whole file: well under a minute on two busy cores."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine import bench, checkpoint, compose
from engine import decorrelate as nd
from engine import evaluate as ev
from engine.denoiser import Denoiser
from engine.model import PRESETS, RCDConfig, RCDNet, estimate_noise_sigma, param_count

ROOT = Path(__file__).resolve().parent.parent
PRESET_NAMES = ("live", "quality")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Two busy cores: keep torch to one thread here, and give the old setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> dict[str, RCDNet]:
    torch.manual_seed(1234)
    return {name: RCDNet(PRESETS[name]).eval() for name in PRESET_NAMES}


# The product's checks run on every device the machine has: CUDA (float16 backbone, bases kept on
# the GPU) only where torch sees one -- never in CI; `scripts/gpu_session.sh` runs them on a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module", params=DEVICES)
def denoisers(models, request) -> dict[str, Denoiser]:
    # a copy: Denoiser moves its model to the device, and `models` stays on the CPU
    return {name: Denoiser(copy.deepcopy(m), request.param) for name, m in models.items()}


def textured(h: int, w: int, seed: int = 0, lo: float = 30.0, hi: float = 225.0) -> np.ndarray:
    """A uint8 (h, w, 3) frame with gradients, stripes, a disc and noise, within [lo, hi]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([x / max(w, 1), y / max(h, 1), 0.5 + 0.5 * np.sin(x / 3.0 + y / 5.0)], axis=-1)
    disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2)[..., None] * 0.3
    img = base * 0.6 + disc + rng.normal(0, 0.08, (h, w, 3))
    img = (img - img.min()) / max(img.max() - img.min(), 1e-9)
    return np.round(lo + (hi - lo) * img).astype(np.uint8)


def as_input(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


def luma(r: torch.Tensor) -> torch.Tensor:
    """Y of an RGB tensor (3, H, W) with the BT.709 weights of compose."""
    y = torch.tensor(compose.LUMA_WEIGHTS, dtype=r.dtype)
    return torch.einsum("c,chw->hw", y, r)


def chroma(r: torch.Tensor) -> torch.Tensor:
    return r - luma(r)[None]


def frame_maps(den: Denoiser, rgb: np.ndarray):
    """(bases, noisy (3, H, W), maps (L, 3, H, W)) in 8-bit units, on the CPU."""
    bases = den.infer(rgb)
    return bases, den.noisy(bases).cpu(), den.maps(bases).cpu()


def measured(noisy, maps, c_luma, c_chroma=None) -> float:
    """std(output − noisy) before clipping, 8-bit units."""
    return float((compose.blend(noisy, maps, c_luma, c_chroma) - noisy).double().std())


# --------------------------------------------------------------------------- Noise Decorrelation

@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_nd_offdiag_correlation_below_0p01_with_random_weights(models, denoisers, preset):
    rgb = textured(64, 96, seed=1)
    with torch.no_grad():
        bases, _ = models[preset](as_input(rgb))
    assert nd.offdiag_corr_max(bases) <= 0.01
    # the product path (factored bases) too
    _, _, maps = frame_maps(denoisers[preset], rgb)
    assert nd.offdiag_corr_max(maps[None]) <= 0.01
    stds = maps.reshape(maps.shape[0], -1).double().std(dim=1)
    assert torch.allclose(stds, torch.tensor(PRESETS[preset].levels, dtype=torch.float64), rtol=1e-3)


def _covariances(l: int, seed: int) -> dict[str, torch.Tensor]:
    """(1, L+1, L+1) float64 covariances of [L maps; noisy]: a frame's, near-collinear maps (which
    take Newton–Schulz many iterations), a rank-deficient one (fewer samples than maps) and one
    with a constant map."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(l + 1, l + 1, generator=g, dtype=torch.float64)
    samples = mix @ torch.randn(l + 1, 4000, generator=g, dtype=torch.float64)
    near = samples.clone()
    near[2] = samples[1] + 1e-4 * samples[3]  # maps 1 and 2 correlated at ~0.99999999
    few = torch.randn(l + 1, 3, generator=g, dtype=torch.float64)  # 3 samples: a 1×1 frame's
    flat = samples.clone()
    flat[3] = 0.0  # a map with no variance: whitening cannot scale it to its level (T falls back to D)
    cases = (("frame", samples), ("near", near), ("few", few), ("flat", flat))
    return {name: torch.cov(m)[None] * 1e-3 for name, m in cases}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_numpy_heads_give_the_models_transform_and_autotune(models, preset):
    """engine/heads_np.py (Router, ND to convergence, AutoTune in NumPy: what inference runs) against
    RCDNet.transform_and_autotune (what training runs), with random heads, on ordinary,
    near-collinear and rank-deficient statistics; and the decorrelation it promises."""
    from engine import heads_np

    model = copy.deepcopy(models[preset])
    model.cfg = dataclasses.replace(model.cfg, sigma_feature=True)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for fc in (model.router.fc, model.autotune.fc):
            fc.weight.copy_(0.05 * torch.randn(fc.weight.shape, generator=g))
            fc.bias.copy_(0.05 * torch.randn(fc.bias.shape, generator=g))
    heads = heads_np.StatsHeads(model)
    l = model.cfg.num_levels
    feats = torch.randn(1, model.backbone.feat_dim, generator=g)
    for name, cov in _covariances(l, seed=l).items():
        for sigma in (0.0, 12.5):
            with torch.inference_mode():
                t_ref, auto_ref = model.transform_and_autotune(cov, feats, sigma=torch.tensor([sigma]))
            t, auto = heads(cov[0].numpy(), feats[0].numpy(), sigma)
            # each row to its own scale: T's rows span 1e-2 to 1e13 ("flat"), and the float32
            # router rounds apart between the two (measured: 1e-6 of a row, 2e-5 for "near" and "few")
            ref = t_ref[0].numpy()
            row_scale = np.abs(ref).max(axis=1, keepdims=True)
            assert (np.abs(t - ref) <= 1e-4 * row_scale + 1e-12).all(), name
            # ND alone (the router above mixes the constant map away): the same fallbacks
            nd_ref = nd.transform(cov[:, :l, :l], model.levels.double())[0].numpy()
            nd_got = heads_np.transform(cov[0, :l, :l].numpy(), heads.levels)
            assert (np.abs(nd_got - nd_ref) <= 1e-4 * np.abs(nd_ref).max(axis=1, keepdims=True) + 1e-12).all(), name
            np.testing.assert_allclose(auto, auto_ref[0].double().numpy(), atol=1e-5, err_msg=f"{name} AutoTune")
            assert auto.sum() == pytest.approx(1.0) and auto.max() - auto.min() > 0.01
            if name == "frame":  # T·Σ·Tᵀ (the router folded into T): uncorrelated maps, std = level
                c = t @ cov[0, :l, :l].numpy() @ t.T
                active = heads.levels > 0
                np.testing.assert_allclose(np.sqrt(np.diag(c)[active]), heads.levels[active], rtol=1e-6)
                corr = c[np.ix_(active, active)] / np.outer(heads.levels[active], heads.levels[active])
                assert np.abs(corr - np.eye(int(active.sum()))).max() < 1e-6
    with pytest.raises(ValueError, match="noise estimate"):
        heads(cov[0].numpy(), feats[0].numpy(), None)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_native_heads_equal_the_numpy_heads(preset):
    """engine/csrc/heads.c (Router, ND, AutoTune in C: what inference runs where the kernels build)
    against engine/heads_np.py on the same statistics: equal to rounding where it converges, and
    handing the cases with fallbacks (a map without variance, Newton–Schulz not converging) back."""
    from engine import heads_np, native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(11)
    for sigma_feature in (False, True):
        torch.manual_seed(7)
        model = RCDNet(dataclasses.replace(PRESETS[preset], sigma_feature=sigma_feature)).eval()
        with torch.no_grad():
            for fc in (model.router.fc, model.autotune.fc):
                fc.weight.copy_(0.05 * torch.randn(fc.weight.shape, generator=g))
                fc.bias.copy_(0.05 * torch.randn(fc.bias.shape, generator=g))
        heads = heads_np.StatsHeads(model, use_native=True)
        assert heads.native is not None
        l = model.cfg.num_levels
        feats = torch.randn(model.backbone.feat_dim, generator=g).numpy()
        handled = {}
        for name, cov in _covariances(l, seed=l + 1).items():
            for sigma in (0.0, 3.0, 40.0):
                cov_np = cov[0].numpy()
                got = heads.native(cov_np, feats, sigma)
                t_ref, auto_ref = heads.numpy(cov_np, feats, sigma)
                handled[name] = got is not None
                if got is None:
                    continue
                t, auto = got
                # the float32 router layer sums in another order (~1e-7); ill-conditioned statistics
                # ("near", "few") amplify that, as between NumPy and the model (see the test above)
                tol = 1e-5 if name == "frame" else 1e-4
                row_scale = np.abs(t_ref).max(axis=1, keepdims=True)
                assert (np.abs(t - t_ref) <= tol * row_scale + 1e-12).all(), (name, sigma)
                np.testing.assert_allclose(auto, auto_ref, atol=tol / 10, err_msg=f"{name} AutoTune")
                assert auto.sum() == pytest.approx(1.0, abs=1e-12)
                t2, auto2 = heads(cov_np, feats, sigma)  # the public call takes the C result
                assert (t2 == t).all() and (auto2 == auto).all()
        assert handled["frame"] and handled["near"], handled  # converging statistics stay in C
    with torch.no_grad():  # without a router a map without variance stays so: NumPy's fallback keeps D
        model.router.fc.weight.zero_()
        model.router.fc.bias.zero_()
    heads = heads_np.StatsHeads(model, use_native=True)
    flat = _covariances(l, seed=l + 1)["flat"][0].numpy()
    assert heads.native(flat, feats, 5.0) is None
    t, auto = heads(flat, feats, 5.0)
    t_ref, auto_ref = heads.numpy(flat, feats, 5.0)
    assert (t == t_ref).all() and (auto == auto_ref).all() and t[3, 3] > 1e3 * np.abs(t[3, :3]).max()


ODD_SIZES = [(33, 47), (32, 47), (33, 46), (7, 1), (1, 9), (1, 1), (3, 2)]


@pytest.mark.parametrize("h,w", ODD_SIZES, ids=[f"{h}x{w}" for h, w in ODD_SIZES])
def test_odd_sizes_covariance_equals_the_materialised_maps(models, h, w):
    """For an odd size, padding splits the last row's or column's half-pixels. The covariance from
    the whole half-pixels' statistics (the native fill's, or torch's) plus the real sub-pixels of
    the last row, column and corner equals the covariance of the maps materialised over the frame's
    pixels (how it was computed before: 12× the whole inference at 720p)."""
    from engine import decorrelate as nd
    from engine import native

    den = Denoiser(copy.deepcopy(models["live"]), "cpu", precision="fp32")
    rgb = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = den.infer(rgb)
    (hp, wp), l = b.padded, den.cfg.num_levels
    raw = den._raw_maps(b.x, hp, wp)[..., :h, :w]
    noisy = den._noisy_planes(b.x, hp, wp)[:, :h, :w] / 255.0
    ref = nd.covariance(torch.cat([raw.reshape(l, -1), noisy.reshape(1, -1)], 0)[None].double())[0].numpy()
    scale = np.abs(ref).max()
    got = den._covariance(b.x, None, h, w, hp, wp)  # torch's statistics of the whole half-pixels
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale)
    if native.library() is not None:
        x = b.x.clone()
        _, gram = native.fill(x, den.c1, rgb, hp, wp, 2, 2, gram=True)  # the features are in X already
        np.testing.assert_allclose(den._covariance(x, None, h, w, hp, wp, gram), ref, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_native_covariance_from_the_statistics_equals_numpy(models, preset):
    """engine/csrc/heads.c's covariance of [raw maps; noisy] from [d | 1]ᵀ·X against the NumPy
    algebra of Denoiser._covariance, from the same (random) statistics, with Σ noisy² given or
    summed from the fill's per-column sums of squares."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    den = Denoiser(copy.deepcopy(models[preset]), "cpu")
    c1, l = den.c1, den.cfg.num_levels
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, c1 + 13))
    x[:, c1] = 1.0
    x[:, c1 + 1 :] = rng.uniform(0, 255, size=(500, 12))
    gram = native.Gram(torch.from_numpy(x[:, : c1 + 1].T @ x), torch.from_numpy((x**2).sum(0)))
    h, w = 10, 50  # 500 half-pixels of 2×2 pixels
    den.native_algebra = False
    ref = den._covariance(None, None, h, w, h, w, gram)
    den.native_algebra = True
    got = den._covariance(None, None, h, w, h, w, gram)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    sq_noisy = float((x[:, c1 + 1 :] ** 2).sum()) / 255.0**2
    np.testing.assert_allclose(native.gram_cov(gram.g.numpy(), c1, den._raw_from_x_np, sq_noisy, h * w * 3.0), ref,
                               rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert (got == got.T).all()
    # The fill computes the same covariance in its own call when given the head (Gram.cov), and
    # _covariance then returns it as it is.
    rgb = rng.integers(0, 256, (30, 46, 3), dtype=np.uint8)
    d = torch.from_numpy(rng.normal(size=(1, c1, 16, 24)).astype(np.float32)).contiguous(memory_format=torch.channels_last)
    xf = torch.empty(16 * 24, c1 + 13)
    _, plain = native.fill(xf, c1, rgb, 32, 48, 2, 2, d=d, gram=True)
    _, with_cov = native.fill(xf, c1, rgb, 32, 48, 2, 2, d=d, gram=True, head=den._raw_from_x_np)
    assert plain.cov is None and torch.equal(plain.g, with_cov.g) and torch.equal(plain.sq, with_cov.sq)
    sq_noisy = float(plain.sq.numpy()[c1 + 1 :].sum()) / 255.0**2
    ref = native.gram_cov(plain.g.numpy(), c1, den._raw_from_x_np, sq_noisy, 30 * 46 * 3.0)
    np.testing.assert_allclose(with_cov.cov, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert den._covariance(xf, None, 30, 46, 32, 48, with_cov) is with_cov.cov


@pytest.mark.parametrize("stats", ["native", "torch"])
@pytest.mark.parametrize("preset,size", [("live", (64, 96)), ("live", (50, 70)), ("live", (18, 34)),
                                         ("quality", (50, 70))])
def test_factored_statistics_equal_the_materialised_maps_statistics(models, preset, size, stats):
    """The player's ND and AutoTune read statistics off [d | 1]ᵀ·X (the C kernel's one pass, or
    torch's product with the padding columns subtracted); with live Router and AutoTune layers they
    must give what the maps themselves give."""
    from engine import native

    if stats == "native" and native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    model = copy.deepcopy(models[preset])
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random heads: the transform and the coefficients depend on every statistic
        for fc in (model.router.fc, model.autotune.fc):
            fc.weight.copy_(0.05 * torch.randn(fc.weight.shape, generator=g))
    den = Denoiser(copy.deepcopy(model), "cpu", precision="fp32")  # float32: a bf16 CPU picks bf16
    den.native_stats = den.native_algebra = stats == "native"  # "torch": the statistics in torch, the algebra in NumPy
    if stats == "torch":
        den._heads.native = None
    rgb = textured(*size, seed=7, lo=0, hi=255)
    bases = den.infer(rgb)
    x = as_input(rgb).double()
    with torch.no_grad():
        raw, feats = model.raw_maps(x.float())  # (1, L, 3, H, W)
        stacked = torch.cat([raw.double().flatten(2), x.reshape(1, 1, -1)], dim=1)  # (1, L+1, M)
        sigma = estimate_noise_sigma(x[:, 1].float() * 255.0)
        t_ref, auto_ref = model.transform_and_autotune(nd.covariance(stacked), feats, sigma=sigma)
    assert bases.sigma_est == pytest.approx(float(sigma[0]), abs=1e-6)
    assert torch.allclose(bases.transform, t_ref[0], rtol=1e-4, atol=1e-6 * float(t_ref.abs().max()))
    assert torch.allclose(bases.auto, auto_ref[0].double(), atol=1e-5)
    assert float(bases.auto.max() - bases.auto.min()) > 0.01  # the heads did react to the statistics


@pytest.mark.parametrize("num_levels", [5, 8, 12])
def test_nd_decorrelates_highly_collinear_maps(num_levels):
    g = torch.Generator().manual_seed(num_levels)
    base = torch.randn(1, 1, 3, 32, 48, generator=g) + 0.5
    raw = base + 1e-3 * torch.randn(1, num_levels, 3, 32, 48, generator=g)  # correlation ≈ 0.999999
    assert nd.offdiag_corr_max(raw) > 0.9999
    levels = torch.linspace(5.0, 50.0, num_levels) / 255.0
    out = nd.decorrelate(raw, levels)
    assert nd.offdiag_corr_max(out) <= 0.01
    stds = out.reshape(num_levels, -1).double().std(dim=1)
    assert torch.allclose(stds, levels.double(), rtol=1e-3)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_variance_identity_eq5_holds_within_2pct(denoisers, preset):
    _, noisy, maps = frame_maps(denoisers[preset], textured(64, 96, seed=2))
    levels = torch.tensor(PRESETS[preset].levels, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    for _ in range(10):
        c = torch.randn(len(levels), generator=g, dtype=torch.float64)
        blend_std = float((c.float()[:, None] * maps.reshape(len(levels), -1)).sum(0).double().std())
        closed = float(torch.sqrt((c**2 * levels**2).sum()))
        assert abs(blend_std - closed) <= 0.02 * closed
        assert compose.strength_of(c, levels) == pytest.approx(closed, rel=1e-12)


def test_newton_schulz_inverse_sqrt_matches_eigendecomposition():
    g = torch.Generator().manual_seed(0)
    for size in (4, 8, 12):
        q, _ = torch.linalg.qr(torch.randn(size, size, dtype=torch.float64, generator=g))
        evals = 0.5 + 1.5 * torch.rand(size, dtype=torch.float64, generator=g)  # condition ≤ 4
        a = (q * evals) @ q.T
        evals_ref, evecs = torch.linalg.eigh(a)
        ref = (evecs * evals_ref.rsqrt()) @ evecs.T
        assert (nd.inv_sqrt_newton_schulz(a[None])[0] - ref).abs().max() <= 1e-6
        assert (nd.inv_sqrt_newton_schulz(a[None], iters=40)[0] - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_autotune_coefficients_are_nonnegative_and_sum_to_one(models, preset):
    model = RCDNet(PRESETS[preset]).eval()
    model.load_state_dict(models[preset].state_dict())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random init zeroes the AutoTune layer (uniform output): make it informative
        model.autotune.fc.weight.copy_(torch.randn(model.autotune.fc.weight.shape, generator=g) * 0.05)
        model.autotune.fc.bias.copy_(torch.randn(model.autotune.fc.bias.shape, generator=g) * 0.05)
        x = torch.cat([as_input(textured(32, 48, seed=s)) for s in (4, 5)])
        _, coeffs = model(x)
    assert coeffs.shape == (2, model.cfg.num_levels)
    assert (coeffs >= 0).all()
    assert torch.allclose(coeffs.double().sum(1), torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert not torch.allclose(coeffs[0], torch.full_like(coeffs[0], 1 / model.cfg.num_levels))
    bases = Denoiser(model, "cpu").infer(textured(32, 48, seed=4))
    assert float(bases.auto.sum()) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- blend and controls

@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_blend_residual_is_linear_in_coefficients(denoisers, preset):
    _, noisy, maps = frame_maps(denoisers[preset], textured(40, 56, seed=6))
    g = torch.Generator().manual_seed(6)
    l = maps.shape[0]
    c1, c2, k1, k2 = (torch.randn(l, generator=g, dtype=torch.float64) for _ in range(4))
    a, b = 0.7, -1.3

    def res(cl, cc=None):
        return compose.blend(noisy, maps, cl, cc) - noisy

    assert torch.allclose(res(a * c1 + b * c2), a * res(c1) + b * res(c2), atol=2e-3)
    # with separate luma and chroma coefficients the blend is linear in both
    assert torch.allclose(res(a * c1 + b * c2, a * k1 + b * k2), a * res(c1, k1) + b * res(c2, k2), atol=2e-3)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_strength_zero_is_the_identity(denoisers, preset):
    den = denoisers[preset]
    rgb = textured(24, 40, seed=7, lo=0, hi=255)
    bases, noisy, maps = frame_maps(den, rgb)
    for mix in (compose.Mix(strength=0.0), compose.Mix(strength=0.0, character=-1.0, luma=0.5, chroma=2.0)):
        assert np.array_equal(den.blend(bases, mix), rgb)
    zeros = torch.zeros(maps.shape[0], dtype=torch.float64)
    assert torch.equal(compose.blend(noisy, maps, zeros), noisy)
    assert torch.equal(compose.blend(noisy, maps, zeros, zeros), noisy)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_strength_calibration_within_5pct_for_5_to_50(denoisers, preset):
    _, noisy, maps = frame_maps(denoisers[preset], textured(64, 96, seed=8))
    levels = PRESETS[preset].levels
    for s in range(5, 51, 5):
        for character in (-1.0, 0.0, 1.0):
            c = compose.character_coefficients(levels, s, character)
            assert compose.strength_of(c, levels) == pytest.approx(s, rel=1e-9)
            assert measured(noisy, maps, c) == pytest.approx(s, rel=0.05), (s, character)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_character_keeps_strength_and_moves_weight_centre_up_the_levels(denoisers, preset):
    _, noisy, maps = frame_maps(denoisers[preset], textured(64, 96, seed=9))
    levels = PRESETS[preset].levels
    log_l = torch.tensor(levels, dtype=torch.float64).clamp_min(1e-9).log()  # the zero level gets no weight
    autotune_like = torch.softmax(torch.randn(len(levels), generator=torch.Generator().manual_seed(1)), 0)
    for s, base in [(s, b) for s in (8.0, 15.0, 25.0, 40.0) for b in (None, autotune_like)]:
        strengths, centres = [], []
        for character in (-1.0, 0.0, 1.0):
            c = compose.character_coefficients(levels, s, character, base=base)
            assert (c >= 0).all()
            strengths.append(measured(noisy, maps, c))
            centres.append(float((c * log_l).sum() / c.sum()))
        assert max(strengths) - min(strengths) <= 0.05 * min(strengths), (s, strengths)
        assert centres[0] < centres[1] < centres[2], (s, centres)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_luma_only_change_keeps_chroma_and_chroma_only_change_keeps_luma(denoisers, preset):
    den = denoisers[preset]
    bases, noisy, maps = frame_maps(den, textured(48, 64, seed=10, lo=70, hi=185))
    levels = bases.levels
    base_mix = compose.Mix(strength=12.0, character=0.3)
    luma_mix, chroma_mix = base_mix.with_(luma=0.3), base_mix.with_(chroma=0.2)

    def float_out(mix):
        return compose.blend(noisy, maps, *compose.coefficients(mix, levels, bases.auto)).double()

    ref = float_out(base_mix)
    d_luma, d_chroma = float_out(luma_mix) - ref, float_out(chroma_mix) - ref
    assert luma(d_luma).abs().max() > 1.0 and chroma(d_chroma).abs().max() > 1.0  # the knobs do act
    assert chroma(d_luma).abs().max() <= 1e-3
    assert luma(d_chroma).abs().max() <= 1e-3

    # the uint8 product path, within rounding, where no output was clipped
    def u8(mix):
        return torch.from_numpy(den.blend(bases, mix)).permute(2, 0, 1).double()

    def unclipped(*outs):
        return torch.stack([((o > 0.5) & (o < 254.5)).all(0) for o in outs]).all(0)

    mask_l = unclipped(ref, float_out(luma_mix))
    mask_c = unclipped(ref, float_out(chroma_mix))
    assert mask_l.float().mean() > 0.9 and mask_c.float().mean() > 0.9
    assert chroma(u8(luma_mix) - u8(base_mix))[:, mask_l].abs().max() <= 2.0 + 1e-6  # ±0.5 per channel, twice
    assert luma(u8(chroma_mix) - u8(base_mix))[mask_c].abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("size", [(17, 33), (64, 96)])
def test_uint8_blend_matches_float64_reference_within_1(denoisers, preset, size):
    den = denoisers[preset]
    rgb = textured(*size, seed=11, lo=0, hi=255)
    bases, noisy, maps = frame_maps(den, rgb)
    for mix in (compose.Mix(), compose.Mix(strength=30.0, character=-0.5),
                compose.Mix(strength=18.0, character=0.8, luma=1.4, chroma=0.3)):
        cl, cc = compose.coefficients(mix, bases.levels, bases.auto)
        w = compose.colour_matrices(cl, cc)  # (L, 3, 3) float64
        ref = noisy.double() + torch.einsum("icd,idhw->chw", w, maps.double())
        ref = ref.round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.int64)
        got = den.blend(bases, mix)
        assert got.dtype == np.uint8 and got.shape == rgb.shape
        assert np.abs(got.astype(np.int64) - ref).max() <= 1, mix


@pytest.mark.parametrize("size", [(48, 64), (37, 53)])
def test_a_fine_frame_is_the_blends_base_and_a_fine_blend_is_the_uint8_one_unrounded(denoisers, size, monkeypatch):
    """Denoiser.infer(rgb, fine=…) for a source over 8 bits: the network and statistics read rgb (its
    rounding), the blend's base is the fine frame. blend(fine=True) gives float32 unrounded: the fine
    frame itself at strength 0 (the source's finer steps kept), and within rounding of the uint8
    blend of the same bases, on either side of a half code."""
    den = denoisers["live"]
    rng = np.random.default_rng(12)
    fine = np.clip(textured(*size, seed=4).astype(np.float32) + rng.uniform(-0.5, 0.5, size + (3,)).astype(np.float32),
                   0, 255)
    rgb = np.rint(fine).astype(np.uint8)
    b, b8 = den.infer(rgb, fine=fine), den.infer(rgb)
    assert torch.equal(b.transform, b8.transform) and torch.equal(b.auto, b8.auto)  # the same statistics
    hp, wp = b.padded
    x = b.x.clone()
    den._copy_noisy(x, den._padded_input(fine, hp, wp), hp, wp)  # (the torch path's copy: the native one's X)
    assert torch.equal(x, b.x)
    zero = np.zeros(len(den.levels))
    same = den.blend(b, coeffs=(zero, zero), fine=True)
    assert same.dtype == np.float32 and np.abs(same - fine).max() < 1e-3
    assert np.array_equal(den.blend(b8, coeffs=(zero, zero), fine=True), rgb.astype(np.float32))
    for mix in (compose.Mix(), compose.Mix(strength=30.0, character=0.5, chroma=0.4)):
        tuned, tuned8 = den.blend(b8, mix, fine=True), den.blend(b8, mix)
        assert tuned.min() >= 0 and tuned.max() <= 255
        assert np.abs(tuned - tuned8).max() <= 0.5 + 1e-3, mix  # the uint8 blend is its rounding
        assert np.mean(np.abs(tuned - np.rint(tuned)) > 0.05) > 0.5  # and this one is not rounded
        shifted = den.blend(b, mix, fine=True) - tuned  # the fine base moves the output by its own difference
        inside = (tuned > 0.5) & (tuned < 254.5)
        assert np.abs(shifted - (fine - rgb))[inside].max() < 1e-3
    if den.native_blend:  # the native kernel's float output (float32 and compact bases) is the torch path's
        mix = compose.Mix(strength=25.0, character=-0.4, luma=1.2)
        native_out, compact_out = den.blend(b, mix, fine=True), den.blend(den.compact(b), mix, fine=True)
        monkeypatch.setattr(den, "native_blend", False)
        torch_out = den.blend(b, mix, fine=True)
        assert np.abs(native_out - torch_out).max() < 1e-3 and np.abs(compact_out - torch_out).max() < 0.25


def test_fused_clamp_blend_gives_the_plain_blend(models, monkeypatch):
    """The CPU blend's oneDNN conv + clamp fusion against conv2d + clamp_ (the CUDA and fallback path)."""
    from engine import denoiser as dn

    assert dn._fused_clamp_works()  # the torch this project pins has it; the fallback is tested below
    den = Denoiser(copy.deepcopy(models["live"]), "cpu")
    bases = den.infer(textured(40, 72, seed=4, lo=0, hi=255))
    outs = []
    for fused in (True, False):
        monkeypatch.setattr(dn, "_FUSED_CLAMP", fused)
        outs.append(den.blend(bases, compose.Mix(strength=45.0, character=1.0, luma=2.0)))
    diff = np.abs(outs[0].astype(np.int64) - outs[1])
    assert diff.max() <= 1 and diff.mean() < 0.01  # one level where float rounding straddles a .5
    assert (outs[0] == 0).any() and (outs[0] == 255).any()  # the clamp did act, at both ends


NATIVE_SIZES = [(1, 1), (2, 2), (7, 1), (1, 9), (17, 33), (40, 72), (64, 96)]


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_native_blend_gives_the_torch_blend_and_writes_every_pixel(models, preset):
    """The one-pass C kernel (engine/csrc/kernels.c) against the torch path, at odd, tiny and even
    sizes, on 1 and 3 threads (uneven bands); each output starts as all-0 and as all-255, so a
    pixel the kernel skipped differs from the torch frame in one of the two."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    den = Denoiser(copy.deepcopy(models[preset]), "cpu")
    assert den.native_blend
    mixes = (compose.Mix(), compose.Mix(strength=45.0, character=1.0, luma=2.0),
             compose.Mix(strength=12.0, character=-0.7, chroma=0.2))
    for h, w in NATIVE_SIZES:
        bases = den.infer(textured(h, w, seed=h + 7 * w, lo=0, hi=255))
        for mix in mixes:
            den.native_blend = False
            ref = den.blend(bases, mix)
            den.native_blend = True
            for threads in (1, 3):
                for fill in (0, 255):
                    got = np.full((h, w, 3), fill, np.uint8)
                    torch.set_num_threads(threads)
                    try:
                        den.blend(bases, mix, out=got)
                    finally:
                        torch.set_num_threads(1)
                    diff = np.abs(got.astype(np.int64) - ref)
                    assert diff.max() <= 1 and diff.mean() < 0.02, (h, w, mix, threads, fill)  # float rounding at .5
    big = den.blend(den.infer(textured(40, 72, seed=2, lo=0, hi=255)), mixes[1])
    assert (big == 0).any() and (big == 255).any()  # the clamp acted at both ends


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_compact_bases_blend_within_a_level_of_the_full_ones_in_half_the_bytes(models, preset):
    """The render cache's float16 bases: half the bytes, the noisy frame exact, every blend within
    one level of the float32 bases' blend (native float16 kernel and torch's path alike)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    den = Denoiser(copy.deepcopy(models[preset]), "cpu")
    for h, w in ((40, 72), (17, 33), (1, 1)):
        rgb = textured(h, w, seed=h + w, lo=0, hi=255)
        full = den.infer(rgb)
        small = den.compact(full)
        assert small.x.dtype == torch.float16 and small.nbytes * 2 == full.nbytes
        assert torch.equal(den.noisy(small), den.noisy(full))
        for mix in (compose.Mix(), compose.Mix(strength=40.0, character=0.8, luma=1.5, chroma=0.4)):
            ref = den.blend(full, mix).astype(np.int64)
            got = den.blend(small, mix).astype(np.int64)
            den.native_blend = False
            via_torch = den.blend(small, mix).astype(np.int64)
            den.native_blend = True
            for out in (got, via_torch):
                assert np.abs(out - ref).max() <= 1 and np.abs(out - ref).mean() < 0.05, (h, w, mix)
    big = den.infer(textured(8, 8))
    big.x[0, 0] = 1e5  # beyond float16: such bases stay as they are
    assert den.compact(big) is big
    big.x[0, 0] = float("nan")
    assert den.compact(big) is big


@pytest.mark.parametrize("widths", [(16, 32, 40), (32, 64, 96), (13, 16, 16)])
def test_avx512_blend_gives_the_avx2_bytes(widths):
    """On a CPU with AVX-512 the blend runs a second kernel (kernels.c, blend_rows_c1_512): the
    same FMA chains lane for lane, so every byte equals the AVX2 kernel's, from float32 and from
    float16 (compact) bases, for the shipped widths (c1 16 and 32: specialised code) and an odd c1,
    at odd, tiny and even sizes, on 1 and 3 threads."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    if native.set_isa("AVX-512") != "AVX-512":
        pytest.skip("this CPU has no AVX-512")
    torch.manual_seed(5)
    den = Denoiser(RCDNet(RCDConfig(name="t", widths=widths)).eval(), "cpu")
    mixes = (compose.Mix(), compose.Mix(strength=45.0, character=1.0, luma=2.0),
             compose.Mix(strength=12.0, character=-0.7, chroma=0.2))
    try:
        for h, w in [*NATIVE_SIZES, (9, 130)]:
            full = den.infer(textured(h, w, seed=h + 3 * w, lo=0, hi=255))
            for bases in (full, den.compact(full)):
                for mix in mixes:
                    for threads in (1, 3):
                        torch.set_num_threads(threads)
                        out = {}
                        for isa in ("AVX2", "AVX-512"):
                            assert native.set_isa(isa) == isa
                            out[isa] = np.full((h, w, 3), 7, np.uint8)
                            den.blend(bases, mix, out=out[isa])
                        assert np.array_equal(out["AVX2"], out["AVX-512"]), (widths, h, w, bases.x.dtype, mix, threads)
    finally:
        native.set_isa("best")
        torch.set_num_threads(1)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bases_and_blend_are_identical_on_any_thread_count(models, preset):
    """The player infers on one thread per frame (player/worker.py's lanes) where a render of the
    same recording may run on two: the statistics' sums are banded independently of the thread
    count (kernels.c, SUM_BANDS), so X, T, the AutoTune coefficients and the blended frame come
    out bit for bit the same."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    model = copy.deepcopy(models[preset])
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():  # random heads: T and the coefficients depend on every statistic
        for fc in (model.router.fc, model.autotune.fc):
            fc.weight.copy_(0.05 * torch.randn(fc.weight.shape, generator=g))
    den = Denoiser(model, "cpu")
    rng = np.random.default_rng(0)
    for h, w in ((240, 320), (250, 138)):  # small frames' sums come out exact in float64 on any split
        rgb = np.clip(textured(h, w, seed=h, lo=0, hi=255) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        runs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            try:
                b = den.infer(rgb)
                runs.append((b.x.clone(), b.transform.clone(), b.auto.clone(),
                             den.blend(b, compose.Mix(strength=17.0, character=0.4))))
            finally:
                torch.set_num_threads(1)
        for other in runs[1:]:
            assert torch.equal(runs[0][0], other[0]) and torch.equal(runs[0][1], other[1])
            assert torch.equal(runs[0][2], other[2]) and np.array_equal(runs[0][3], other[3])


def test_inference_on_several_threads_at_once_equals_one_at_a_time(models):
    """The player infers two frames at once from two threads (player/worker.py's lanes) with one
    Denoiser: whatever infer() and the per-frame heads keep between calls must not be shared."""
    import threading

    torch.manual_seed(0)
    den = Denoiser(copy.deepcopy(models["live"]), "cpu")
    frames = [textured(48 + 2 * (i % 3), 64, seed=i, lo=0, hi=255) for i in range(6)]
    want = [den.infer(f) for f in frames]
    l = den.cfg.num_levels
    covs = [c[0].numpy() for c in _covariances(l, seed=3).values()][:2]  # "frame", "near": in C where built
    feats = np.linspace(-1, 1, den.model.backbone.feat_dim, dtype=np.float32)
    heads_want = [den._heads(c, feats, 7.0) for c in covs]
    bad: list[str] = []

    def hammer(k: int) -> None:
        for i in range(30):
            j = (i + k) % len(frames)
            b = den.infer(frames[j])
            if not (torch.equal(b.x, want[j].x) and torch.equal(b.transform, want[j].transform)):
                bad.append(f"frame {j}")
            for _ in range(20):
                t, auto = den._heads(covs[k], feats, 7.0)
                if not (np.array_equal(t, heads_want[k][0]) and np.array_equal(auto, heads_want[k][1])):
                    bad.append(f"heads {k}")

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per inference, as the player's lanes on two cores
    try:
        threads = [threading.Thread(target=hammer, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    assert not bad, bad[:5]


GRAM_CASES = [(16, 26, 42), (32, 26, 42), (5, 26, 42), (40, 10, 600), (51, 6, 2), (16, 8, 258), (16, 16, 256)]


@pytest.mark.parametrize("c1,h,w", GRAM_CASES, ids=[f"c{c}-{h}x{w}" for c, h, w in GRAM_CASES])
def test_native_fill_statistics_equal_float64_products_on_any_thread_count(c1, h, w):
    """The statistics native.fill computes on the X it writes, [d | 1]ᵀ·X and Σ X² per column, against
    float64 products of the in-frame half-pixels: padding columns and rows skipped, every band of
    rows counted once, whatever the number of threads, with features copied in (float32, or
    bfloat16 widened exactly) or already in X. The widths cover every tile shape of the kernel
    (c1 5…51: 3 to 8 vectors per row of X), lines of one half-pixel (the copied last one only), runs
    of 128 with a remainder, and a frame with no padding (its last half-pixel ends X's buffer)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    hp, wp, k = h + (-h % 8), w + (-w % 8), c1 + 13
    gen = torch.Generator().manual_seed(c1 * 1000 + w)
    rgb = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
    d = (torch.randn(1, c1, hp // 2, wp // 2, generator=gen) * 3.0 + 1.0).contiguous(memory_format=torch.channels_last)
    for threads in (1, 2, 5):
        for with_d in (torch.float32, torch.bfloat16, None):
            x = torch.full((hp // 2 * (wp // 2), k), float("nan"))
            feats = d if with_d is None else d.to(with_d)  # bfloat16 keeps channels_last
            if with_d is None:
                x[:, :c1] = d.permute(0, 2, 3, 1).reshape(-1, c1)
            hist, stats = native.fill(x, c1, rgb, hp, wp, 2, threads, d=None if with_d is None else feats, gram=True)
            assert not x.isnan().any()
            assert torch.equal(x[:, :c1], feats.float().permute(0, 2, 3, 1).reshape(-1, c1)), (threads, with_d)
            inside = x.view(hp // 2, wp // 2, k)[: h // 2, : w // 2].reshape(-1, k).double()
            assert torch.allclose(stats.g, inside[:, : c1 + 1].T @ inside, rtol=1e-5, atol=1e-3), (threads, with_d)
            assert torch.allclose(stats.sq, (inside**2).sum(0), rtol=1e-5), (threads, with_d)
            assert stats.seconds > 0.0
            hist_only, none = native.fill(x, c1, rgb, hp, wp, 2, threads, d=None if with_d is None else feats)
            assert none is None and np.array_equal(hist_only, hist)
            # store: X keeps another frame's pixels (the luma path's colour frame), the rest is rgb's
            other = np.ascontiguousarray(255 - rgb[:, ::-1])
            xs = torch.full_like(x, float("nan"))
            if with_d is None:
                xs[:, :c1] = x[:, :c1]
            hist_s, stats_s = native.fill(xs, c1, rgb, hp, wp, 2, threads, d=None if with_d is None else feats,
                                          gram=True, store=other)
            assert np.array_equal(hist_s, hist) and torch.equal(stats_s.g, stats.g) and torch.equal(stats_s.sq, stats.sq)
            native.fill(x, c1, other, hp, wp, 2, threads)  # X's [1 | noisy] from `other`, its features kept
            assert torch.equal(xs, x), (threads, with_d)


FILL_SIZES = [(1, 1), (2, 2), (3, 5), (7, 1), (17, 33), (64, 96), (260, 270), (301, 257)]


@pytest.mark.parametrize("size", FILL_SIZES, ids=[f"{h}x{w}" for h, w in FILL_SIZES])
def test_native_fill_gives_the_torch_columns_and_the_noise_estimate(models, size):
    """The C fill of X's [1 | noisy] columns (replicate padding included) equals torch's, and the
    noise estimate it reads in the same pass equals model.estimate_noise_sigma (the sizes above
    256×256 use its sparser grid)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    den = Denoiser(copy.deepcopy(models["live"]), "cpu")
    rgb = np.random.default_rng(size[0] * 7 + size[1]).integers(0, 256, (*size, 3), dtype=np.uint8)
    rgb[: size[0] // 2] = np.clip(rgb[: size[0] // 2] // 8 + 100, 0, 255)  # two noise levels in one frame
    got = {}
    for path in ("native", "torch"):
        den.native_stats = path == "native"
        for threads in (1, 3):
            torch.set_num_threads(threads)
            try:
                b = den.infer(rgb)
            finally:
                torch.set_num_threads(1)
            got[path, threads] = (b.x[:, den.c1 :].clone(), b.sigma_est)
    ref_cols, ref_sigma = got["torch", 1]
    for key, (cols, sigma) in got.items():
        assert torch.equal(cols, ref_cols), key
        assert sigma == ref_sigma, key
    assert ref_sigma == pytest.approx(float(estimate_noise_sigma(torch.from_numpy(rgb[None, :, :, 1]))[0]))


JOIN_CASES = [(16, 2, 2), (16, 6, 10), (32, 40, 64), (5, 4, 6), (40, 8, 14)]


@pytest.mark.parametrize("c,h,w", JOIN_CASES, ids=[f"c{c}-{h}x{w}" for c, h, w in JOIN_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_native_skip_join_equals_upsample_add_relu(c, h, w, dtype):
    """rcd_up_add_relu: nearest-×2(u) + e, its relu and Σ|d| per channel, as torch computes them in
    float32 and in bfloat16, bit for bit (c = 5 takes the scalar tail only, c = 40 five full
    vectors), on 1 and 3 threads, and written over e."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(c * 100 + h)
    u = torch.randn(1, c, h // 2, w // 2, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    e = torch.randn(1, c, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    want = F.interpolate(u, scale_factor=2.0) + e  # in dtype: bfloat16 rounds each sum once
    for threads in (1, 3):
        d, r, sums = native.up_add_relu(u, e, threads, abs_sum=True)
        assert d.dtype == r.dtype == dtype
        assert torch.equal(d, want) and torch.equal(r, F.relu(want)), threads
        assert d.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(sums, want.double().abs().sum(dim=(0, 2, 3)), rtol=1e-6, atol=1e-9)
    _, _, none = native.up_add_relu(u, e, 1)
    assert none is None
    e2 = e.clone()
    d, r, _ = native.up_add_relu(u, e2, 3, in_place=True)  # d written over e: each value read first
    assert d is e2 and torch.equal(d, want) and torch.equal(r, F.relu(want))


CONV_JOIN_CASES = [(32, 16, 2, 2), (40, 32, 6, 26), (64, 32, 4, 30), (96, 64, 8, 6), (5, 8, 18, 4), (16, 40, 2, 50)]


@pytest.mark.parametrize("ci,c,h,w", CONV_JOIN_CASES, ids=[f"{ci}to{c}-{h}x{w}" for ci, c, h, w in CONV_JOIN_CASES])
def test_native_conv_join_equals_conv_then_join(ci, c, h, w):
    """rcd_conv_up_add_relu: the skip join of the 1×1 convolution of relu(x), computed a row at a time,
    against torch's convolution and upsampling (the shipped widths, 1–4 vectors of outputs and a
    tail of pixels after the blocks of 12, 6, 4 and 3); the same floats on 1 and 3 threads, since a
    band of rows may start at an odd row (the upper row of its u shared with the band before)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(ci * 7 + c + h)
    x = torch.randn(1, ci, h // 2, w // 2, generator=g).contiguous(memory_format=torch.channels_last)  # signed
    e = torch.randn(1, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(c, ci, 1, 1, generator=g), torch.randn(c, generator=g)
    want = F.interpolate(F.conv2d(F.relu(x), weight, bias), scale_factor=2.0) + e
    got = [native.conv_up_add_relu(x, weight, bias, e, threads, abs_sum=True) for threads in (1, 3)]
    for a, b in zip(*got):
        assert torch.equal(a, b)
    d, r, sums = got[0]
    assert d.is_contiguous(memory_format=torch.channels_last) and r.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(d, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(r, F.relu(d))
    torch.testing.assert_close(sums, d.double().abs().sum(dim=(0, 2, 3)), rtol=1e-6, atol=1e-9)
    d2, none, _ = native.conv_up_add_relu(x, weight, bias, e, 3, relu=False)  # relu(d) not written
    assert none is None and torch.equal(d2, d)
    e3 = e.clone()
    d3, r3, _ = native.conv_up_add_relu(x, weight, bias, e3, 3, in_place=True)  # d written over e
    assert d3 is e3 and torch.equal(d3, d) and torch.equal(r3, r)
    with pytest.raises(AssertionError):  # outputs in whole vectors of 8 only
        native.conv_up_add_relu(x, weight[:5], bias[:5], e[:, :5].contiguous(memory_format=torch.channels_last), 1)


# (c, h, w): the shipped widths (16, 40; 32, 64, 96 in quality), 1–5 vectors of outputs with blocks of
# 3, 4, 6 and 12 tiles, frames smaller than a tile, and rows and columns that end mid-tile.
RES3_CASES = [(16, 36, 64), (40, 9, 16), (8, 1, 1), (24, 5, 7), (32, 17, 33), (96, 6, 99), (64, 4, 52), (8, 30, 150)]


@pytest.mark.parametrize("c,h,w", RES3_CASES, ids=[f"{c}-{h}x{w}" for c, h, w in RES3_CASES])
def test_native_winograd_block_equals_the_residual_conv(c, h, w):
    """rcd_res3x3: x ← x + conv3×3(relu(x)) in place by Winograd F(4×4, 3×3), against torch's
    convolution in float64, within the transforms' rounding (4e-6 of the values' scale where a direct
    one gives 1e-7: a wrong transform coefficient, a lost tile or a value read after it was
    overwritten is off by the scale itself); the same floats on 1, 2 and 3 threads (bands of tile
    rows whose edges read the neighbouring band's rows)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(c * 31 + h * 7 + w)
    x = torch.randn(1, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)  # signed
    weight, bias = torch.randn(c, c, 3, 3, generator=g) / (3 * c**0.5), torch.randn(c, generator=g)
    want = x.double() + F.conv2d(F.relu(x).double(), weight.double(), bias.double(), padding=1)
    u = native.winograd_weights(weight)
    got = [native.res3x3_(x.clone(), u, bias, threads) for threads in (1, 2, 3)]
    assert torch.equal(got[0], got[1]) and torch.equal(got[0], got[2])
    assert got[0].is_contiguous(memory_format=torch.channels_last) and got[0].dtype == torch.float32
    err = float((got[0].double() - want).abs().max() / want.abs().max())
    assert err < 2e-5, err
    with pytest.raises(AssertionError):  # transformed weights of another width
        native.res3x3_(x, u[:, :4].contiguous(), bias, 1)
    odd = torch.randn(1, 5, 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError):  # channels in whole vectors of 8 only
        native.res3x3_(odd, native.winograd_weights(torch.randn(5, 5, 3, 3)), torch.zeros(5), 1)


# (c, ci, h, w): the shipped joins into blocks (live 1/2: 32 → 16; quality 1/4 and 1/2), bands of
# tile rows whose halo rows fall on odd and even rows, frames of one and two tile rows
JOIN_RES3_CASES = [(16, 32, 36, 64), (64, 96, 10, 18), (32, 64, 22, 30), (8, 16, 2, 4), (24, 8, 6, 10)]


@pytest.mark.parametrize("c,ci,h,w", JOIN_RES3_CASES, ids=[f"{c}from{ci}-{h}x{w}" for c, ci, h, w in JOIN_RES3_CASES])
def test_native_join_inside_the_winograd_block(c, ci, h, w):
    """rcd_join_res3x3: the skip join (rcd_conv_up_add_relu's d = nearest-×2(conv1×1(relu(xc))) + x)
    done row by row inside the block's pass gives the same floats as the join's own pass followed by
    the block, on 1, 2 and 3 threads (each band joins its halo rows into its copies before any
    thread writes: a band that read a neighbour's row unjoined, or joined twice, is off by u)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(c + ci + h + w)
    e = torch.randn(1, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    xc = torch.randn(1, ci, h // 2, w // 2, generator=g).contiguous(memory_format=torch.channels_last)  # signed
    jw, jb = torch.randn(c, ci, 1, 1, generator=g) / ci**0.5, torch.randn(c, generator=g)
    weight, bias = torch.randn(c, c, 3, 3, generator=g) / (3 * c**0.5), torch.randn(c, generator=g)
    u = native.winograd_weights(weight)
    d, _, _ = native.conv_up_add_relu(xc, jw, jb, e.clone(), 1, relu=False, in_place=True)
    want = native.res3x3_(d, u, bias, 1)
    for threads in (1, 2, 3):
        got = native.res3x3_(e.clone(), u, bias, threads, join=(xc, jw, jb))
        assert torch.equal(got, want), (threads, float((got - want).abs().max()))
    with pytest.raises(AssertionError):  # the coarser scale must be half the size
        native.res3x3_(e.clone(), u, bias, 1, join=(e, jw, jb))


DOWN_CASES = [(16, 32, 6, 14), (32, 40, 4, 26), (64, 96, 2, 2), (5, 8, 6, 10), (16, 24, 8, 30)]


@pytest.mark.parametrize("c,co,h,w", DOWN_CASES, ids=[f"{c}to{co}-{h}x{w}" for c, co, h, w in DOWN_CASES])
def test_native_relu_down_equals_conv_of_relu(c, co, h, w):
    """rcd_relu_down: conv2d(relu(e)) with a 2×2 stride-2 kernel, against torch, for output widths
    that leave a tail after its blocks of pixels (w/2 = 7, 13, 15) and 1–3 chunks of output vectors."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(c + co)
    e = torch.randn(1, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(co, c, 2, 2, generator=g), torch.randn(co, generator=g)
    want = F.conv2d(F.relu(e), weight, bias, stride=2)
    for threads in (1, 3):
        got = native.relu_down(e, weight, bias, threads)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


FIRST_CASES = [(16, 1, 1, 8, 8), (8, 17, 33, 24, 40), (24, 50, 70, 56, 72), (32, 9, 30, 16, 40)]


@pytest.mark.parametrize("co,h,w,hp,wp", FIRST_CASES, ids=[f"{co}-{h}x{w}" for co, h, w, _, _ in FIRST_CASES])
def test_native_first_layer_reads_the_padded_uint8_frame(co, h, w, hp, wp):
    """rcd_inp: the 4×4 stride-2 first convolution straight from uint8, with the replicate padding to
    hp × wp and the convolution's zero padding, against torch on the padded float frame (1 to 4
    chunks of output vectors, output widths with and without a tail)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    g = torch.Generator().manual_seed(co + h)
    rgb = np.random.default_rng(co + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    weight, bias = torch.randn(co, 3, 4, 4, generator=g) / 255.0, torch.randn(co, generator=g)
    x = F.pad(torch.from_numpy(rgb).float().permute(2, 0, 1)[None], (0, wp - w, 0, hp - h), mode="replicate")
    want = F.conv2d(x, weight, bias, stride=2, padding=1)
    for threads in (1, 3):
        got = native.first_conv(rgb, hp, wp, weight, bias, threads)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_avx512_backbone_kernels_give_the_avx2_floats():
    """On a CPU with AVX-512 the first layer, the downsampling and the skip joins run 16-lane kernels
    (kernels.c, inp_pixels_512, down_pixels_512, join_row_512_any): each output sums the same
    products in the same order as the AVX2 kernels, so the floats are equal — for the cases above
    and for rows long enough for the 24-pixel blocks, output widths of 16 (one vector), 32 (two), 40
    and 24 (an 8-lane tail); the joins in float32 and bfloat16, with their per-channel sums, for
    channel counts with a masked tail (5, 12, 40) and without (16, 32)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    if native.set_isa("AVX-512") != "AVX-512":
        pytest.skip("this CPU has no AVX-512")
    g = torch.Generator().manual_seed(0)
    try:
        for c, co, h, w in [*DOWN_CASES, (16, 16, 2, 100), (3, 40, 4, 98)]:
            e = torch.randn(1, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
            weight, bias = torch.randn(co, c, 2, 2, generator=g), torch.randn(co, generator=g)
            for threads in (1, 3):
                got = {isa: native.set_isa(isa) and native.relu_down(e, weight, bias, threads) for isa in ("AVX2", "AVX-512")}
                assert torch.equal(got["AVX2"], got["AVX-512"]), (c, co, h, w, threads)
        for co, h, w, hp, wp in [*FIRST_CASES, (16, 5, 100, 8, 104), (40, 3, 60, 8, 64)]:
            rgb = np.random.default_rng(co + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
            weight, bias = torch.randn(co, 3, 4, 4, generator=g) / 255.0, torch.randn(co, generator=g)
            for threads in (1, 3):
                got = {isa: native.set_isa(isa) and native.first_conv(rgb, hp, wp, weight, bias, threads)
                       for isa in ("AVX2", "AVX-512")}
                assert torch.equal(got["AVX2"], got["AVX-512"]), (co, h, w, threads)
        for c, h, w in [*JOIN_CASES, (12, 6, 34), (32, 4, 8)]:
            for dtype in (torch.float32, torch.bfloat16):
                u = torch.randn(1, c, h // 2, w // 2, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
                e = torch.randn(1, c, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
                for threads in (1, 3):
                    got = {isa: native.set_isa(isa) and native.up_add_relu(u, e, threads, abs_sum=True)
                           for isa in ("AVX2", "AVX-512")}
                    for a, b in zip(got["AVX2"], got["AVX-512"]):
                        assert torch.equal(a, b), (c, h, w, dtype, threads)
    finally:
        native.set_isa("best")


def test_avx512_statistics_are_the_avx2_statistics():
    """The fill's statistics [d | 1]ᵀ·X and Σ X² with AVX-512 tiles (kernels.c, gram_run_512) sum the
    same products in the same order per lane as the AVX2 tiles: equal float64 results, and the same
    X and noise histogram, for the shipped c1 (16, 32) and others (odd, under and over 32), with
    float32 features, bfloat16 ones (at the AVX-512 level: no tiles) and features already in X."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    if native.set_isa("AVX-512") != "AVX-512":
        pytest.skip("this CPU has no AVX-512")
    try:
        for c1, h, w in [(16, 40, 72), (32, 24, 64), (13, 30, 52), (8, 6, 10), (40, 32, 48), (24, 2, 300)]:
            hp, wp = h + (-h % 8), w + (-w % 8)
            rgb = np.random.default_rng(c1).integers(0, 256, (h, w, 3), dtype=np.uint8)
            d = torch.randn(1, c1, hp // 2, wp // 2, generator=torch.Generator().manual_seed(c1))
            d = d.contiguous(memory_format=torch.channels_last)
            for feats, threads in itertools.product((d, d.to(torch.bfloat16), None), (1, 3)):
                got = {}
                for isa in ("AVX2", "AVX-512"):
                    native.set_isa(isa)
                    x = torch.full(((hp // 2) * (wp // 2), c1 + 13), float("nan"))
                    if feats is None:
                        x[:, :c1] = d.permute(0, 2, 3, 1).reshape(-1, c1)
                    hist, stats = native.fill(x, c1, rgb, hp, wp, 2, threads, d=feats, gram=True)
                    got[isa] = (x, hist, stats.g, stats.sq)
                (xa, ha, ga, sa), (xb, hb, gb, sb) = got["AVX2"], got["AVX-512"]
                dtype = None if feats is None else feats.dtype
                assert not xa.isnan().any(), (c1, h, w, threads, dtype)
                assert torch.equal(xa, xb) and np.array_equal(ha, hb), (c1, h, w, threads, dtype)
                assert torch.equal(ga, gb) and torch.equal(sa, sb), (c1, h, w, threads, dtype)
    finally:
        native.set_isa("best")


def test_amx_statistics_are_the_vector_statistics_within_float32_rounding():
    """On a CPU with AMX the fill sums its statistics for bfloat16 features of width 16 or 32 on the
    tile unit (kernels.c, gram_line_amx): every value of X is then a bfloat16, so the products are
    exact and only the order of the float32 sums differs — within rounding of the AVX-512 statistics
    and of float64 products, for lines shorter than one 32-half-pixel block, partial blocks and
    several 128-half-pixel runs; the same bits on any number of threads; X and the noise histogram
    unchanged. Float32 features and other widths keep the vector code (the same bits as AVX-512).
    oneDNN's bfloat16 convolutions, which configure the tiles their own way, give the same output
    after the fill as before it."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    if native.set_isa("best") != "AVX-512+AMX":
        pytest.skip("this CPU has no AMX (or RCD_NATIVE_AMX=0)")
    g = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).to(torch.bfloat16).to(memory_format=torch.channels_last)
    probe = torch.randn(1, 16, 24, 40, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = conv(probe)
    tiles_differ = False
    try:
        for c1, h, w in [(16, 2, 10), (16, 6, 66), (16, 40, 600), (32, 10, 70), (32, 24, 520), (24, 8, 100)]:
            hp, wp = h + (-h % 8), w + (-w % 8)
            rgb = np.random.default_rng(c1 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
            d = (torch.randn(1, c1, hp // 2, wp // 2, generator=g) * 3.0 + 1.0).contiguous(memory_format=torch.channels_last)
            for dtype in (torch.bfloat16, torch.float32):
                feats = d.to(dtype)  # keeps channels_last
                got = {}
                for isa in ("AVX-512", "best"):
                    native.set_isa(isa)
                    for threads in (1, 3):
                        x = torch.full(((hp // 2) * (wp // 2), c1 + 13), float("nan"))
                        hist, stats = native.fill(x, c1, rgb, hp, wp, 2, threads, d=feats, gram=True)
                        got[isa, threads] = (x, hist, stats.g, stats.sq)
                tiles = native.stats_on_tiles(c1, dtype)
                assert tiles == (dtype == torch.bfloat16 and c1 in (16, 32))
                x0, h0, g0, s0 = got["AVX-512", 1]
                for (isa, threads), (x1, h1, g1, s1) in got.items():
                    assert torch.equal(x1, x0) and np.array_equal(h1, h0), (c1, h, w, dtype, isa, threads)
                    if isa == "AVX-512" or not tiles:
                        assert torch.equal(g1, g0) and torch.equal(s1, s0), (c1, h, w, dtype, isa, threads)
                if tiles:
                    (_, _, ga, sa), (_, _, gb, sb) = got["best", 1], got["best", 3]
                    assert torch.equal(ga, gb) and torch.equal(sa, sb), (c1, h, w)
                    inside = x0.view(hp // 2, wp // 2, -1)[: h // 2, : w // 2].reshape(-1, c1 + 13).double()
                    assert torch.allclose(ga, inside[:, : c1 + 1].T @ inside, rtol=1e-5, atol=1e-3), (c1, h, w)
                    assert torch.allclose(sa, (inside**2).sum(0), rtol=1e-5), (c1, h, w)
                    assert torch.allclose(ga, g0, rtol=1e-5, atol=1e-3) and torch.allclose(sa, s0, rtol=1e-5)
                    tiles_differ |= not torch.equal(ga, g0)
    finally:
        native.set_isa("best")
    assert tiles_differ, "the tile statistics came out bit-identical to the vector ones: were the tiles used?"
    with torch.no_grad():
        assert torch.equal(conv(probe), before)


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("blocks", ["winograd", "onednn"])
def test_fused_backbone_gives_the_reference_features(models, preset, blocks, monkeypatch):
    """engine/fused.py (the first layer from the uint8 frame with its padding, native downsampling,
    residual blocks on the native Winograd kernel or as oneDNN's in-place conv + add, native skip
    joins) against model.Backbone.features on the padded float frame, with random weights, at sizes
    that need padding; and inside the Denoiser: the same X, transform and AutoTune whether the fused
    path runs or not."""
    from engine import fused

    wino = blocks == "winograd"

    bb = copy.deepcopy(models[preset]).backbone.to(memory_format=torch.channels_last)
    if fused.available(bb):
        pytest.skip(fused.available(bb))
    g = torch.Generator().manual_seed(11)  # its own: the global RNG's state depends on the tests run before
    with torch.no_grad():  # random biases too: a missed bias or a swapped operand shows
        for m in bb.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    for h, w in ((8, 8), (1, 1), (17, 33), (64, 90)):  # the frame; padded to multiples of 8 below
        hp, wp = h + (-h % 8), w + (-w % 8)
        rgb = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = torch.from_numpy(rgb).float().permute(2, 0, 1)[None]  # (1, 3, h, w), 0..255
        x = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate").contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            d_ref, f_ref = bb.features(x)
            d, f = fused.features(bb, rgb, hp, wp, wino=wino)
        assert d.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(d, d_ref, rtol=1e-5, atol=1e-5 * float(d_ref.abs().max()))
        # the pooled statistics: Σ|d2| is summed per row in float32, then in float64 (torch: one
        # float32 mean), so they agree to float32 summation error, about 1e-4 of the largest
        torch.testing.assert_close(f, f_ref, rtol=1e-4, atol=1e-5 * float(f_ref.abs().max()))
    # Another frame of the same size on this thread: the pass reuses its buffers (fused._scratch),
    # and nothing in it depends on what they held
    rgb2 = np.random.default_rng(99).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x2 = torch.from_numpy(rgb2).float().permute(2, 0, 1)[None]
    x2 = F.pad(x2, (0, wp - w, 0, hp - h), mode="replicate").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        d_ref, _ = bb.features(x2)
        ptr = d.data_ptr()
        d, _ = fused.features(bb, rgb2, hp, wp, wino=wino)
    assert d.data_ptr() == ptr, "the second pass made new buffers"
    torch.testing.assert_close(d, d_ref, rtol=1e-5, atol=1e-5 * float(d_ref.abs().max()))

    den = Denoiser(copy.deepcopy(models[preset]), "cpu", precision="fp32")  # float32: a bf16 CPU picks bf16
    assert den.fused_backbone and den.backbone_kernel.startswith("fused")
    den.winograd = wino
    assert ("Winograd" in den.backbone_kernel) == wino
    rgb = textured(50, 70, seed=11, lo=0, hi=255)
    got = {}
    for on in (True, False):
        den.fused_backbone = on
        got[on] = den.infer(rgb)
    assert den.backbone_kernel.startswith("torch")
    a, b = got[True], got[False]
    torch.testing.assert_close(a.x, b.x, rtol=1e-5, atol=1e-5 * float(b.x[:, : den.c1].abs().max()))
    torch.testing.assert_close(a.transform, b.transform, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(a.auto, b.auto, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fused_bfloat16_backbone_is_as_accurate_as_autocast(models, preset):
    """engine/fused.py in bfloat16 (oneDNN's bf16 convolutions, native bf16 skip joins) against the
    float32 reference: within what torch's autocast, the plain bfloat16 forward, gets — a wrong
    operand or a lost bias would be off by far more than bfloat16 rounding. Inside the Denoiser, the
    bases it gives match the float32 ones to bfloat16 accuracy."""
    from engine import fused

    bb = copy.deepcopy(models[preset]).backbone.to(memory_format=torch.channels_last)
    if fused.available(bb, torch.bfloat16):
        pytest.skip(fused.available(bb, torch.bfloat16))
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    rms = lambda a, ref: float((a.float() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    for h, w in ((8, 8), (1, 1), (17, 33), (64, 90)):
        hp, wp = h + (-h % 8), w + (-w % 8)
        rgb = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = torch.from_numpy(rgb).float().permute(2, 0, 1)[None] / 255.0  # (1, 3, h, w), as the model reads it
        x = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate").contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            d_ref, f_ref = bb.features(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                d_auto, f_auto = bb.features(x)
            bb.inp.weight.mul_(1.0 / 255.0)  # the fused path reads 0..255, as the Denoiser sets it up
            d, f = fused.features(bb, rgb, hp, wp, torch.bfloat16)
            bb.inp.weight.mul_(255.0)
        assert d.dtype == torch.bfloat16 and d.is_contiguous(memory_format=torch.channels_last)
        assert f.dtype == torch.float32 and f.shape == f_ref.shape
        assert rms(d, d_ref) <= 1.5 * rms(d_auto, d_ref) + 2e-3, (h, w, rms(d, d_ref), rms(d_auto, d_ref))
        assert rms(f, f_ref) <= 1.5 * rms(f_auto, f_ref) + 2e-3, (h, w, rms(f, f_ref), rms(f_auto, f_ref))

    den = Denoiser(copy.deepcopy(models[preset]), "cpu", precision="bf16")
    assert den.fused_backbone and den.backbone_kernel.startswith("fused") and "bfloat16" in den.backbone_kernel
    ref = Denoiser(copy.deepcopy(models[preset]), "cpu", precision="fp32")
    rgb = textured(50, 70, seed=11, lo=0, hi=255)
    a, b = den.infer(rgb), ref.infer(rgb)
    c1 = den.c1
    assert rms(a.x[:, :c1], b.x[:, :c1]) < 0.02
    assert torch.equal(a.x[:, c1:], b.x[:, c1:])  # the ones and the noisy frame are not the backbone's
    torch.testing.assert_close(a.auto, b.auto, rtol=0.05, atol=0.02)


def test_winograd_blocks_are_chosen_by_the_cpu_or_by_timing(models, monkeypatch):
    """pick_winograd: on where the kernels run AVX2 (measured there), with no probe; where they run
    AVX-512, what a timing of both finds faster (nothing timed: oneDNN); never in bfloat16 or with
    RCD_NATIVE_WINOGRAD=0. A Denoiser on an AVX-512 CPU times both and keeps the faster."""
    from engine import denoiser as dn
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    calls = []
    faster_on = lambda on: calls.append(on) or (1.0 if on else 2.0)
    monkeypatch.setattr(native, "vector_isa", lambda: "AVX2")
    assert dn.pick_winograd(torch.float32, faster_on) and calls == []
    assert not dn.pick_winograd(torch.bfloat16, faster_on)
    monkeypatch.setattr(native, "vector_isa", lambda: "AVX-512")
    assert dn.pick_winograd(torch.float32, faster_on) and sorted(calls) == [False, True]
    assert not dn.pick_winograd(torch.float32, lambda on: 2.0 if on else 1.0)
    assert not dn.pick_winograd(torch.float32)
    for faster in (True, False):
        timed = []

        def fake(self, dtype, runs=2, wino=None, faster=faster):
            timed.append(wino)
            return 1.0 if (self.winograd if wino is None else wino) == faster else 2.0

        monkeypatch.setattr(dn.Denoiser, "_time_backbone", fake)
        den = Denoiser(copy.deepcopy(models["live"]), "cpu", precision="fp32")
        assert den.winograd == faster and {True, False} <= set(timed)
        assert ("Winograd" in den.backbone_kernel) == faster
    monkeypatch.setenv(native.ENV_WINOGRAD, "0")
    monkeypatch.setattr(native, "vector_isa", lambda: "AVX2")
    assert not dn.pick_winograd(torch.float32, faster_on)


def test_precision_probe_times_the_fused_paths_that_would_run(models, monkeypatch):
    """bfloat16 must beat the fused float32 forward where that is what float32 runs, not the plain
    one; and it is timed through its own fused forward where that runs."""
    from engine import fused
    from engine.denoiser import PROBE_SIZE

    den = Denoiser(copy.deepcopy(models["live"]), "cpu", precision="fp32")  # float32: a bf16 CPU picks bf16
    if not den.fused_backbone:
        pytest.skip("the fused path does not run here")
    calls = []
    real = fused.features
    monkeypatch.setattr(fused, "features", lambda *a, **kw: calls.append(a[2:]) or real(*a, **kw))
    dtypes = [torch.float32] + ([torch.bfloat16] if fused.available(den.model.backbone, torch.bfloat16) == "" else [])
    for dtype in dtypes:
        calls.clear()
        assert den._time_backbone(dtype, runs=1) > 0
        assert calls and all(a == (*PROBE_SIZE, dtype) for a in calls), dtype


def test_loading_a_model_leaves_the_global_rng_alone(models, monkeypatch):
    """Creating a Denoiser runs the fused path's check and, on bfloat16 CPUs, the precision probe;
    seeded code after it must draw the numbers it drew before."""
    from engine import fused

    den = Denoiser(copy.deepcopy(models["live"]), "cpu")
    monkeypatch.setattr(fused, "_conv_add_ok", {})
    torch.manual_seed(7)
    want = torch.rand(4)
    torch.manual_seed(7)
    fused._in_place_conv_add_works()
    den._time_backbone(torch.float32, runs=1)
    assert torch.equal(torch.rand(4), want)


def test_fused_backbone_is_off_without_the_in_place_conv_add(models, monkeypatch):
    """Where torch lacks oneDNN's in-place conv + add (or it gives other numbers), the plain forward runs."""
    from engine import fused

    monkeypatch.setattr(fused, "_conv_add_ok", {})
    monkeypatch.setattr(fused, "_conv_add_", lambda y, x, conv: y)  # a "fusion" that forgets the conv
    assert fused.available().startswith("this torch has no in-place")
    den = Denoiser(copy.deepcopy(models["live"]), "cpu", precision="fp32")  # float32: a bf16 CPU picks bf16
    assert not den.fused_backbone and "fused path not used" in den.backbone_kernel


def test_native_build_goes_to_the_temp_folder_when_the_cache_is_unwritable(monkeypatch, tmp_path):
    from engine import native

    if native._cpu_supported() or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no native build on this machine")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert native.library() is not None, native.why_not
    assert len(list((tmp_path / "tmp").rglob("kernels-*.so"))) == 1


def test_isa_switches_in_the_environment_lower_the_level():
    """RCD_NATIVE_AMX=0 keeps the statistics off the tiles, RCD_NATIVE_AVX512=0 keeps every kernel on
    AVX2 (read when the library loads: a fresh process each)."""
    from engine import native

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    best = native.set_isa("best")
    probe = "from engine import native; print(native.isa(), native.vector_isa())"
    for env, want in ((native.ENV_AMX, best.removesuffix("+AMX")), (native.ENV_AVX512, "AVX2")):
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           env={**os.environ, env: "0"}, cwd=Path(__file__).resolve().parents[1])
        assert r.returncode == 0 and r.stdout.split() == [want, want], (env, r.stdout, r.stderr)


def test_native_build_keeps_the_most_recently_used_other_builds(monkeypatch, tmp_path):
    """A new build deletes the cache's builds of other source versions but the KEEP_BUILDS most
    recently used, so two checkouts used in turn keep theirs; loading a build marks it used."""
    from engine import native

    if native._cpu_supported() or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no native build on this machine")
    cache = tmp_path / "cache" / "rcd-player"
    cache.mkdir(parents=True)
    olds = [cache / f"kernels-{i:016x}.so" for i in range(native.KEEP_BUILDS + 2)]
    for i, old in enumerate(olds):
        old.write_bytes(b"an older build")
        os.utime(old, (1000.0 + i, 1000.0 + i))  # olds[-1] the most recently used
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native.library() is not None, native.why_not
    kept = sorted(p.name for p in cache.glob("kernels-*.so"))
    new = cache / native._library_name()
    assert new.exists() and new.stat().st_mtime > 2000.0
    assert kept == sorted([new.name] + [p.name for p in olds[-native.KEEP_BUILDS :]]), kept
    os.utime(new, (1500.0, 1500.0))  # loading the existing build again marks it used
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    assert native.library() is not None and new.stat().st_mtime > 2000.0


def test_native_kernels_off_or_unbuildable_give_a_reason_and_the_torch_path(models, monkeypatch, tmp_path):
    from engine import native

    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("RCD_NATIVE", "0")
    assert native.library() is None and "RCD_NATIVE=0" in native.why_not
    den = Denoiser(copy.deepcopy(models["live"]), "cpu")
    assert not den.native_blend
    assert den.blend(den.infer(textured(9, 14))).shape == (9, 14, 3)

    if native._cpu_supported():
        return  # the build is never tried on this CPU
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.delenv("RCD_NATIVE")
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert native.library() is None
    assert native.why_not.startswith("false failed on engine/csrc") and "\n" not in native.why_not
    assert not list((tmp_path / "cache").rglob("*.so"))  # no half-written library left behind


SMALL_SIZES = [(1, 1), (17, 33), (2, 2), (7, 1)]


def _check_size(model, den, h, w):
    rgb = textured(h, w, seed=h * 31 + w, lo=0, hi=255)
    with torch.no_grad():
        fwd_bases, coeffs = model(as_input(rgb))
    l = model.cfg.num_levels
    assert fwd_bases.shape == (1, l, 3, h, w) and fwd_bases.dtype == torch.float32
    assert torch.isfinite(fwd_bases).all() and torch.isfinite(coeffs).all()
    bases = den.infer(rgb)
    maps = den.maps(bases).cpu()
    assert maps.shape == (l, 3, h, w) and torch.isfinite(maps).all()
    assert torch.equal(den.noisy(bases).cpu(), torch.from_numpy(rgb).permute(2, 0, 1).float())
    for mix in (compose.Mix(), compose.Mix(strength=25.0, character=-0.5, luma=0.8, chroma=1.2)):
        out = den.blend(bases, mix)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert math.isfinite(bases.sigma_est) and math.isfinite(float(bases.auto.sum()))


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("size", SMALL_SIZES, ids=[f"{h}x{w}" for h, w in SMALL_SIZES])
def test_odd_and_tiny_sizes_give_right_shape_dtype_and_no_nan(models, denoisers, preset, size):
    _check_size(models[preset], denoisers[preset], *size)


@pytest.mark.slow
def test_full_hd_frame_gives_right_shape_dtype_and_no_nan(models, denoisers):
    _check_size(models["live"], denoisers["live"], 1080, 1920)


# --------------------------------------------------------------------------- precision

def test_cpu_backbone_precision_is_bf16_only_where_the_probe_finds_it_faster(monkeypatch):
    from engine import denoiser as dn

    cpu = torch.device("cpu")
    calls = []

    def probe(times):
        return lambda dtype: calls.append(dtype) or times[dtype]

    fast_bf16 = probe({torch.float32: 10.0, torch.bfloat16: 2.0})
    slow_bf16 = probe({torch.float32: 10.0, torch.bfloat16: 9.8})
    monkeypatch.setattr(dn, "cpu_has_bf16", lambda: True)
    assert dn.pick_dtype(cpu, "auto", fast_bf16) == torch.bfloat16
    assert dn.pick_dtype(cpu, "auto", slow_bf16) == torch.float32  # under BF16_MIN_SPEEDUP
    assert dn.pick_dtype(cpu, "auto") == torch.float32  # nothing measured: the safe choice
    monkeypatch.setattr(dn, "cpu_has_bf16", lambda: False)
    calls.clear()
    assert dn.pick_dtype(cpu, "auto", fast_bf16) == torch.float32 and calls == []  # no bf16: no probe
    assert dn.pick_dtype(cpu, "bf16") == torch.bfloat16 and dn.pick_dtype(cpu, "fp32") == torch.float32


def test_probe_times_the_backbone_in_each_precision(models):
    den = Denoiser(copy.deepcopy(models["live"]), "cpu", precision="fp32")
    for dtype in (torch.float32, torch.bfloat16):
        seconds = den._time_backbone(dtype, runs=1)
        assert 0.0 < seconds < 30.0


def test_bf16_backbone_gives_the_fp32_frame_within_a_few_levels(models):
    rgb = textured(64, 96, seed=21, lo=0, hi=255)
    outs = {}
    for precision in ("fp32", "bf16"):
        den = Denoiser(copy.deepcopy(models["live"]), "cpu", precision=precision)
        bases = den.infer(rgb)
        assert nd.offdiag_corr_max(den.maps(bases)[None]) <= 0.01  # ND holds on whatever the backbone gave
        outs[precision] = den.blend(bases, compose.Mix(strength=25.0)).astype(np.int64)
    diff = np.abs(outs["fp32"] - outs["bf16"])
    assert diff.max() <= 3 and diff.mean() <= 0.5, (diff.max(), diff.mean())


# --------------------------------------------------------------------------- checkpoints

def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_checkpoint_round_trip_gives_identical_outputs(models, tmp_path):
    x = as_input(textured(24, 40, seed=12))
    torch.manual_seed(99)
    for name in PRESET_NAMES:
        model = RCDNet(PRESETS[name]).eval()  # fresh: the fixtures' models are channels_last (Denoiser)
        with torch.no_grad():
            model.autotune.fc.weight.normal_(0, 0.05)  # non-trivial AutoTune too
        path = tmp_path / f"{name}.pt"
        checkpoint.save(model, path, meta={"steps": 7})
        loaded, meta = checkpoint.load(path)
        assert meta == {"steps": 7} and loaded.cfg == model.cfg
        (b0, c0), (b1, c1) = _outputs(model, x), _outputs(loaded, x)
        assert torch.equal(b0, b1) and torch.equal(c0, c1)
        # a model converted by Denoiser (channels_last) saves the same numbers
        checkpoint.save(models[name], path)
        reloaded, _ = checkpoint.load(path)
        for (k, v0), v1 in zip(models[name].state_dict().items(), reloaded.state_dict().values()):
            assert torch.equal(v0, v1), k


def test_truncated_checkpoint_is_refused_naming_the_file(models, tmp_path):
    path = tmp_path / "m.pt"
    checkpoint.save(models["live"], path)
    data = path.read_bytes()
    for keep in (len(data) // 2, 100, 0):
        path.write_bytes(data[:keep])
        with pytest.raises(checkpoint.CheckpointError) as e:
            checkpoint.load(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_random_bytes_file_is_refused(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


def test_checkpoint_with_altered_config_is_refused_as_mismatch(models, tmp_path):
    path = tmp_path / "m.pt"
    checkpoint.save(models["live"], path)
    blob = torch.load(path, weights_only=True)
    blob["config"]["levels"] = [5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 45.0, 50.0]  # valid config, wrong head size
    torch.save(blob, path)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "do not match" in str(e.value)
    blob["config"]["levels"] = [5.0, 50.0]  # not a valid config at all
    torch.save(blob, path)
    with pytest.raises(checkpoint.CheckpointError, match="invalid model config"):
        checkpoint.load(path)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b.update(config="live"), "invalid model config"),
    (lambda b: b["config"].update(widths=[16]), "invalid model config"),
    (lambda b: b["config"].update(widths=[-1, 32, 40]), "invalid model config"),
    (lambda b: b["config"].update(tau=0.0), "invalid model config"),
    (lambda b: b.update(state_dict=[1, 2]), "state_dict is not a mapping"),
    (lambda b: b["state_dict"]["backbone.inp.weight"].fill_(float("nan")), "NaN or infinite"),
])
def test_damaged_checkpoints_are_refused_in_one_line(models, tmp_path, damage, message):
    """Whatever is wrong inside a checkpoint, the loader says so in one line naming the file
    (these raised AttributeError, ValueError or ran into a LinAlgError during playback)."""
    path = tmp_path / "m.pt"
    checkpoint.save(models["live"], path)
    blob = torch.load(path, weights_only=True)
    damage(blob)
    torch.save(blob, path)
    with pytest.raises(checkpoint.CheckpointError, match=message) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_checkpoint_is_refused(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(checkpoint.CheckpointError, match="no such weights file") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


def test_modified_shipped_checkpoint_fails_its_sha256(models, tmp_path, monkeypatch):
    weights = (tmp_path / "weights").resolve()
    weights.mkdir()
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(checkpoint, "SUMS_FILE", weights / "SHA256SUMS")
    path = weights / "rcd_live.pt"
    checkpoint.save(models["live"], path)
    (weights / "SHA256SUMS").write_text(f"{checkpoint.sha256(path)}  rcd_live.pt\n")
    checkpoint.load("live")  # intact: accepted
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="sha256") as e:
        checkpoint.load("live")
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- evaluate and bench

def _run(args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def image_dir(tmp_path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    Image.fromarray(textured(40, 56, seed=13)).save(d / "a_colour.png")
    Image.fromarray(textured(33, 47, seed=14)[..., 1]).save(d / "b_grey.png")  # mode L
    (d / "notes.txt").write_text("not an image")
    return d


def test_evaluate_command_smoke_random_init(image_dir, tmp_path):
    out, png = tmp_path / "out.json", tmp_path / "curve.png"
    r = _run(["engine.evaluate", "--random-init", "live", "--images", str(image_dir), "--sigma", "25",
              "--json", str(out), "--limit", "2", "--threads", "1", "--plot", str(png)])
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert set(rep) == {"model", "device", "ms_per_720p_frame", "results"}
    assert set(rep["model"]) == {"config", "params", "gflops_per_720p_frame", "name", "sha256"}
    assert rep["model"]["params"] == param_count(RCDNet(PRESETS["live"]))
    assert rep["model"]["config"]["levels"] == list(PRESETS["live"].levels)
    assert rep["model"]["sha256"] is None and rep["model"]["gflops_per_720p_frame"] > 0
    assert rep["device"] == "cpu" or rep["device"].startswith("cuda")
    assert rep["ms_per_720p_frame"] > 0
    (res,) = rep["results"]
    assert list(res) == list(ev.RESULT_KEYS)
    assert res["sigma"] == 25
    assert len(res["psnr_levels"]) == len(PRESETS["live"].levels)
    assert 10 < res["psnr_noisy"] < 30 and 0 < res["ssim_autotune"] <= 1
    assert res["psnr_oracle"] >= res["psnr_best_strength"] - 1e-6  # the oracle grid contains the strength grid
    assert res["psnr_best_strength"] >= res["psnr_noisy"] - 1e-6  # strength 0 is the noisy input
    assert res["psnr_oracle"] >= res["psnr_autotune"] - 5  # sanity, not a bound
    assert 0 <= res["best_strength"] <= 60
    assert res["calibration_error_max"] <= 0.05
    assert res["nd_offdiag_max"] <= 0.01
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AutoTune" in r.stdout and "25" in r.stdout


def test_evaluate_with_weights_file_records_its_sha256(models, image_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ev, "count_flops", lambda cfg, h, w: 1e9)  # skip the slow 720p pass in-process
    monkeypatch.setattr(ev, "time_infer", lambda model, device: 1.0)
    ckpt, out = tmp_path / "m.pt", tmp_path / "out.json"
    checkpoint.save(models["live"], ckpt)
    assert ev.main(["--weights", str(ckpt), "--images", str(image_dir), "--sigma", "15,50", "--json", str(out),
                    "--limit", "1", "--seed", "3", "--device", "cpu"]) == 0
    rep = json.loads(out.read_text())
    assert rep["model"]["sha256"] == checkpoint.sha256(ckpt) and rep["model"]["name"] == str(ckpt)
    assert [r["sigma"] for r in rep["results"]] == [15, 50]
    for res in rep["results"]:
        assert res["psnr_oracle"] >= res["psnr_best_strength"] - 1e-6
    # same seed, same numbers
    out2 = tmp_path / "out2.json"
    ev.main(["--weights", str(ckpt), "--images", str(image_dir), "--sigma", "15,50", "--json", str(out2),
             "--limit", "1", "--seed", "3", "--device", "cpu"])
    assert json.loads(out2.read_text())["results"] == rep["results"]


def test_evaluate_noise_is_seeded_float_and_unclipped():
    clean = np.full((8, 8, 3), 250, np.uint8)
    a, b = ev.add_noise(clean, 50.0, 0, 0), ev.add_noise(clean, 50.0, 0, 0)
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert a.max() > 1.0  # not clipped
    assert not torch.equal(a, torch.round(a * 255) / 255)  # not quantised
    assert not torch.equal(a, ev.add_noise(clean, 50.0, 0, 1))  # image index changes the stream
    assert not torch.equal(a, ev.add_noise(clean, 50.0, 1, 0))  # so does the seed
    assert not torch.equal(a - 250 / 255, (ev.add_noise(clean, 25.0, 0, 0) - 250 / 255) * 2)  # and σ


def test_evaluate_gives_grey_images_grey_noise_and_reads_16_bit_grey(tmp_path):
    """A grey image got a noise field per channel: three noisy copies of each pixel to average. And
    Pillow's conversion clipped a 16-bit grey image to white."""
    from PIL import Image

    from engine.images import read_rgb

    grey = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[..., None] * 3, 3, axis=2)
    n = ev.add_noise(grey, 25.0, 0, 0)
    assert torch.equal(n[0, 0], n[0, 1]) and torch.equal(n[0, 0], n[0, 2])
    colour = grey.copy()
    colour[0, 0, 1] += 1
    n = ev.add_noise(colour, 25.0, 0, 0)
    assert not torch.equal(n[0, 0], n[0, 1])
    Image.fromarray(grey[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert np.array_equal(read_rgb(tmp_path / "g16.png"), grey)


@pytest.mark.parametrize("sigma, message", [("15,,25", "comma-separated"), ("1e40", "from 0 to 255"),
                                            ("25,25", "names a σ twice")])
def test_evaluate_refuses_a_malformed_sigma_list(sigma, message):
    with pytest.raises(ev.EvalError, match=message):
        ev.parse_sigmas(sigma)


def test_evaluate_missing_folder_is_one_line_error_exit_1(tmp_path):
    """Something named that cannot be used exits 1, as the player does (2 is a bad option)."""
    r = _run(["engine.evaluate", "--random-init", "live", "--images", str(tmp_path / "nowhere"),
              "--json", str(tmp_path / "o.json")])
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nowhere" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o.json").exists()


def test_evaluate_missing_weights_and_empty_folder_are_one_line_errors(image_dir, tmp_path, capsys):
    assert ev.main(["--weights", str(tmp_path / "nope.pt"), "--images", str(image_dir),
                    "--json", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope.pt" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ev.main(["--random-init", "live", "--images", str(empty), "--json", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_unwritable_outputs_and_bad_numbers_fail_before_the_work(image_dir, tmp_path, capsys):
    """Outputs are checked before a run, not after it (the results were lost to a traceback at the
    end), and the trainer's numbers before it starts."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    out = blocked / "o.json"  # under a file: cannot be written
    for main, argv, code in (
            (ev.main, ["--random-init", "live", "--images", str(image_dir), "--json", str(out)], 1),
            (ev.main, ["--random-init", "live", "--images", str(image_dir), "--json", str(tmp_path / "o.json"),
                       "--plot", str(tmp_path / "p.xyz")], 2),  # a bad option value
            (bench.main, ["--random-init", "live", "--json", str(out)], 1)):
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and ("o.json" in err[0] or "p.xyz" in err[0]), err
    for bad, code in ((["--steps", "0"], 2), (["--batch", "0"], 2), (["--lr", "nan"], 2), (["--out", str(out)], 1)):
        r = _run(["engine.train", "--preset", "live", "--data", str(image_dir), "--val", str(image_dir),
                  "--out", str(tmp_path / "t.pt"), "--steps", "2", *bad])
        assert r.returncode == code and "Traceback" not in r.stderr, (bad, r.returncode, r.stderr)
        assert bad[0] in r.stderr.strip().splitlines()[-1] or "o.json" in r.stderr, r.stderr


def test_bench_command_smoke_with_weights_path(models, tmp_path):
    ckpt, out = tmp_path / "m.pt", tmp_path / "bench.json"
    checkpoint.save(models["live"], ckpt)
    r = _run(["engine.bench", "--weights", str(ckpt), "--threads", "1", "--sizes", "64x96", "--runs", "2",
              "--copy-mb", "8", "--json", str(out)])
    assert r.returncode == 0, r.stderr
    assert "backbone ms" in r.stdout and "blend/floor" in r.stdout and "GFLOP" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["threads"] == 1 and rep["copy_bandwidth_gbs"] > 0
    (m,) = rep["models"]
    assert m["name"] == str(ckpt) and m["params"] == param_count(models["live"])
    (inf,) = m["infer"]
    assert inf["size"] == "64x96" and inf["backbone_ms"] > 0 and inf["infer_ms"] >= inf["backbone_ms"]
    assert 0 < inf["nd_autotune_ms"] <= inf["after_network_ms"] * 1.5  # medians of parts: not exactly ≤
    assert inf["nd_autotune_pct"] == pytest.approx(100 * inf["nd_autotune_ms"] / inf["backbone_ms"])
    (bl,) = m["blend"]
    assert bl["blend_ms"] > 0 and bl["floor_ms"] > 0 and bl["bytes"] > 96 * 64 * 3
    # the floor comes from copies timed between this blend's runs
    assert bl["floor_ms"] == pytest.approx(bl["bytes"] / (bl["copy_bandwidth_gbs"] * 1e9) * 1000.0, rel=1e-9)
    assert bl["ratio"] == pytest.approx(bl["blend_ms"] / bl["floor_ms"], rel=1e-9)


def test_bench_falls_back_to_random_init_presets_without_shipped_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(checkpoint, "SUMS_FILE", tmp_path / "SHA256SUMS")
    monkeypatch.setattr(bench, "count_flops", lambda cfg, h, w: 1e9)
    assert bench.main(["--sizes", "16x8", "--runs", "1", "--copy-mb", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "note: no shipped weights" in out
    assert "random-init:live" in out and "random-init:quality" in out
    assert bench.main(["--sizes", "sixteen", "--copy-mb", "1"]) == 2  # a bad option
    assert "error: --sizes" in capsys.readouterr().err
    assert bench.main(["--weights", str(tmp_path / "nope.pt"), "--copy-mb", "1"]) == 1  # a file that cannot be used
    assert "nope.pt" in capsys.readouterr().err


# --------------------------------------------------------------------------- noise estimate

@pytest.mark.parametrize("sigma", [5.0, 25.0, 50.0])
def test_noise_estimate_reads_gaussian_noise_within_5_percent(sigma):
    from engine.model import estimate_noise_sigma

    gen = torch.Generator().manual_seed(int(sigma))
    for h, w in ((96, 96), (720, 1280)):  # the small path uses every block, the large one a quarter
        flat = 128.0 + sigma * torch.randn(2, h, w, generator=gen)
        est = estimate_noise_sigma(flat)
        assert est.shape == (2,) and torch.allclose(est, torch.tensor(sigma), rtol=0.05), (h, w, est)


@pytest.mark.parametrize("size", [(2, 2), (7, 9), (96, 96), (721, 1281)])
def test_noise_estimate_of_uint8_planes_equals_the_float_path(size):
    """The player's frames take the histogram median; it must be the sort's median exactly."""
    from engine.model import estimate_noise_sigma

    rng = np.random.default_rng(size[0])
    ramp = np.linspace(0, 200, size[1])[None, None, :]
    planes = np.clip(np.round(ramp + rng.normal(0, 12, (3,) + size)), 0, 255).astype(np.uint8)  # (3, H, W)
    planes[2] = 77  # a flat plane: median 0
    u8 = estimate_noise_sigma(torch.from_numpy(planes))
    f32 = estimate_noise_sigma(torch.from_numpy(planes).float())
    assert u8.dtype == torch.float32 and u8.shape == (3,)
    assert torch.equal(u8, f32), (u8, f32)
    assert float(u8[2]) == 0.0 and (size == (2, 2) or float(u8[0]) > 5.0)


def test_noise_estimate_is_robust_to_edges_and_texture_and_drives_the_denoiser():
    """What AutoTune and the HUD read: texture must not pass for noise (the pooled activations did)."""
    from engine.model import estimate_noise_sigma

    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    clean = 40 + 0.4 * x + 60 * (np.sin(x / 3.0 + y / 5.0) > 0) + 50 * ((x - 160) ** 2 + (y - 120) ** 2 < 80**2)
    clean = np.repeat(clean[..., None], 3, axis=2)  # ramps, hard-edged stripes and a disc, no noise
    assert float(estimate_noise_sigma(torch.from_numpy(clean[None, :, :, 1]))) < 2.0
    rng = np.random.default_rng(5)
    noisy = np.clip(np.round(clean + rng.normal(0, 10, clean.shape)), 0, 255).astype(np.uint8)
    est = float(estimate_noise_sigma(torch.from_numpy(noisy[None, :, :, 1]).float()))
    assert 9.0 < est < 12.0, est
    den = Denoiser(RCDNet(PRESETS["live"]), device="cpu")
    assert den.infer(noisy).sigma_est == pytest.approx(est, rel=1e-6)


# --------------------------------------------------------------------------- the monochrome backbone

def test_a_mono_model_runs_its_mono_backbone_on_monochrome_frames_only(tmp_path):
    """RCDConfig.mono: frames with R = G = B everywhere go through the second backbone, every other
    frame through the colour one; the two share the head, so their bases blend alike. Checked
    against two plain models each holding one of the backbones, and through a checkpoint."""
    torch.manual_seed(21)
    model = RCDNet(dataclasses.replace(PRESETS["live"], mono=True)).eval()
    assert model.backbone_mono.head is model.backbone.head
    colour_only, mono_only = RCDNet(PRESETS["live"]).eval(), RCDNet(PRESETS["live"]).eval()
    state = model.state_dict()
    colour_only.load_state_dict({k: v for k, v in state.items() if not k.startswith("backbone_mono.")})
    mono_only.load_state_dict({("backbone." + k[len("backbone_mono."):] if k.startswith("backbone_mono.") else k): v
                               for k, v in state.items() if not k.startswith("backbone.")})
    colour = textured(40, 56, seed=3)
    grey = np.repeat(colour[..., 1:2], 3, axis=2)
    almost = grey.copy()
    almost[39, 55, 0] ^= 1  # one value off: a colour frame
    path = tmp_path / "mono.pt"
    checkpoint.save(model, path)
    loaded, _ = checkpoint.load(path)
    assert loaded.backbone_mono.head is loaded.backbone.head
    for m in (model, loaded):
        den = Denoiser(copy.deepcopy(m), "cpu", precision="fp32")
        for frame, ref_model, is_mono in ((grey, mono_only, True), (colour, colour_only, False), (almost, colour_only, False)):
            # noise="rgb": a frame of grey picture is one of luma noise to `auto` (the luma path's test below)
            b = den.infer(frame, noise="rgb")
            ref = Denoiser(copy.deepcopy(ref_model), "cpu", precision="fp32").infer(frame)
            assert b.mono == is_mono and not b.luma
            assert torch.equal(b.x, ref.x) and torch.equal(b.auto, ref.auto)
        with torch.no_grad():
            for frame, ref_model in ((grey, mono_only), (colour, colour_only)):
                (b0, c0), (b1, c1) = m(as_input(frame)), ref_model(as_input(frame))
                assert torch.equal(b0, b1) and torch.equal(c0, c1)


def smooth_colour(h: int, w: int) -> np.ndarray:
    """A clean uint8 colour picture (h, w, 3): ramps, stripes and a disc, no noise in it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([40 + 150 * x / w, 60 + 130 * y / h, 128 + 70 * np.sin(x / 4.0 + y / 7.0)], axis=-1)
    img[(x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 4) ** 2] = (210, 60, 50)
    return np.round(img).astype(np.uint8)


def _noisy(clean: np.ndarray, field: np.ndarray) -> np.ndarray:
    return np.clip(np.round(clean + field), 0, 255).astype(np.uint8)


def test_luma_noise_is_told_from_noise_drawn_per_channel():
    """denoiser.luma_noise: noise that is the same in R, G and B (what chroma noise reduction leaves)
    and 4:2:0 video's noise (its chroma sampled at half size) are luma noise; noise drawn per channel,
    or with the channel correlation of training's camera noise (≤ 0.5), is not; nor is a frame
    without noise to speak of, whatever its picture."""
    from engine.denoiser import luma_noise, noise_estimates

    rng = np.random.default_rng(5)
    clean = smooth_colour(128, 160)
    for sigma in (8.0, 25.0):
        assert luma_noise(_noisy(clean, rng.normal(0, sigma, clean.shape[:2])[..., None])), sigma
        assert not luma_noise(_noisy(clean, rng.normal(0, sigma, clean.shape))), sigma
        shared, own = rng.normal(0, sigma, clean.shape[:2])[..., None], rng.normal(0, sigma, clean.shape)
        assert not luma_noise(_noisy(clean, math.sqrt(0.5) * shared + math.sqrt(0.5) * own)), sigma
        # 4:2:0: noise in Y at full size, in the chroma differences at half size (each 2×2 block alike)
        chroma = rng.normal(0, sigma, (64, 80, 3)).repeat(2, 0).repeat(2, 1)
        chroma -= chroma.mean(axis=2, keepdims=True)
        assert luma_noise(_noisy(clean, rng.normal(0, sigma, clean.shape[:2])[..., None] + chroma)), sigma
    flat = np.full((96, 96, 3), 120, np.uint8)
    assert noise_estimates(flat) == (0.0, 0.0) and not luma_noise(flat)
    assert not luma_noise(_noisy(flat, rng.normal(0, 1.0, flat.shape[:2])[..., None]))  # under LUMA_NOISE_SIGMA_MIN
    assert noise_estimates(np.zeros((1, 7, 3), np.uint8)) == (0.0, 0.0)


def _luma_detail_frame(v: int) -> np.ndarray:
    """A 64×64 frame of colour ramps (linear: no 2×2 diagonal detail of their own) whose every 2×2
    block holds +v in its first pixel, in R, G and B: luma "noise" whose σ̂ is exactly
    v × 0.5 / MAD_TO_STD (2.97 for 4, 3.71 for 5), its chroma σ̂ 0."""
    y, x = np.mgrid[0:64, 0:64]
    frame = np.stack([60 + x, 100 + y, 40 + x + y], axis=2).astype(np.uint8)
    frame[0::2, 0::2] += np.uint8(v)
    return frame


def test_a_clip_at_the_luma_threshold_keeps_one_backbone():
    """NoiseChoice: σ̂ moves in steps of 0.74, so a clip whose noise sits at LUMA_NOISE_SIGMA_MIN
    reads just above and just below it by turns; frame by frame the choice flips each time, through
    NoiseChoice it switches once and holds until σ̂ leaves the band by LUMA_KEEP_SIGMA_MARGIN.
    Explicit modes pass through; a model without a monochrome backbone is never asked."""
    from engine.denoiser import LUMA_NOISE_SIGMA_MIN, NoiseChoice, luma_noise, noise_estimates

    above, below, far = (_luma_detail_frame(v) for v in (5, 4, 3))
    assert noise_estimates(above)[0] >= LUMA_NOISE_SIGMA_MIN > noise_estimates(below)[0] > noise_estimates(far)[0]
    clip = [below, above, below, above, below, above, below, far, below, above]
    assert [luma_noise(f) for f in clip] == [False, True, False, True, False, True, False, False, False, True]
    choose = NoiseChoice("auto")
    assert [choose(f) for f in clip] == ["rgb"] + ["luma"] * 6 + ["rgb", "rgb", "luma"]
    for mode in ("rgb", "luma"):
        assert [NoiseChoice(mode)(f) for f in clip] == [mode] * len(clip)
    assert [NoiseChoice("auto", model_has_mono=False)(f) for f in clip] == ["auto"] * len(clip)
    # the band also widens for the chroma ratio: a frame with a little chroma noise keeps luma
    tinted = above.copy()
    tinted[0::2, 0::2, 0::2] += np.uint8(2)  # R's and B's detail 7 against G's 5: chroma σ̂ 0.28 × G's
    assert not luma_noise(tinted) and luma_noise(tinted, before=True)


def test_the_luma_frame_is_the_same_bytes_natively_and_in_numpy(monkeypatch):
    """luma_frame: the native kernel and NumPy (where it is not built) give the same bytes, into the
    buffer given; black, white and the primaries land where BT.601 puts them."""
    from engine import native
    from engine.denoiser import luma_frame

    if native.library() is None:
        pytest.skip(f"native kernels unavailable: {native.why_not}")
    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgb[0, :5] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    out = np.full_like(rgb, 7)
    fast = luma_frame(rgb, out=out)
    assert fast is out
    monkeypatch.setattr(native, "library", lambda: None)
    assert np.array_equal(luma_frame(rgb), fast)
    assert fast[0, :5, 0].tolist() == [0, 255, 76, 150, 29]


@pytest.mark.parametrize("size", [(40, 58), (33, 47)], ids=["even", "odd"])  # odd: the statistics from the maps
def test_the_luma_path_denoises_the_luma_with_the_mono_backbone_and_blends_onto_the_colour_frame(size):
    """Denoiser.infer(noise="luma"): the monochrome backbone on the frame's luma (R = G = B = Y) —
    the same features, transform and AutoTune as that luma frame gets — with the colour frame as
    the blend's base (strength 0 returns it exactly). "auto" takes it where the noise is luma
    only, "rgb" never; a model without the monochrome backbone always runs the colour one."""
    from engine.denoiser import luma_frame

    torch.manual_seed(22)
    model = RCDNet(dataclasses.replace(PRESETS["live"], mono=True)).eval()
    with torch.no_grad():  # (zero at initialisation) so that AutoTune reads the noisy frame's statistics
        for fc in (model.router.fc, model.autotune.fc):
            fc.weight.normal_(0.0, 0.1)
    den = Denoiser(copy.deepcopy(model), "cpu", precision="fp32")
    rng = np.random.default_rng(6)
    clean = smooth_colour(*size)  # padded columns in either case
    noisy = _noisy(clean, rng.normal(0, 20.0, clean.shape[:2])[..., None])
    grey = luma_frame(noisy)
    assert grey.shape == noisy.shape and np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    r, g, b_ = (noisy[..., c].astype(np.int64) for c in range(3))
    assert np.array_equal(grey[..., 0], (19595 * r + 38470 * g + 7471 * b_ + 32768) >> 16)  # BT.601, 16-bit fixed point
    float_y = np.rint(noisy.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(grey[..., 0] - float_y).max() <= 1 and np.mean(grey[..., 0] != float_y) < 0.02
    b, ref = den.infer(noisy, noise="luma"), den.infer(grey)
    assert b.luma and not b.mono and ref.mono and not ref.luma
    c1 = den.c1
    assert torch.equal(b.x[:, :c1], ref.x[:, :c1])  # the luma frame's features
    assert torch.equal(b.transform, ref.transform) and torch.equal(b.auto, ref.auto) and b.sigma_est == ref.sigma_est
    assert np.array_equal(den.blend(b, compose.Mix(strength=0.0)), noisy)  # onto the colour frame
    out, out_ref = den.blend(b, compose.Mix(strength=15.0)), den.blend(ref, compose.Mix(strength=15.0))
    # the same correction (the luma frame's) on another base: equal where neither clipped
    inside = (out > 0) & (out < 255) & (out_ref > 0) & (out_ref < 255)
    diff = out.astype(int) - noisy.astype(int) - (out_ref.astype(int) - grey.astype(int))
    assert np.abs(diff[inside]).max() <= 1  # each rounded once
    assert den.infer(noisy).luma  # auto: luma noise
    assert not den.infer(noisy, noise="rgb").luma
    assert not den.infer(_noisy(clean, rng.normal(0, 20.0, clean.shape))).luma  # auto: noise per channel
    plain = Denoiser(copy.deepcopy(RCDNet(PRESETS["live"]).eval()), "cpu", precision="fp32")
    assert not plain.infer(noisy, noise="luma").luma
    with pytest.raises(AssertionError, match="noise must be one of"):
        den.infer(noisy, noise="yuv")


def test_bases_kept_are_never_overwritten_and_dropped_ones_are_reused(models):
    """X buffers are pooled (a fresh one is page-faulted in on every frame): a frame's bases stay
    as they were for as long as anything holds them, while the storage of bases dropped is what
    the next frames fill."""
    den = Denoiser(copy.deepcopy(models["live"]), "cpu")
    frames = [textured(48, 64, seed=s) for s in range(6)]
    kept = den.infer(frames[0])
    kept_x, kept_out = kept.x.clone(), den.blend(kept)
    ptrs = set()
    for f in frames[1:]:
        b = den.infer(f)
        ptrs.add(b.x.data_ptr())
        assert not torch.equal(b.x, kept_x)
        del b  # dropped: its buffer is free for the next frame
    assert len(ptrs) == 1 and kept.x.data_ptr() not in ptrs
    assert torch.equal(kept.x, kept_x) and np.array_equal(den.blend(kept), kept_out)
    again = den.infer(frames[0])
    assert torch.equal(again.x, kept_x)  # a reused buffer, filled whole: the same numbers as a fresh one
    compact = den.compact(again)
    del again
    assert compact.x.dtype == torch.float16 and torch.equal(compact.x.float(), kept_x.half().float())
    assert den.infer(frames[1]).x.data_ptr() in ptrs  # compact bases are copies: the float32 buffer went back
