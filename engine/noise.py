"""Noise synthesis for training and for the demo source: Gaussian and realistic camera noise.

Owns the noise models only; callers own the random generators (pass a torch.Generator or a
numpy Generator so everything is reproducible). Images are float in [0, 1].

Camera noise model (what a raw-to-RGB pipeline leaves in 8-bit video):
- signal-dependent (Poisson–Gaussian): variance = a·x + b, shot noise a, read noise b;
- correlated across colour channels (demosaicking and colour correction mix the channels):
  each channel gets a shared component with correlation ρ;
- clipped to [0, 1] and quantised to 8 bits, as every decoded frame is.
"""

from __future__ import annotations

import math

import torch

# Gaussian σ is drawn per patch over this range (8-bit units): the product's strengths span 0..50
# and a denoiser trained slightly beyond its range generalises better at the top end.
SIGMA_MAX = 55.0
# Camera-noise parameter ranges (log-uniform), in [0, 1] units: at mid-grey these give a noise
# std of about 1 to 25 in 8-bit units, the span from a bright daylight sensor to a dim phone camera.
SHOT_RANGE = (1e-4, 1.5e-2)
READ_RANGE = (1e-6, 3e-3)
CHANNEL_CORR_MAX = 0.5


def gaussian(clean: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """clean (B, C, H, W) in [0, 1], sigma (B,) in 8-bit units → clean + N(0, σ²), not clipped."""
    n = torch.randn(clean.shape, generator=gen, device=clean.device)
    return clean + n * (sigma.view(-1, 1, 1, 1) / 255.0)


def _gen_device(gen: torch.Generator | None) -> torch.device | None:
    """Where gen draws (a CUDA generator only draws CUDA tensors); None: torch's default."""
    return gen.device if gen is not None else None


def _log_uniform(lo: float, hi: float, n: int, gen) -> torch.Tensor:
    u = torch.rand(n, generator=gen, device=_gen_device(gen))
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def camera(clean: torch.Tensor, gen: torch.Generator | None = None, shot=None, read=None, corr=None) -> torch.Tensor:
    """Poisson–Gaussian, channel-correlated, clipped and 8-bit-quantised noise on clean (B, 3, H, W).

    shot/read/corr (B,) are drawn from the ranges above when not given.
    """
    b = clean.shape[0]
    shot = _log_uniform(*SHOT_RANGE, b, gen) if shot is None else shot
    read = _log_uniform(*READ_RANGE, b, gen) if read is None else read
    corr = torch.rand(b, generator=gen, device=_gen_device(gen)) * CHANNEL_CORR_MAX if corr is None else corr
    shot, read, corr = (t.to(clean.device).view(-1, 1, 1, 1) for t in (shot, read, corr))
    std = torch.sqrt(shot * clean.clamp(0, 1) + read)  # (B, 3, H, W)
    own = torch.randn(clean.shape, generator=gen, device=clean.device)
    shared = torch.randn((b, 1) + clean.shape[2:], generator=gen, device=clean.device)
    z = torch.sqrt(1 - corr) * own + torch.sqrt(corr) * shared  # unit variance, corr ρ across channels
    noisy = (clean + std * z).clamp(0, 1)
    return torch.round(noisy * 255.0) / 255.0
