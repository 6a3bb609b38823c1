"""Training command: python -m engine.train --preset live|quality --data DIR[,DIR...] --val DIR --out PATH.

Owns the training loop of METHOD.md §4: random patches of clean images, synthetic noise
(engine/noise.py), the loss λ·(mean over levels of each level alone) + (AutoTune blend), periodic
validation PSNR, and resumable checkpoints (PATH holds the model; PATH.state the optimiser,
step and random state, so --resume continues exactly). With --init and --heads-only it also
refits the two per-frame heads (Router, AutoTune) of a trained model with the backbone frozen, on
cached statistics of noisy crops: minutes instead of hours (see `head_statistics`). With --init and
--mono it trains the model's second backbone body for monochrome frames (RCDConfig.mono) on grey
patches with grey noise, everything the two bodies share (head, Router, AutoTune) frozen, so the
colour model is the --init file's, bit for bit.

Noise mix (see engine/noise.py): CAMERA_SHARE of patches get realistic camera noise
(Poisson–Gaussian, channel-correlated, clipped and quantised), the rest Gaussian noise with σ
uniform in 0..55. Gaussian dominates because it spans every strength evenly and is what the
benchmarks measure; the camera share keeps the models sane on real footage, whose noise is
signal-dependent, coloured and quantised.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine import checkpoint, decorrelate as nd, noise, synthetic
from engine.denoiser import best_seconds, pick_dtype
from engine.images import load_folder
from engine.model import MONO_WEIGHTS, PRESETS, RCDNet, estimate_noise_sigma, is_mono

LAMBDA_LEVEL = 0.1  # weight of the per-level loss (the paper's λ)
CAMERA_SHARE = 0.3
# Weight of the penalty on the raw maps' off-diagonal correlation: keeps Σ well conditioned so
# Newton–Schulz converges and its gradients stay finite (METHOD.md, pitfalls). Small: ND itself
# does the decorrelating; this only keeps the maps from collapsing onto each other.
ORTHO_WEIGHT = 0.01
# The maps are normalised to their levels, so nothing fixes the scale of the raw head output;
# left free it drifts (Adam on scale-invariant weights) until activations explode. A weak pull
# of each raw map's log std toward RAW_STD (0..1 units) anchors it without touching the output.
SCALE_WEIGHT = 1e-3
WARMUP_SHARE = 0.2  # share of the steps during which the blend may not use the zero level
RAW_STD = 0.05
CHARBONNIER_EPS = 1e-3
GRAD_CLIP = 1.0
VAL_SIGMA = 25.0
# Peak learning rate of the one-cycle schedule, per preset. The quality U-Net (4 residual convs at
# 1/8, no normalisation) did not learn at 1e-3: stuck at 24.2 dB on CSet5 (σ 25) for 1 500 steps,
# twice, with 6 or 9 levels; at 3e-4 it passed 27 dB by step 500.
LEARNING_RATE = {"live": 1e-3, "quality": 3e-4}
# --heads-only: Router and AutoTune act on per-frame statistics only, so they are refitted on the
# statistics of this many noisy crops (backbone frozen, one forward each, no pixels in the loop).
# Whole-frame statistics differ from those of the 96×96 training patches, so crops are larger.
HEAD_SAMPLES = 3000
HEAD_CROP = (96, 320)  # side of the square crops, pixels, uniform; capped by the image
HEAD_HOLDOUT = 0.1  # share of the crops kept out of the fit to watch for over-fitting
BUDGET_PROBE = 30  # --budget-s: steps timed (on a throw-away copy) to size the run
# --synthetic: side of the generated chart images (engine/synthetic.py); a 128-px patch still has
# (384 − 128)² positions in each, and 161 of them (15 % beside the 912 photographs) take 20 s to make.
SYNTHETIC_SIZE = 384


def charbonnier(a, b):
    return torch.sqrt((a - b) ** 2 + CHARBONNIER_EPS**2).mean()


class PatchSampler:
    """Random uint8 patches (B, P, P, 3) with flips and rotations from in-memory uint8 images."""

    def __init__(self, images: list[np.ndarray], patch: int, rng: np.random.Generator):
        self.images = [im for im in images if min(im.shape[:2]) >= patch]
        if not self.images:
            raise SystemExit(f"error: no training image is at least {patch}×{patch} pixels")
        self.patch, self.rng = patch, rng

    def batch_u8(self, n: int) -> torch.Tensor:
        """(B, P, P, 3) uint8: what travels to a GPU (a quarter of the float bytes)."""
        p = self.patch
        out = np.empty((n, p, p, 3), np.uint8)
        for k in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - p + 1)
            x = self.rng.integers(im.shape[1] - p + 1)
            crop = im[y : y + p, x : x + p]
            crop = np.rot90(crop, self.rng.integers(4))
            out[k] = crop[:, ::-1] if self.rng.integers(2) else crop
        return torch.from_numpy(out)


def to_mono(clean: torch.Tensor) -> torch.Tensor:
    """(B, 3, P, P) in [0, 1] → its BT.601 luma on 8-bit steps in all three channels."""
    y = sum(w * clean[:, c : c + 1] for c, w in enumerate(MONO_WEIGHTS))  # (B, 1, P, P)
    return (torch.round(y * 255.0) / 255.0).expand_as(clean).contiguous()


def mono_image(im: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → its grey version (`to_mono`), uint8 (H, W, 3)."""
    grey = to_mono(torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255.0)[0]  # (3, H, W), 8-bit steps
    return grey.permute(1, 2, 0).mul(255.0).round().to(torch.uint8).contiguous().numpy()


def make_noisy(clean: torch.Tensor, gen: torch.Generator, grey_share: float = 0.0, mono: bool = False) -> torch.Tensor:
    """Noisy copy of clean (B, 3, P, P), drawn with gen on gen's device (clean must be there too).
    `grey_share` of the Gaussian patches get grey noise, one field in all three channels: what a
    monochrome picture holds, and what is left of a camera's noise after its ISP's chroma noise
    reduction (the shipped models, trained without it, leave such noise almost untouched). Drawn
    after everything else, so a run without it draws exactly what it drew before. mono: every
    patch's noise is grey, the camera noise's too (its channel correlation 1), for grey patches."""
    b = clean.shape[0]
    sigma = torch.rand(b, generator=gen, device=gen.device) * noise.SIGMA_MAX
    noisy = noise.gaussian(clean, sigma, gen)
    cam = torch.rand(b, generator=gen, device=gen.device) < CAMERA_SHARE
    if cam.any():
        ones = torch.ones(int(cam.sum()), device=gen.device) if mono else None
        noisy[cam] = noise.camera(clean[cam], gen, corr=ones)
    if mono:
        grey_share = 1.0
    if grey_share > 0:
        grey = (torch.rand(b, generator=gen, device=gen.device) < grey_share) & ~cam
        if grey.any():
            n = torch.randn((int(grey.sum()), 1) + tuple(clean.shape[2:]), generator=gen, device=clean.device)
            noisy[grey] = clean[grey] + n * (sigma[grey].view(-1, 1, 1, 1) / 255.0)  # (k, 1, P, P) → all channels
    return noisy


def backbone_autocast(x: torch.Tensor, amp: torch.dtype | None):
    """Autocast for the backbone alone (None: off). Its maps come out in float32 (`raw_maps`), so ND,
    the heads and the loss stay in float32/float64 whatever the convolutions ran in."""
    return torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None)


def plain_residual(model: RCDNet, noisy: torch.Tensor, amp: torch.dtype | None = None) -> torch.Tensor:
    """--plain: the top level's raw map (B, 3, H, W), un-normalised, used as a blind residual."""
    with backbone_autocast(noisy, amp):
        raw, _ = model.raw_maps(noisy.contiguous(memory_format=torch.channels_last))
    return raw[:, -1]


def plain_loss_fn(model: RCDNet, clean: torch.Tensor, noisy: torch.Tensor, amp: torch.dtype | None = None):
    """Pre-training loss: the backbone as a blind denoiser, noisy + residual ≈ clean. No levels,
    no ND, no heads — about 3× faster per step than `loss_fn`."""
    loss = charbonnier(noisy + plain_residual(model, noisy, amp), clean)
    return loss, loss


def loss_fn(model: RCDNet, clean: torch.Tensor, noisy: torch.Tensor, warmup: bool = False,
            amp: torch.dtype | None = None):
    l = model.cfg.num_levels
    with backbone_autocast(noisy, amp):
        raw, feats = model.raw_maps(noisy.contiguous(memory_format=torch.channels_last))  # (B, L, 3, H, W)
    feats = feats.float()
    bases, coeffs = model.decorrelate(raw, noisy, feats, model.cfg.ns_iters)
    if warmup:
        # Early on every map is still noise, so AutoTune's best move is all weight on the zero
        # level (output = input), after which the blend loss no longer trains the maps at all
        # (measured: a run stuck at the input's PSNR). During warm-up the blend uses only the
        # non-zero levels, so the maps must become useful first.
        live = (model.levels > 0).to(coeffs)
        coeffs = coeffs * live / (coeffs * live).sum(1, keepdim=True).clamp_min(1e-12)
    per_level = noisy[:, None] + bases  # (B, L, 3, H, W): each level alone
    level_loss = charbonnier(per_level, clean[:, None].expand_as(per_level))
    blend = noisy + (coeffs[:, :, None, None, None] * bases).sum(1)  # (B, 3, H, W)
    blend_loss = charbonnier(blend, clean)
    cov = nd.covariance(raw).float()  # (B, L, L) of the raw maps
    std = cov.diagonal(dim1=1, dim2=2).clamp_min(1e-12).sqrt()  # (B, L)
    corr = cov / (std[:, :, None] * std[:, None, :])
    ortho = (corr - torch.diag_embed(corr.diagonal(dim1=1, dim2=2))).pow(2).sum((1, 2)).mean() / (l * (l - 1))
    scale = (std.log() - math.log(RAW_STD)).pow(2).mean()
    return LAMBDA_LEVEL * level_loss + blend_loss + ORTHO_WEIGHT * ortho + SCALE_WEIGHT * scale, blend_loss


def _val_pairs(images: list[np.ndarray], sigma: float, seed: int):
    """(clean, noisy) (1, 3, H, W) in [0, 1] per whole validation image: Gaussian noise at σ, fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    for im in images:
        clean = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255.0
        if is_mono(clean):  # a grey image gets grey noise (as engine.evaluate gives it)
            yield clean, noise.gaussian(clean[:, :1], torch.tensor([sigma]), gen).expand_as(clean)
        else:
            yield clean, noise.gaussian(clean, torch.tensor([sigma]), gen)


@torch.no_grad()
def validate(model: RCDNet, images: list[np.ndarray], sigma: float = VAL_SIGMA, seed: int = 0) -> dict:
    """AutoTune PSNR and each level's PSNR on Gaussian noise at σ, whole images, fixed seed."""
    model.eval()
    device = next(model.parameters()).device
    auto, levels = [], []
    for clean, noisy in _val_pairs(images, sigma, seed):
        clean, noisy = clean.to(device), noisy.to(device)
        bases, coeffs = model(noisy)
        out = noisy + (coeffs[:, :, None, None, None] * bases).sum(1)
        auto.append(_psnr(out, clean))
        levels.append([_psnr(noisy + bases[:, i], clean) for i in range(bases.shape[1])])
    model.train()
    return {"psnr_autotune": float(np.mean(auto)), "psnr_levels": np.mean(levels, axis=0).round(2).tolist()}


@torch.no_grad()
def validate_plain(model: RCDNet, images: list[np.ndarray], sigma: float = VAL_SIGMA, seed: int = 0) -> dict:
    """--plain: PSNR of noisy + the blind residual, same noise as `validate`."""
    model.eval()
    device = next(model.parameters()).device
    out = [_psnr(noisy + plain_residual(model, noisy), clean)
           for clean, noisy in ((c.to(device), n.to(device)) for c, n in _val_pairs(images, sigma, seed))]
    model.train()
    return {"psnr_plain": float(np.mean(out))}


@torch.no_grad()
def head_statistics(model: RCDNet, images: list[np.ndarray], n: int, rng: np.random.Generator,
                    gen: torch.Generator, device: torch.device, grey_share: float = 0.0) -> dict:
    """What Router and AutoTune see, and what their loss needs, for n noisy crops (backbone frozen).

    Per crop: the covariance of [raw maps; noisy], the pooled backbone features and the noise
    estimate (what `transform_and_autotune` takes), and the second moments of [raw maps; clean − noisy]. The error of any
    blend w·raw is then a quadratic form: mean((w·raw − r)²) = wᵀA w − 2 wᵀb + d.
    """
    model.eval()
    l = model.cfg.num_levels
    covs, feats, moments, sigmas = [], [], [], []
    for _ in range(n):
        im = images[rng.integers(len(images))]
        side = int(min(rng.integers(HEAD_CROP[0], HEAD_CROP[1] + 1), *im.shape[:2]))
        y, x = rng.integers(im.shape[0] - side + 1), rng.integers(im.shape[1] - side + 1)
        crop = np.ascontiguousarray(np.rot90(im[y : y + side, x : x + side], rng.integers(4)))
        clean = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, s, s)
        noisy = make_noisy(clean.to(gen.device), gen, grey_share).cpu()
        raw, f = model.raw_maps(noisy.to(device).contiguous(memory_format=torch.channels_last))
        raw = raw.reshape(1, l, -1).cpu()  # (1, L, M)
        covs.append(nd.covariance(torch.cat([raw, noisy.reshape(1, 1, -1)], dim=1))[0])
        feats.append(f.float().cpu()[0])
        sigmas.append(estimate_noise_sigma(noisy[:, 1] * 255.0)[0])
        z = torch.cat([raw, (clean - noisy).reshape(1, 1, -1)], dim=1)[0].double()  # (L+1, M)
        moments.append(z @ z.T / z.shape[1])
    model.train()
    return {"cov": torch.stack(covs), "feats": torch.stack(feats), "moments": torch.stack(moments),
            "sigma": torch.stack(sigmas)}


def head_loss(model: RCDNet, stats: dict, idx: torch.Tensor) -> torch.Tensor:
    """Mean over crops of log MSE (i.e. −PSNR up to constants) of the AutoTune blend, plus λ times
    that of each level alone — the training loss of METHOD.md §4 in closed form on statistics."""
    l = model.cfg.num_levels
    t, c = model.transform_and_autotune(stats["cov"][idx], stats["feats"][idx], model.cfg.ns_iters,
                                        stats["sigma"][idx])
    m = stats["moments"][idx]
    a, b, d = m[:, :l, :l], m[:, :l, l], m[:, l, l]  # (B, L, L), (B, L), (B,)
    w = (t.transpose(1, 2) @ c.double()[..., None]).squeeze(-1)  # (B, L) the blend's weights on raw maps
    blend = torch.einsum("bi,bij,bj->b", w, a, w) - 2 * (w * b).sum(1) + d  # (B,)
    levels = torch.einsum("bki,bij,bkj->bk", t, a, t) - 2 * (t @ b[..., None]).squeeze(-1) + d[:, None]  # (B, L)
    eps = 1e-10  # (8-bit σ 0.0026)²: keeps log finite on a noiseless crop
    return (blend.clamp_min(eps).log() + LAMBDA_LEVEL * levels.clamp_min(eps).log().mean(1)).mean()


def with_sigma_feature(model: RCDNet) -> RCDNet:
    """The same model with the noise-estimate input to Router and AutoTune (RCDConfig.sigma_feature),
    its weight starting at zero: the function is unchanged until the heads are refitted."""
    if model.cfg.sigma_feature:
        return model
    new = RCDNet(replace(model.cfg, sigma_feature=True))
    state = model.state_dict()
    for key in ("router.fc.weight", "autotune.fc.weight"):
        state[key] = torch.cat([state[key], state[key].new_zeros(state[key].shape[0], 1)], dim=1)
    new.load_state_dict(state)
    return new


def fit_heads(model: RCDNet, stats: dict, steps: int, lr: float, batch: int, seed: int) -> list[dict]:
    """Refit Router and AutoTune on cached statistics; returns the held-out loss history."""
    n = stats["cov"].shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    hold, fit = perm[: int(n * HEAD_HOLDOUT)], perm[int(n * HEAD_HOLDOUT) :]
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.router.parameters()) + list(model.autotune.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for step in tqdm(range(1, steps + 1), desc="fit heads", dynamic_ncols=True):
        idx = fit[torch.randint(len(fit), (batch,), generator=gen)]
        loss = head_loss(model, stats, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        sched.step()
        if step % max(steps // 10, 1) == 0 or step == 1:
            with torch.no_grad():
                history.append({"step": step, "heldout_loss": round(float(head_loss(model, stats, hold)), 5)})
    for p in model.parameters():
        p.requires_grad_(True)
    return history


def train_step(model: RCDNet, opt, sampler: PatchSampler, gen: torch.Generator, device: torch.device,
               args, warmup: bool) -> torch.Tensor:
    """One optimiser step on a fresh batch; returns the blend loss (a 0-d tensor on the device)."""
    u8 = sampler.batch_u8(args.batch)  # (B, P, P, 3) uint8
    if device.type == "cuda":
        u8 = u8.pin_memory().to(device, non_blocking=True)
    clean = u8.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, P, P) in [0, 1]
    if args.mono:
        clean = to_mono(clean)
    noisy = make_noisy(clean, gen, args.grey_noise, args.mono)
    if args.plain:
        loss, blend_loss = plain_loss_fn(model, clean, noisy, amp=args.amp)
    else:
        loss, blend_loss = loss_fn(model, clean, noisy, warmup=warmup, amp=args.amp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    # The total norm is NaN or inf when any gradient is: one check (one device sync), not one per tensor.
    total_norm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], GRAD_CLIP)
    if torch.isfinite(total_norm):
        opt.step()
    return blend_loss.detach()


def trainable(model: RCDNet, args) -> list[torch.nn.Parameter]:
    """The parameters this run trains (and marks so): all of them, or with --mono the mono
    backbone's own (not the head, Router and AutoTune it shares with the colour model)."""
    if not args.mono:
        return list(model.parameters())
    shared = {id(p) for p in model.backbone.head.parameters()}
    own = [p for p in model.backbone_mono.parameters() if id(p) not in shared]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in own:
        p.requires_grad_(True)
    return own


def fit_steps_to_budget(model: RCDNet, opt, sampler: PatchSampler, gen: torch.Generator, device: torch.device,
                        args) -> int:
    """--budget-s: time BUDGET_PROBE steps on a copy of the model, then return the step count that
    fills the budget (validation included). The copy and its optimiser are thrown away, so the
    real run starts from the same weights and follows the schedule as if --steps had been given."""
    probe_model = RCDNet(model.cfg).to(device).to(memory_format=torch.channels_last)
    probe_model.load_state_dict(model.state_dict())
    probe_opt = torch.optim.Adam(trainable(probe_model, args), lr=opt.param_groups[0]["lr"] / 25.0)
    probe_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    probe_sampler = PatchSampler(sampler.images, sampler.patch, np.random.default_rng(args.seed + 1))
    times = []
    for _ in range(BUDGET_PROBE):
        t0 = time.perf_counter()
        float(train_step(probe_model, probe_opt, probe_sampler, probe_gen, device, args, warmup=True))
        times.append(time.perf_counter() - t0)
    per_step = float(np.median(times[BUDGET_PROBE // 2 :]))  # the first steps pick kernels; skip them
    val_share = 0.05  # validation runs and checkpoints: a few per cent of a run, kept back
    steps = max(1, int(args.budget_s * (1.0 - val_share) / per_step))
    print(f"--budget-s {args.budget_s:g}: {per_step * 1000:.1f} ms per step → {steps} steps")
    return steps


def pick_amp(device: torch.device, precision: str, model: RCDNet, patch: int) -> torch.dtype | None:
    """The backbone's training precision: None (float32) or torch.bfloat16. auto: bfloat16 on a GPU
    that has it (no loss scaling needed, float32's range); on a CPU where oneDNN has bf16 and one
    timed forward + backward of the backbone on a 4 × patch² batch is BF16_MIN_SPEEDUP faster
    (denoiser.pick_dtype; where it is not, bf16 runs several times slower than float32)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            if precision == "bf16":
                raise SystemExit("error: --precision bf16: this GPU has no bfloat16")
            return None
        return torch.bfloat16
    if precision == "bf16":
        return torch.bfloat16
    x = torch.rand(4, 3, patch, patch, device=device).contiguous(memory_format=torch.channels_last)

    def probe(dtype: torch.dtype) -> float:
        def step():
            with backbone_autocast(x, None if dtype == torch.float32 else dtype):
                raw, _ = model.raw_maps(x)
            raw.square().mean().backward()
            model.zero_grad(set_to_none=True)

        return best_seconds(step)

    return None if pick_dtype(device, "auto", probe) == torch.float32 else torch.bfloat16


def _psnr(est, clean):
    mse = F.mse_loss(est.clamp(0, 1) * 255.0, clean * 255.0).item()
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--data", required=True, help="comma-separated folders of clean training images")
    ap.add_argument("--val", required=True, help="folder of clean validation images")
    ap.add_argument("--out", required=True, help="checkpoint path (PATH.state holds the resumable state)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per preset, LEARNING_RATE)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--init", default=None,
                    help="start from this checkpoint's weights (fine-tuning: fresh optimiser and schedule)")
    ap.add_argument("--ns-iters", type=int, default=None,
                    help="Newton–Schulz iterations in the loss (default: the preset's; stored in the checkpoint)")
    ap.add_argument("--warmup", type=float, default=WARMUP_SHARE,
                    help=f"share of the steps during which the blend may not use the zero level (default {WARMUP_SHARE})")
    ap.add_argument("--heads-only", action="store_true",
                    help="with --init: keep the backbone, refit Router and AutoTune on the statistics of "
                         "--head-samples noisy crops (--steps optimiser steps; try 2000)")
    ap.add_argument("--plain", action="store_true",
                    help="pre-train the backbone as a blind denoiser (top level's map as the residual; "
                         "no ND, ~3× faster per step); then train the RCD model from it with --init")
    ap.add_argument("--head-samples", type=int, default=HEAD_SAMPLES, help="crops for --heads-only")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="train for about this many seconds: --steps is set from the speed of a short probe "
                         "(fixed then: other work on the same CPU makes the run longer)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="the backbone's precision in training: auto = bfloat16 autocast on GPUs that have it and "
                         "on CPUs where a timing probe finds it faster, else float32")
    ap.add_argument("--synthetic", type=float, default=0.0, metavar="SHARE",
                    help="share of training images that are generated charts (engine/synthetic.py: dead "
                         "leaves, gratings, zone plates, text), in [0, 1); default 0")
    ap.add_argument("--grey-noise", type=float, default=0.0, metavar="SHARE",
                    help="share of the Gaussian-noise patches whose noise is grey (one field in R, G and B: "
                         "monochrome pictures, luma noise left by an ISP's chroma NR), in [0, 1]; default 0")
    ap.add_argument("--mono", action="store_true",
                    help="with --init: train the model's backbone for monochrome frames (added, from the colour "
                         "one, where --init has none) on grey patches with grey noise; the colour model stays as it is")
    args = ap.parse_args(argv)
    args.command = "python -m engine.train " + " ".join(sys.argv[1:] if argv is None else argv)
    # A bad option value: one line and exit code 2, as the player's; something named that cannot be
    # used (a folder, a checkpoint, an output) exits 1 with one line.
    def bad_option(message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    if args.heads_only and not args.init:
        bad_option("--heads-only needs --init CHECKPOINT (the backbone to keep)")
    if args.mono and (not args.init or args.heads_only or args.plain):
        bad_option("--mono needs --init CHECKPOINT (the colour model it adds to), without --heads-only or --plain")
    if not 0.0 <= args.grey_noise <= 1.0:
        bad_option(f"--grey-noise {args.grey_noise:g}: the share must be in [0, 1]")
    if not 0.0 <= args.synthetic < 1.0:
        bad_option(f"--synthetic {args.synthetic:g}: the share must be in [0, 1)")
    for name, v, lo in (("--steps", args.steps, 1), ("--batch", args.batch, 1), ("--patch", args.patch, 16),
                        ("--head-samples", args.head_samples, 1), ("--val-every", args.val_every, 1),
                        ("--ns-iters", args.ns_iters if args.ns_iters is not None else 1, 1), ("--seed", args.seed, 0),
                        ("--threads", args.threads, 0)):
        if v < lo:
            bad_option(f"{name} must be at least {lo}, got {v}")
    for name, v in (("--lr", args.lr), ("--budget-s", args.budget_s)):
        if v is not None and not (math.isfinite(v) and v > 0):
            bad_option(f"{name} must be a positive number, got {v}")
    from engine.images import EXTENSIONS, check_output

    if Path(args.out).suffix.lower() in EXTENSIONS:  # (--out v.png over a validation image wrote a checkpoint there)
        bad_option(f"--out {args.out}: an image file name; a checkpoint goes to a .pt file")
    state_path = Path(args.out).with_name(Path(args.out).name + ".state")
    if args.resume and not state_path.is_file() and Path(args.out).exists():
        raise SystemExit(f"error: --resume: {state_path}: no training state to resume from, and {args.out} exists "
                         f"(it would be overwritten by a run from step 0)")

    why = check_output(args.out, "checkpoint")  # now, not after the first checkpoint interval
    if why:
        raise SystemExit(f"error: {why}")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    # Noise is drawn where the model runs: on a GPU, drawing it on the CPU and copying it over
    # would cost more than the step. (A CPU run draws exactly what it drew before.)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shape: pick the fastest conv kernels once

    train_images = []
    for d in args.data.split(","):
        train_images += load_folder(d)
    args.synthetic_images = round(args.synthetic / (1.0 - args.synthetic) * len(train_images))
    train_images += synthetic.chart_images(args.synthetic_images, SYNTHETIC_SIZE, seed=args.seed + 1)
    val_images = load_folder(args.val)
    if args.mono:  # validated on the same images made grey, with grey noise
        val_images = [mono_image(im) for im in val_images]
    sampler = PatchSampler(train_images, args.patch, rng)

    cfg = PRESETS[args.preset]
    if args.init:
        try:
            init, init_meta = checkpoint.load(args.init)
        except checkpoint.CheckpointError as e:
            raise SystemExit(f"error: --init: {e}") from None
        if init.cfg.name != args.preset:
            raise SystemExit(f"error: --init {args.init} holds a {init.cfg.name!r} model, not {args.preset!r}")
        cfg = init.cfg
    if args.ns_iters is not None:
        cfg = replace(cfg, ns_iters=args.ns_iters)
    if args.mono:
        cfg = replace(cfg, mono=True)
    model = RCDNet(cfg)
    if args.init:
        state = init.state_dict()
        if args.mono and not init.cfg.mono:  # the mono body starts as a copy of the colour one
            state.update({"backbone_mono." + k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
        model.load_state_dict(state)
        if args.heads_only:
            model = with_sigma_feature(model)
    model = model.to(device).to(memory_format=torch.channels_last)
    if args.heads_only:
        return heads_only(model, args, init_meta, train_images, val_images, rng, gen, device)
    args.amp = pick_amp(device, args.precision, model, args.patch)
    print(f"backbone precision: {'bfloat16 (autocast)' if args.amp else 'float32'}")
    lr = args.lr if args.lr is not None else LEARNING_RATE[args.preset]
    opt = torch.optim.Adam(trainable(model, args), lr=lr)
    if args.budget_s:
        args.steps = fit_steps_to_budget(model, opt, sampler, gen, device, args)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=args.steps, pct_start=0.02,
                                                final_div_factor=100.0)
    out = Path(args.out)
    step, wall0, history = 0, 0.0, []
    if args.resume and not state_path.exists():
        print(f"--resume: no training state at {state_path} yet: starting from step 0")
    if args.resume and state_path.exists():
        try:
            st = torch.load(state_path, map_location="cpu", weights_only=False)
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
        except Exception as e:  # torch raises many kinds for a damaged or foreign file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SystemExit(f"error: --resume: {state_path}: not a training state of this {args.preset!r} model ({first})") from None
        if st.get("total_steps") == args.steps:
            sched.load_state_dict(st["sched"])
        else:  # a longer (or shorter) run: the same schedule stretched to the new length
            for _ in range(min(st["step"], args.steps)):
                sched.step()
        step, wall0, history = st["step"], st["wall"], st["history"]
        rng.bit_generator.state = st["np_rng"]
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        print(f"resumed from {state_path} at step {step}")

    t0 = time.time() - wall0
    model.train()
    bar = tqdm(total=args.steps, initial=step, desc=f"train {args.preset}", dynamic_ncols=True)
    running = None
    while step < args.steps:
        blend_loss = train_step(model, opt, sampler, gen, device, args, warmup=step < args.warmup * args.steps)
        sched.step()
        step += 1
        running = blend_loss.item() if running is None else 0.98 * running + 0.02 * blend_loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if step % args.val_every == 0 or step == args.steps:
            v = validate_plain(model, val_images) if args.plain else validate(model, val_images)
            v.update(step=step, wall_s=round(time.time() - t0, 1))
            history.append(v)
            if args.plain:
                bar.write(f"step {step}: val σ={VAL_SIGMA:g} blind residual {v['psnr_plain']:.2f} dB")
            else:
                bar.write(f"step {step}: val σ={VAL_SIGMA:g} AutoTune {v['psnr_autotune']:.2f} dB, levels {v['psnr_levels']}")
            meta = {
                "preset": args.preset, "plain": args.plain, "steps": step, "wall_s": round(time.time() - t0, 1),
                "machine": f"{platform.machine()} {os.cpu_count()} cpu, {device.type}",
                "data": args.data, "val": args.val, "command": args.command,
                "synthetic_images": args.synthetic_images, "val_history": history,
                "precision": "bf16" if args.amp else "fp32", "mono": args.mono,
            }
            checkpoint.save(model, out, meta)
            tmp = state_path.with_name(f".{state_path.name}.tmp")  # whole or not at all (Ctrl-C left it torn)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "total_steps": args.steps, "step": step, "wall": time.time() - t0, "history": history,
                        "np_rng": rng.bit_generator.state, "gen": gen.get_state(),
                        "torch_rng": torch.get_rng_state()}, tmp)
            os.replace(tmp, state_path)
    bar.close()
    print(json.dumps(history[-1]) if history else "no validation run")


def heads_only(model, args, init_meta: dict, train_images, val_images, rng, gen, device) -> None:
    t0 = time.time()
    before = validate(model, val_images)
    print(f"before: val σ={VAL_SIGMA:g} AutoTune {before['psnr_autotune']:.2f} dB")
    stats = head_statistics(model, train_images, args.head_samples, rng, gen, device, args.grey_noise)
    history = fit_heads(model.cpu(), stats, args.steps, args.lr or 1e-3, 64, args.seed)
    model.to(device)
    after = validate(model, val_images)
    after.update(step=args.steps, wall_s=round(time.time() - t0, 1), heads_fit=history, before=before)
    print(f"after: val σ={VAL_SIGMA:g} AutoTune {after['psnr_autotune']:.2f} dB, levels {after['psnr_levels']}")
    if after["psnr_autotune"] < before["psnr_autotune"]:
        # It happens (weights/README.md, rcd_quality.pt): the crop objective can disagree with whole images.
        print(f"warning: the refit lowered validation by {before['psnr_autotune'] - after['psnr_autotune']:.2f} dB; "
              f"keep {args.init} unless the held-out crops matter more to you", file=sys.stderr)
    meta = {
        "preset": args.preset, "heads_steps": args.steps, "wall_s": after["wall_s"],
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {device.type}",
        "data": args.data, "val": args.val, "command": args.command, "synthetic_images": args.synthetic_images,
        "init_meta": {k: v for k, v in init_meta.items() if k != "init_meta"},
        "val_history": init_meta.get("val_history", []) + [after],
    }
    checkpoint.save(model, args.out, meta)
    print(json.dumps({k: after[k] for k in ("psnr_autotune", "psnr_levels")}))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the checkpoint and its state are each written whole: --resume goes on
        print("interrupted: --resume goes on from the last checkpoint", file=sys.stderr)
        raise SystemExit(130) from None
