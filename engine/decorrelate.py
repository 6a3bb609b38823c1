"""Noise Decorrelation (ND): make the L residual maps orthogonal and re-scale them to their levels.

Owns the L×L algebra of METHOD.md §2: the covariance of the flattened maps, Σ^(-1/2) by
Newton–Schulz iterations, and the one linear transform that turns raw backbone maps into
decorrelated maps whose standard deviations are exactly the levels. Pure torch, any device,
differentiable (training runs it per patch, inference per frame).

The whole step is expressed as one L×L matrix T applied to the raw maps, so a frame costs one
pass to measure the covariance and one pass to apply T; everything else is on L×L matrices,
computed in float64 because near-collinear maps make Σ ill-conditioned (METHOD.md, pitfalls).
"""

from __future__ import annotations

import torch

# Newton–Schulz converges for eigenvalues of the trace-normalised Σ in (0, 3); an eigenvalue λ needs
# about log(1/√λ)/log(1.5) iterations. This many covers λ down to ~1e-12, i.e. maps correlated at
# 0.999999, which random or badly trained backbones do produce.
NS_MAX_ITERS = 80
# Stop early once P Σ P is this close to the identity (max abs entry); far below the 0.01 bound.
NS_TOL = 1e-7
# Inference tests convergence every this many iterations: a test costs about two iterations, and
# iterating past convergence changes nothing (the fixed point is stable). Checking every iteration
# made ND + AutoTune ~2× slower per frame.
NS_CHECK_EVERY = 4
# Ridge relative to the mean eigenvalue; keeps a degenerate Σ (two identical maps) invertible.
RIDGE = 1e-10
# Whitening never needs to amplify a map by more than this unless Σ is singular.
MAX_RESCALE = 1e4


# Elements per map converted to float64 at a time by `covariance` (bounds its temporary memory).
COV_CHUNK = 1 << 20


def covariance(maps: torch.Tensor) -> torch.Tensor:
    """Covariance of each map flattened: maps (B, L, ...) → (B, L, L) float64.

    Computed as (N Nᵀ − M μ μᵀ)/(M − 1) so no centred copy of the maps is made. The products and
    sums are float64 (chunk by chunk): for near-collinear maps the small eigenvalues of Σ sit about
    (1 − correlation) below its entries, and a float32 Gram matrix (relative error ~1e-6 over a
    frame) erased them — maps correlated at 0.999999 came out of ND still correlated at 0.2–0.4.
    """
    b, l = maps.shape[:2]
    flat = maps.reshape(b, l, -1)  # (B, L, M)
    m = flat.shape[-1]
    gram = maps.new_zeros((b, l, l), dtype=torch.float64)
    total = maps.new_zeros((b, l), dtype=torch.float64)
    for k in range(0, m, COV_CHUNK):
        part = flat[..., k : k + COV_CHUNK].double()  # float32 products are exact in float64
        gram = gram + torch.bmm(part, part.transpose(1, 2))  # (B, L, L)
        total = total + part.sum(dim=-1)  # (B, L)
    mean = total / m
    cov = (gram - m * mean[:, :, None] * mean[:, None, :]) / max(m - 1, 1)
    return cov


def inv_sqrt_newton_schulz(cov: torch.Tensor, iters: int | None = None, tol: float = NS_TOL) -> torch.Tensor:
    """Σ^(-1/2) for a batch of SPD matrices (B, L, L), by the coupled Newton–Schulz iteration.

    Σ is divided by its trace first (eigenvalues then lie in (0, 1], where the iteration converges)
    and the result is rescaled. With `iters` given, exactly that many iterations run (training,
    differentiable); with None the loop runs until P Σ P is within `tol` of I or NS_MAX_ITERS.
    """
    b, l, _ = cov.shape
    eye = torch.eye(l, dtype=cov.dtype, device=cov.device).expand(b, l, l)
    trace = cov.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-30)[:, None, None]  # (B, 1, 1)
    a = cov / trace + RIDGE * eye / l
    y, z = a, eye.clone()  # y → A^(1/2), z → A^(-1/2)
    n = iters if iters is not None else NS_MAX_ITERS  # a multiple of NS_CHECK_EVERY
    err = torch.tensor(float("nan"))
    half3 = 1.5 * eye
    for k in range(1, n + 1):
        t = torch.baddbmm(half3, z, y, alpha=-0.5)  # ½(3I − Z·Y) in one op (per-op overhead dominates at L×L)
        y, z = y @ t, t @ z
        if iters is None and k % NS_CHECK_EVERY == 0:
            err = (z @ a @ z - eye).abs().amax()
            if not err >= tol:  # converged, or not finite (handled below)
                break
    if iters is None and not err < 1e-4:  # not converged, or not finite
        z = inv_sqrt_eigh(a)  # rank-deficient Σ (a frame with fewer pixels than levels): exact, floored
    return z / trace.sqrt()


def inv_sqrt_eigh(a: torch.Tensor) -> torch.Tensor:
    """Σ^(-1/2) of a batch of symmetric PSD matrices by eigendecomposition, eigenvalues floored
    relative to the largest so a singular Σ still gives a finite result."""
    evals, evecs = torch.linalg.eigh(a)
    floor = evals.amax(dim=-1, keepdim=True).clamp_min(1e-30) * 1e-12
    return evecs @ torch.diag_embed(evals.clamp_min(floor).rsqrt()) @ evecs.transpose(-1, -2)


def transform(cov_raw: torch.Tensor, levels: torch.Tensor, iters: int | None = None) -> torch.Tensor:
    """The L×L matrix T (B, L, L) with Ñ = T · raw: normalise, decorrelate, re-scale to the levels.

    cov_raw: covariance of the raw backbone maps (B, L, L); levels: (L,) standard deviations in the
    maps' own units. Step 1 (eq. 3) scales raw map i to std l_i (D); step 2 whitens (P = Σ_N^(-1/2));
    step 3 re-scales each whitened map to std l_i using the closed-form variances of P Σ_N Pᵀ.
    """
    lv = levels.to(cov_raw)
    active = lv > 0
    if not bool(active.all()):
        # Level 0 is the all-zero map (the paper's trick: blending with it scales the others down,
        # which a softmax that sums to 1 could not do otherwise). It takes no part in ND.
        idx = active.nonzero().squeeze(1)
        sub = transform(cov_raw[:, idx][:, :, idx], lv[idx], iters)
        t = cov_raw.new_zeros(cov_raw.shape)
        t[:, idx[:, None], idx[None, :]] = sub
        return t
    std_raw = cov_raw.diagonal(dim1=1, dim2=2).clamp_min(1e-30).sqrt()  # (B, L)
    d = lv[None, :] / std_raw  # (B, L)  eq. 3 normalisation
    cov_n = cov_raw * d[:, :, None] * d[:, None, :]  # D Σ D
    p = inv_sqrt_newton_schulz(cov_n, iters)
    var_white = (p @ cov_n @ p.transpose(1, 2)).diagonal(dim1=1, dim2=2).clamp_min(1e-30)  # (B, L)
    rescale = lv[None, :] / var_white.sqrt()
    t = rescale[:, :, None] * p * d[:, None, :]  # diag(rescale) · P · D
    # A frame with fewer samples than levels (a 1×1 frame has 3) has a singular Σ: whitening
    # would blow its null directions up. There, keep the normalised maps (T = D) instead.
    degenerate = ~torch.isfinite(t).all(dim=(1, 2)) | (rescale.amax(dim=1) > MAX_RESCALE)
    if degenerate.any():
        t = torch.where(degenerate[:, None, None], torch.diag_embed(d), t)
    return t


def decorrelate(raw: torch.Tensor, levels: torch.Tensor, iters: int | None = None) -> torch.Tensor:
    """raw (B, L, C, H, W) backbone maps → decorrelated maps of the same shape, map i with std l_i."""
    b, l = raw.shape[:2]
    t = transform(covariance(raw), levels, iters).to(raw.dtype if raw.is_floating_point() else torch.float32)
    out = torch.bmm(t.float(), raw.reshape(b, l, -1).float())  # (B, L, M)
    return out.reshape(raw.shape)


def offdiag_corr_max(maps: torch.Tensor) -> float:
    """Largest absolute off-diagonal correlation between the maps (B, L, ...), over the batch."""
    cov = covariance(maps)
    std = cov.diagonal(dim1=1, dim2=2).clamp_min(1e-30).sqrt()
    corr = cov / (std[:, :, None] * std[:, None, :])
    l = corr.shape[-1]
    off = corr - torch.diag_embed(corr.diagonal(dim1=1, dim2=2))
    return float(off.abs().amax()) if l > 1 else 0.0
