"""One frame's Router, Noise Decorrelation and AutoTune in NumPy, for inference.

Owns nothing new: `StatsHeads(model)(cov, feats, sigma)` returns what
`RCDNet.transform_and_autotune` returns for a batch of one with Newton–Schulz iterated to
convergence (the model and engine/decorrelate.py are the reference, used in training and tested
against this file). Why a second implementation: per frame the heads are about 150 operations on
L×L matrices, and torch's per-operation dispatch made them 1.4 ms alone and about 2 ms inside
inference (live model, 2-core CPU), 13 % of a 640×360 frame's inference. NumPy does the same
arithmetic in a fraction of that. Float64 for the covariance algebra, float32 for the two linear
layers (as the model computes them). Where the native kernels build (engine/native.py), the same
arithmetic runs in C in one call (engine/csrc/heads.c; 0.66 → 0.04 ms a frame, where NumPy's calls
run cold after the frame's passes), and this code is its fallback.
"""

from __future__ import annotations

import numpy as np

from engine import decorrelate as nd
from engine import native
from engine.model import RCDNet

LAYER_NORM_EPS = 1e-5  # torch.nn.functional.layer_norm's default, which the model uses


def _layer_norm(x: np.ndarray) -> np.ndarray:
    """Parameter-free layer norm of a float32 vector, as F.layer_norm (biased variance)."""
    x = x.astype(np.float32)
    mean = x.mean(dtype=np.float32)
    var = ((x - mean) ** 2).mean(dtype=np.float32)
    return (x - mean) / np.sqrt(var + np.float32(LAYER_NORM_EPS))


def _stats(cov: np.ndarray, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-map log std (L,) and correlation with the noisy frame (L,), from cov (L+1, L+1)."""
    var = np.maximum(np.diag(cov), 1e-12)
    return 0.5 * np.log(var[:l]), cov[:l, l] / np.sqrt(var[:l] * var[l])


def inv_sqrt_newton_schulz(cov: np.ndarray) -> np.ndarray:
    """Σ^(-1/2) of one SPD matrix, iterated to convergence: decorrelate.inv_sqrt_newton_schulz
    with iters=None (the same normalisation, ridge, checks and eigendecomposition fallback)."""
    l = cov.shape[0]
    eye = np.eye(l)
    trace = max(float(np.trace(cov)), 1e-30)
    a = cov / trace + nd.RIDGE * eye / l
    y, z = a, eye
    err = float("nan")
    for k in range(1, nd.NS_MAX_ITERS + 1):
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z = y @ t, t @ z
        if k % nd.NS_CHECK_EVERY == 0:
            err = float(np.abs(z @ a @ z - eye).max())
            if not err >= nd.NS_TOL:  # converged, or not finite (handled below)
                break
    if not err < 1e-4:
        evals, evecs = np.linalg.eigh(a)
        floor = max(float(evals.max()), 1e-30) * 1e-12
        z = (evecs / np.sqrt(np.maximum(evals, floor))) @ evecs.T
    return z / np.sqrt(trace)


def transform(cov_raw: np.ndarray, levels: np.ndarray, nonzero: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """decorrelate.transform for one frame: T (L, L) with Ñ = T·raw, map i with std levels[i].
    nonzero: np.ix_ of the levels above zero, where the caller has it (saves rebuilding it per frame)."""
    if nonzero is None and not (levels > 0).all():
        idx = np.flatnonzero(levels > 0)
        nonzero = np.ix_(idx, idx)
    if nonzero is not None:  # the zero level takes no part in ND (see decorrelate.transform)
        t = np.zeros_like(cov_raw)
        t[nonzero] = transform(cov_raw[nonzero], levels[nonzero[1][0]])
        return t
    std_raw = np.sqrt(np.maximum(np.diag(cov_raw), 1e-30))
    d = levels / std_raw  # eq. 3 normalisation
    cov_n = cov_raw * d[:, None] * d[None, :]
    p = inv_sqrt_newton_schulz(cov_n)
    var_white = np.maximum(np.einsum("ij,jk,ik->i", p, cov_n, p), 1e-30)  # diag(P Σ Pᵀ)
    rescale = levels / np.sqrt(var_white)
    with np.errstate(invalid="ignore", over="ignore"):
        t = rescale[:, None] * p * d[None, :]
    if not np.isfinite(t).all() or rescale.max() > nd.MAX_RESCALE:  # a singular Σ: keep D
        t = np.diag(d)
    return t


class StatsHeads:
    """The model's per-frame heads with their weights as NumPy arrays (copied once)."""

    def __init__(self, model: RCDNet, use_native: bool = False):
        """use_native: run the C heads (engine/native.py, Heads) where the kernels are available."""
        cfg = model.cfg
        self.l = cfg.num_levels
        self.levels = model.levels.double().cpu().numpy()  # (L,) in 0..1 units
        self.tau = float(model.autotune.tau)
        self.sigma_feature = bool(cfg.sigma_feature)
        self.active = model.router.active.cpu().numpy()
        # Index sets and the identity built once: rebuilding them took a tenth of a frame's heads.
        self._routed = np.ix_(self.active, self.active)
        nz = np.flatnonzero(self.levels > 0)
        self._nonzero = np.ix_(nz, nz) if len(nz) < self.l else None
        self._eye = np.eye(self.l + 1)
        as_np = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
        self.router_w, self.router_b = as_np(model.router.fc.weight), as_np(model.router.fc.bias)
        self.auto_w, self.auto_b = as_np(model.autotune.fc.weight), as_np(model.autotune.fc.bias)
        self.native = None
        if use_native and native.library() is not None:
            self.native = native.Heads(self.levels, self.active, (self.router_w, self.router_b),
                                       (self.auto_w, self.auto_b), self.tau, self.sigma_feature,
                                       (nd.RIDGE, nd.NS_TOL, nd.MAX_RESCALE, nd.NS_MAX_ITERS, nd.NS_CHECK_EVERY))

    def __call__(self, cov: np.ndarray, feats: np.ndarray, sigma: float | None) -> tuple[np.ndarray, np.ndarray]:
        """cov (L+1, L+1) float64 of [raw maps; noisy], feats (F,) pooled features, sigma the
        input's noise estimate (8-bit units) → T (L, L) float64, AutoTune coefficients (L,) float64."""
        if self.sigma_feature and sigma is None:
            raise ValueError("this model needs the input's noise estimate (sigma)")
        if self.native is not None:
            done = self.native(cov, feats, 0.0 if sigma is None else float(sigma))
            if done is not None:
                return done
        return self.numpy(cov, feats, sigma)

    def numpy(self, cov: np.ndarray, feats: np.ndarray, sigma: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The same in NumPy (the fallback of the C heads, and what they are tested against)."""
        l = self.l
        extra = [np.float32(np.log1p(max(float(sigma), 0.0)))] if self.sigma_feature else []
        ln = _layer_norm(feats)
        log_std, corr = _stats(cov, l)
        z = np.concatenate([ln, log_std.astype(np.float32), corr.astype(np.float32), extra]).astype(np.float32)
        la = len(self.active)
        g = self._eye.copy()
        g[self._routed] += (self.router_w @ z + self.router_b).reshape(la, la)
        cov = g @ cov @ g.T  # statistics of [G·raw; noisy]
        p = transform(cov[:l, :l], self.levels, self._nonzero)
        lv = np.maximum(self.levels, 1e-6)  # the zero level's correlation is 0/ε = 0
        corr_nd = (p @ cov[:l, l]) / (lv * np.sqrt(max(cov[l, l], 1e-12)))
        log_std_routed, _ = _stats(cov, l)
        z2 = np.concatenate([ln, log_std_routed.astype(np.float32), corr_nd.astype(np.float32), extra]).astype(np.float32)
        logits = (self.auto_w @ z2 + self.auto_b) / np.float32(self.tau)
        e = np.exp(logits - logits.max())
        return p @ g[:l, :l], (e / e.sum()).astype(np.float64)
