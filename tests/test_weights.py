"""Shipped weights and the training command, end to end."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import checkpoint, compose, noise
from engine import decorrelate as nd
from engine.denoiser import Denoiser, psnr
from engine.images import write_png
from engine.model import PRESETS, RCDNet
from engine.train import loss_fn, make_noisy

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(name for name in ("live", "quality") if (checkpoint.WEIGHTS_DIR / f"rcd_{name}.pt").exists())


def test_live_model_is_shipped():
    assert "live" in SHIPPED
    assert "rcd_live.pt" in checkpoint.shipped_sums()


def chart(h: int = 192, w: int = 256, seed: int = 0) -> np.ndarray:
    """Smooth ramps, hard edges and fine texture, uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 40 + 170 * x / w  # smooth ramps
    img[..., 1] = 60 + 120 * y / h
    img[..., 2] = 128 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0)
    img[h // 4 : h // 2, w // 4 : w // 2] = (220, 40, 40)  # a flat patch with hard edges
    tex = rng.integers(0, 2, (h // 4, w // 4)).repeat(4, 0).repeat(4, 1) * 60.0  # blocky texture
    img[h // 2 :, w // 2 :] = 90 + tex[: h - h // 2, : w - w // 2, None]
    img[:, w - 24 : w - 20] = 250  # a thin line
    return np.clip(img, 0, 255).astype(np.uint8)


def chart_folder(tmp_path: Path, n: int, h: int = 96, w: int = 128) -> Path:
    """A folder of n generated chart images (training or validation data for the train command)."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(n):
        write_png(data / f"{i}.png", chart(h, w, i))
    return data


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_raises_psnr_by_4db_at_sigma_25_and_strength_0_is_identity(name, device):
    den = Denoiser.load(name, device=device)
    clean = chart()
    gen = torch.Generator().manual_seed(1)
    noisy_f = noise.gaussian(torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255, torch.tensor([25.0]), gen)
    noisy = (noisy_f[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()  # a frame is 8-bit
    bases = den.infer(noisy)
    out = den.blend(bases, compose.Mix())
    gain = psnr(out, clean) - psnr(noisy, clean)
    assert gain >= 4.0, f"AutoTune gained only {gain:.2f} dB"
    assert np.array_equal(den.blend(bases, compose.Mix(strength=0.0)), noisy)
    if device != "cpu":  # a GPU (float16 backbone) shows what the CPU shows, to within rounding
        ref = Denoiser.load(name, device="cpu")
        assert psnr(out, ref.blend(ref.infer(noisy), compose.Mix())) >= 40.0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_denoise_luma_noise_through_the_luma(name):
    """A colour frame whose noise is the same in R, G and B (left by chroma noise reduction): the
    colour backbone reads such noise as picture; `auto` takes the monochrome backbone on the luma,
    which gains at least 4 dB and at least 2 dB over the colour backbone."""
    den = Denoiser.load(name)
    clean = chart()
    field = np.random.default_rng(2).normal(0.0, 25.0, clean.shape[:2])[..., None]
    noisy = np.clip(np.round(clean + field), 0, 255).astype(np.uint8)
    auto, rgb = den.infer(noisy), den.infer(noisy, noise="rgb")
    assert auto.luma and not rgb.luma
    gain = psnr(den.blend(auto), clean) - psnr(noisy, clean)
    over = psnr(den.blend(auto), clean) - psnr(den.blend(rgb), clean)
    assert gain >= 4.0 and over >= 2.0, f"luma path gained {gain:.2f} dB, {over:.2f} over the colour backbone"


def test_shipped_file_sha256_matches():
    for name, digest in checkpoint.shipped_sums().items():
        assert checkpoint.sha256(checkpoint.WEIGHTS_DIR / name) == digest, name


def test_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = RCDNet(PRESETS["live"]).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    clean = torch.from_numpy(np.stack([chart(64, 64, s) for s in range(4)])).permute(0, 3, 1, 2).float() / 255
    noisy = make_noisy(clean, gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _ = loss_fn(model, clean, noisy, warmup=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_train_command_runs_end_to_end_and_resumes(tmp_path):
    data, val = tmp_path / "data", tmp_path / "val"
    data.mkdir()
    val.mkdir()
    for i in range(3):
        write_png(data / f"{i}.png", chart(96, 128, i))
    write_png(val / "v.png", chart(64, 80, 9))
    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(val),
           "--out", str(out), "--steps", "2", "--val-every", "1", "--batch", "2", "--patch", "64", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    model, meta = checkpoint.load(out)
    assert meta["steps"] == 2 and len(meta["val_history"]) == 2
    r = subprocess.run(cmd[:-10] + ["--steps", "3", "--resume", "--val-every", "1", "--batch", "2", "--patch", "64",
                                     "--threads", "1"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout + r.stderr
    assert checkpoint.load(out)[1]["steps"] == 3
    # a state that is not there, or not a state: refused in one line, the checkpoint untouched
    before = out.read_bytes()
    state = tmp_path / "m.pt.state"
    for damage in (lambda: state.unlink(), lambda: state.write_bytes(b"garbage")):
        damage()
        r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().startswith("error: --resume:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert out.read_bytes() == before


def test_train_init_fine_tunes_a_checkpoint_and_records_ns_iters(tmp_path):
    data = chart_folder(tmp_path, 2)
    torch.manual_seed(3)
    start = RCDNet(PRESETS["live"])
    checkpoint.save(start, tmp_path / "start.pt", {})
    base = [sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(data),
            "--steps", "1", "--batch", "2", "--patch", "64", "--threads", "1"]
    r = subprocess.run(base + ["--out", str(tmp_path / "ft.pt"), "--init", str(tmp_path / "start.pt"),
                               "--ns-iters", "12", "--lr", "1e-12", "--warmup", "0"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    tuned, _ = checkpoint.load(tmp_path / "ft.pt")
    assert tuned.cfg.ns_iters == 12
    # lr ≈ 0: the fine-tuned weights are the starting checkpoint's, not a fresh initialisation
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    r = subprocess.run(base + ["--out", str(tmp_path / "x.pt"), "--init", str(tmp_path / "missing.pt")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode != 0 and "missing.pt" in r.stderr and "Traceback" not in r.stderr


def test_head_loss_in_closed_form_equals_the_pixel_loss():
    """--heads-only fits Router and AutoTune on statistics; its loss must be the pixel loss."""
    from engine.train import LAMBDA_LEVEL, head_loss, head_statistics

    torch.manual_seed(0)
    model = RCDNet(PRESETS["live"]).eval()
    torch.nn.init.normal_(model.router.fc.weight, std=0.05)  # a non-trivial G and AutoTune
    torch.nn.init.normal_(model.autotune.fc.weight, std=0.05)
    images = [chart(80, 96, s) for s in range(2)]
    stats = head_statistics(model, images, 2, np.random.default_rng(0), torch.Generator().manual_seed(0),
                            torch.device("cpu"))
    # Replay the same crop and noise draws, then measure on pixels.
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    from engine.train import HEAD_CROP
    for k in range(2):
        im = images[rng.integers(len(images))]
        side = int(min(rng.integers(HEAD_CROP[0], HEAD_CROP[1] + 1), *im.shape[:2]))
        y, x = rng.integers(im.shape[0] - side + 1), rng.integers(im.shape[1] - side + 1)
        crop = np.ascontiguousarray(np.rot90(im[y : y + side, x : x + side], rng.integers(4)))
        clean = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
        noisy = make_noisy(clean, gen)
        with torch.no_grad():
            bases, c = model(noisy, ns_iters=model.cfg.ns_iters)
            blend = noisy + (c[:, :, None, None, None] * bases).sum(1)
            mse = ((blend - clean) ** 2).mean().double()
            per_level = ((noisy[:, None] + bases - clean[:, None]) ** 2).mean(dim=(2, 3, 4))[0].double()
            closed = head_loss(model, stats, torch.tensor([k]))
        assert torch.allclose(closed, mse.log() + LAMBDA_LEVEL * per_level.log().mean(), rtol=1e-4)


def test_train_heads_only_keeps_the_backbone_and_refits_the_heads(tmp_path):
    data = chart_folder(tmp_path, 3, 128, 128)
    torch.manual_seed(4)
    start = RCDNet(PRESETS["live"])
    checkpoint.save(start, tmp_path / "start.pt", {"val_history": []})
    base = [sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(data),
            "--heads-only", "--steps", "60", "--head-samples", "40", "--threads", "1"]
    r = subprocess.run(base + ["--out", str(tmp_path / "h.pt"), "--init", str(tmp_path / "start.pt")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    fitted, meta = checkpoint.load(tmp_path / "h.pt")
    before, after = start.state_dict(), fitted.state_dict()
    for name in before:
        if not name.startswith(("router.", "autotune.")):
            assert torch.equal(before[name], after[name]), f"{name} changed: the backbone must stay frozen"
    assert not torch.equal(before["autotune.fc.weight"], after["autotune.fc.weight"])
    assert not torch.equal(before["router.fc.weight"], after["router.fc.weight"])
    fit = meta["val_history"][-1]["heads_fit"]
    assert fit[-1]["heldout_loss"] < fit[0]["heldout_loss"]
    r = subprocess.run(base + ["--out", str(tmp_path / "x.pt")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode != 0 and "--init" in r.stderr and "Traceback" not in r.stderr


def test_adding_the_noise_estimate_input_keeps_the_function_until_refitted():
    from dataclasses import replace

    from engine.train import with_sigma_feature

    torch.manual_seed(5)
    old = RCDNet(replace(PRESETS["live"], sigma_feature=False)).eval()
    torch.nn.init.normal_(old.router.fc.weight, std=0.05)
    torch.nn.init.normal_(old.autotune.fc.weight, std=0.05)
    new = with_sigma_feature(old).eval()
    assert new.cfg.sigma_feature and not old.cfg.sigma_feature
    noisy = torch.from_numpy(chart(64, 96)).permute(2, 0, 1)[None].float() / 255 + 0.1 * torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        (b0, c0), (b1, c1) = old(noisy), new(noisy)
        assert torch.allclose(b0, b1, atol=1e-6) and torch.allclose(c0, c1, atol=1e-6)  # same up to rounding
        assert not torch.allclose(c0, torch.full_like(c0, 1 / c0.shape[1]), atol=1e-3)  # and not trivial
        new.autotune.fc.weight[:, -1] = torch.linspace(-1, 1, new.cfg.num_levels)  # the new input is live
        assert not torch.allclose(new(noisy)[1], c0, atol=1e-3)


def test_train_precision_choice(monkeypatch):
    from engine import denoiser as dn
    from engine.train import pick_amp

    model = RCDNet(PRESETS["live"]).to(memory_format=torch.channels_last)
    cpu = torch.device("cpu")
    assert pick_amp(cpu, "fp32", model, 32) is None
    assert pick_amp(cpu, "bf16", model, 32) == torch.bfloat16
    monkeypatch.setattr(dn, "cpu_has_bf16", lambda: False)
    assert pick_amp(cpu, "auto", model, 32) is None  # no bf16 convolutions here: float32, nothing timed
    monkeypatch.setattr(dn, "cpu_has_bf16", lambda: True)
    assert pick_amp(cpu, "auto", model, 32) in (None, torch.bfloat16)  # decided by the timing probe
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradients behind


def test_bf16_backbone_training_loss_matches_float32_and_keeps_nd_exact():
    """Autocast covers the backbone only: ND, the heads and the loss run in float32/float64."""
    torch.manual_seed(0)
    model = RCDNet(PRESETS["live"]).to(memory_format=torch.channels_last)
    clean = torch.from_numpy(np.stack([chart(64, 64, s) for s in range(2)])).permute(0, 3, 1, 2).float() / 255
    noisy = make_noisy(clean, torch.Generator().manual_seed(0))
    with torch.no_grad():
        l32, _ = loss_fn(model, clean, noisy)
    l16, _ = loss_fn(model, clean, noisy, amp=torch.bfloat16)
    assert torch.isfinite(l16) and abs(l16.item() - l32.item()) <= 0.02 * abs(l32.item())
    l16.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            raw, feats = model.raw_maps(noisy.contiguous(memory_format=torch.channels_last))
        assert raw.dtype == torch.float32
        bases, _ = model.decorrelate(raw, noisy, feats.float(), model.cfg.ns_iters)
    assert nd.offdiag_corr_max(bases) <= 0.01


def test_train_runs_in_bf16_on_a_cpu_and_records_it(tmp_path):
    data = chart_folder(tmp_path, 2)
    out = tmp_path / "b.pt"
    r = subprocess.run([sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(data),
                        "--out", str(out), "--steps", "2", "--val-every", "2", "--batch", "2", "--patch", "32",
                        "--threads", "1", "--precision", "bf16"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "backbone precision: bfloat16" in r.stdout + r.stderr
    _, meta = checkpoint.load(out)
    assert meta["precision"] == "bf16" and math.isfinite(meta["val_history"][-1]["psnr_autotune"])


def test_train_plain_pretrains_only_the_backbone_and_feeds_init(tmp_path):
    from engine.train import plain_loss_fn

    torch.manual_seed(0)
    model = RCDNet(PRESETS["live"]).to(memory_format=torch.channels_last)
    clean = torch.from_numpy(np.stack([chart(64, 64, s) for s in range(4)])).permute(0, 3, 1, 2).float() / 255
    noisy = make_noisy(clean, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _ = plain_loss_fn(model, clean, noisy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # The heads take no part: Router and AutoTune stay at their (zero) initialisation.
    assert not model.router.fc.weight.any() and not model.autotune.fc.weight.any()

    data = chart_folder(tmp_path, 2)
    base = [sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(data),
            "--steps", "2", "--batch", "2", "--patch", "64", "--threads", "1", "--val-every", "2"]
    r = subprocess.run(base + ["--out", str(tmp_path / "p.pt"), "--plain"], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    _, meta = checkpoint.load(tmp_path / "p.pt")
    assert meta["plain"] and "psnr_plain" in meta["val_history"][-1]
    r = subprocess.run(base + ["--out", str(tmp_path / "r.pt"), "--init", str(tmp_path / "p.pt")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "psnr_autotune" in checkpoint.load(tmp_path / "r.pt")[1]["val_history"][-1]


def test_grey_noise_share_gives_some_patches_one_field_in_all_channels():
    """--grey-noise: that share of the Gaussian patches gets grey noise; without it the draws are
    exactly those before the option existed (the shipped weights' commands reproduce)."""
    from engine.train import make_noisy

    clean = torch.rand(64, 3, 16, 16)
    a = make_noisy(clean, torch.Generator().manual_seed(5))
    b = make_noisy(clean, torch.Generator().manual_seed(5), 0.0)
    assert torch.equal(a, b)
    c = make_noisy(clean, torch.Generator().manual_seed(5), 1.0)
    n = c - clean
    grey = ((n[:, 0] - n[:, 1]).abs().amax(dim=(1, 2)) < 1e-6) & ((n[:, 0] - n[:, 2]).abs().amax(dim=(1, 2)) < 1e-6)
    assert 30 <= int(grey.sum()) < 64  # all but the camera-noise patches (30 %)
    assert torch.equal(c[~grey], a[~grey])  # (the others as before)


def test_train_mono_trains_only_the_monochrome_backbone_on_grey_patches(tmp_path):
    """--mono: the model gains a backbone for R = G = B frames, trained on grey patches with grey
    noise (camera noise too); everything of the colour model, and the head, Router and AutoTune the
    two share, stays the --init file's."""
    from engine.train import to_mono

    clean = torch.rand(64, 3, 16, 16)
    grey = to_mono(clean)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    noisy = make_noisy(grey, torch.Generator().manual_seed(5), mono=True)
    assert torch.equal(noisy[:, 0], noisy[:, 1]) and torch.equal(noisy[:, 1], noisy[:, 2])
    assert (noisy - grey).abs().amax(dim=(1, 2, 3)).min() > 0  # every patch has noise

    data = chart_folder(tmp_path, 3, 128, 128)
    torch.manual_seed(6)
    start = RCDNet(PRESETS["live"])
    checkpoint.save(start, tmp_path / "start.pt")
    r = subprocess.run([sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(data),
                        "--init", str(tmp_path / "start.pt"), "--mono", "--out", str(tmp_path / "m.pt"), "--steps", "3",
                        "--batch", "2", "--patch", "64", "--val-every", "3", "--threads", "1"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    model, meta = checkpoint.load(tmp_path / "m.pt")
    assert model.cfg.mono and meta["mono"] and model.backbone_mono.head is model.backbone.head
    before, after = start.state_dict(), model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the colour model, bit for bit
    mono = {k: v for k, v in after.items() if k.startswith("backbone_mono.") and ".head." not in k}
    changed = [k for k, v in mono.items() if not torch.equal(v, before["backbone." + k[len("backbone_mono."):]])]
    assert len(changed) == len(mono), sorted(set(mono) - set(changed))
    r = subprocess.run([sys.executable, "-m", "engine.train", "--preset", "live", "--data", str(data), "--val", str(data),
                        "--mono", "--out", str(tmp_path / "x.pt")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode != 0 and "--init" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", [n for n in SHIPPED if checkpoint.load(n)[0].cfg.mono])
def test_shipped_mono_backbone_denoises_grey_noise_on_a_grey_frame(name):
    """A grey frame with grey noise (a black-and-white film, a grey image) runs the monochrome
    backbone and gains at least 4 dB; the colour backbone alone gains far less on it."""
    den = Denoiser.load(name, device="cpu")
    clean = np.repeat(chart()[..., 1:2], 3, axis=2)
    n = np.random.default_rng(2).normal(0, 25.0, clean.shape[:2])[..., None]
    noisy = np.clip(np.round(clean + n), 0, 255).astype(np.uint8)
    bases = den.infer(noisy)
    assert bases.mono
    gain = psnr(den.blend(bases, compose.Mix()), clean) - psnr(noisy, clean)
    assert gain >= 4.0, f"AutoTune gained only {gain:.2f} dB on grey noise"
