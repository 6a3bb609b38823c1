"""The RCD network in one file: config, backbone, multi-level head, Noise Decorrelation, AutoTune.

Owns the mapping noisy frame → (L decorrelated residual maps, AutoTune coefficients) of
METHOD.md. It knows nothing of devices, files, threads or uint8 frames (see denoiser.py).

Units: images are float in [0, 1] (8-bit value / 255); levels are configured in 8-bit units and
used internally divided by 255. A map at level l has standard deviation l/255 after decorrelation.

Backbone: a small U-Net that starts with a stride-2 4×4 conv (a learned 2×2 unshuffle, as in
FFDNet) so almost all work happens at 1/2, 1/4 and 1/8 resolution — the only way to stay under
the FLOP budgets of the presets at 1280×720. The head predicts 12·L channels at 1/2 resolution
(4 sub-pixels × L maps × RGB) that `to_full_res` rearranges. A per-frame L×L router acts on the
maps' statistics only (folded into the ND transform), so the per-pixel cost is the backbone's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine import decorrelate as nd

# The three downsamplings (unshuffle 2, then two stride-2 convs) need sizes divisible by 8.
PAD_MULTIPLE = 8
# Donoho's wavelet estimate: for Gaussian noise, median |diagonal Haar detail| = 0.6745 σ, and the
# median ignores the edges and texture that inflate every mean-based statistic of a frame.
MAD_TO_STD = 0.6745
# Above this many pixels the estimate uses every other 2×2 block in both directions (a quarter of
# them: still > 50 k samples at 720p, and the median is the costly part).
SIGMA_SUBSAMPLE_ABOVE = 256 * 256
# The monochrome backbone's grey images: colour made grey with BT.601 luma (what grey files and
# monochrome video hold), on 8-bit steps (engine/train.py, --mono); the luma it reads in a colour
# frame with luma noise is made the same way (engine/denoiser.py, luma_frame).
MONO_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class RCDConfig:
    name: str = "live"
    # 8-bit units, increasing. Level 0 is the all-zero map, as in the authors' model: AutoTune's
    # softmax sums to 1, and weight on the zero map is how it scales the other levels down.
    levels: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 30.0, 50.0)
    # Channels at 1/2, 1/4, 1/8 resolution. c1 is also the width of the features the player stores
    # per half-size pixel (denoiser.py). In a 1 250-step pilot, (16, 32, 48) reached 28.0 dB on
    # CSet5 at σ 25 against 26.0 for (12, 24, 48) with one more conv at 1/4: width at the finest
    # scale matters more than depth in the middle.
    widths: tuple[int, int, int] = (16, 32, 40)
    enc_blocks: tuple[int, int, int] = (0, 0, 2)  # residual convs per scale on the way down
    dec_blocks: tuple[int, int] = (0, 1)  # residual convs at 1/4 and 1/2 on the way up
    tau: float = 0.05  # AutoTune softmax temperature (the paper's value)
    # Newton–Schulz iterations in training; inference iterates to convergence, and training must
    # match it. With 8 the model learnt to lean on the unconverged whitening: 28.8 dB on CSet5 at
    # σ 25 when evaluated with 8 iterations, 24.4 dB converged. 30 covers eigenvalues of the
    # trace-normalised Σ down to ~1e-11 (decorrelate.py), i.e. converged for any trained model.
    ns_iters: int = 30
    # Router and AutoTune also see log(1 + σ̂), σ̂ the input's noise std estimated by
    # `estimate_noise_sigma` (8-bit units). Without it they judge the noise from pooled activations,
    # which high-contrast detail inflates: on the built-in test chart (σ ≈ 12) AutoTune of the first
    # quality model removed σ ≈ 26 and lost 7 dB to the input. False in checkpoints saved before it.
    sigma_feature: bool = False
    # A second backbone body for monochrome frames (R = G = B at every pixel: grey images, black-and-
    # white film), sharing the head, Router and AutoTune, so its bases blend exactly as the colour
    # ones. Noise in such a frame is identical in R, G and B, which a colour denoiser reads as
    # picture; a colour backbone trained on a share of that noise too lost 0.3–0.5 dB on colour
    # images (weights/README.md, which has what the mono backbones gain).
    mono: bool = False

    def __post_init__(self):
        assert 4 <= len(self.levels) <= 12, f"L must be in 4..12, got {len(self.levels)}"
        assert all(a < b for a, b in zip(self.levels, self.levels[1:])), "levels must increase"
        assert 0 <= self.levels[0] <= 5 and self.levels[-1] >= 50, "levels must cover 5..50 (8-bit units)"
        assert sum(1 for v in self.levels if v > 0) >= 2, "at least two non-zero levels"
        assert len(self.widths) == 3 and all(int(c) >= 1 for c in self.widths), f"widths: three channel counts, got {self.widths}"
        assert len(self.enc_blocks) == 3 and len(self.dec_blocks) == 2 and min(self.enc_blocks + self.dec_blocks) >= 0, \
            "enc_blocks: three counts >= 0, dec_blocks: two"
        assert self.tau > 0 and self.ns_iters >= 1, f"tau must be > 0 and ns_iters >= 1, got {self.tau}, {self.ns_iters}"

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RCDConfig":
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**known)


PRESETS: dict[str, RCDConfig] = {
    # ≤ 4 GFLOP per 1280×720 frame (3.7): meant for real time on a 2-core CPU (channels_last).
    "live": RCDConfig(name="live", sigma_feature=True),
    # ≤ 40 GFLOP per 1280×720 frame (36): for a GPU, or precomputed into the render cache on a CPU.
    "quality": RCDConfig(
        name="quality",
        # A top level above the 5..50 range makes strength 50 an interior point: AutoTune's softmax
        # caps one map's coefficient at 1, so with 50 on top it could not remove more than the
        # map that holds σ 50's estimate (measured: stuck at level 40, −1.15 dB at σ 50).
        levels=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
        widths=(32, 64, 96),
        enc_blocks=(0, 2, 4),
        dec_blocks=(1, 2),
        sigma_feature=True,
    ),
}


class ResConv(nn.Module):
    """Pre-activation residual conv, x + conv(relu(x)): the stream between blocks stays signed
    and linear, so the last features can carry a residual of either sign to the linear head."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, out=None):
        return torch.add(x, self.conv(F.relu(x)), out=out)


def _stage(c: int, n: int) -> nn.ModuleList:
    return nn.ModuleList(ResConv(c) for _ in range(n))


def _run(stage: nn.ModuleList, x, out=None):
    """Apply a stage; the last op writes into `out` when given (else `out` gets a copy)."""
    for i, block in enumerate(stage):
        x = block(x, out=out if i == len(stage) - 1 else None)
    if out is not None and len(stage) == 0:
        x = out.copy_(x)
    return x


class Backbone(nn.Module):
    """U-Net: (B, 3, H, W) in [0, 1], H and W multiples of 8 → raw maps at half size, features.

    The raw maps come out space-to-depth: (B, 12·L, H/2, W/2), channel k = (s·L + i)·3 + c for
    sub-pixel s = 2·dy + dx, level i, colour c (`to_full_res` rearranges them). The player never
    rearranges them: the blend is linear per pixel, so it runs in this layout (denoiser.py).
    Every layer is a plain oneDNN convolution; upsampling is nearest-neighbour after a 1×1 conv
    (pixel-shuffle and transposed convs have slow channels_last kernels on CPUs). Every stage is
    a chain of pre-activation residual convs, so the features reaching the head are signed: a
    relu'd stream of c1 ≈ 12 channels cannot express a signed 12-value residual per half-pixel
    (4 sub-pixels × RGB) — that bottleneck capped the first live model at 26.4 dB (CSet5, σ 25).
    """

    def __init__(self, cfg: RCDConfig):
        super().__init__()
        c1, c2, c3 = cfg.widths
        self.inp = nn.Conv2d(3, c1, 4, stride=2, padding=1)  # full → 1/2, linear (a learned unshuffle)
        self.enc1 = _stage(c1, cfg.enc_blocks[0])
        self.down1 = nn.Conv2d(c1, c2, 2, stride=2)  # 1/2 → 1/4
        self.enc2 = _stage(c2, cfg.enc_blocks[1])
        self.down2 = nn.Conv2d(c2, c3, 2, stride=2)  # 1/4 → 1/8
        self.enc3 = _stage(c3, cfg.enc_blocks[2])
        self.up2 = nn.Conv2d(c3, c2, 1)  # at 1/8, then nearest ×2
        self.dec2 = _stage(c2, cfg.dec_blocks[0])
        self.up1 = nn.Conv2d(c2, c1, 1)  # at 1/4, then nearest ×2
        self.dec1 = _stage(c1, cfg.dec_blocks[1])
        self.head = nn.Conv2d(c1, 12 * cfg.num_levels, 1)  # at 1/2: 4 sub-pixels × L levels × RGB
        self.feat_dim = c3 + c2

    def forward(self, x):
        d1, feats = self.features(x)
        return self.head(d1), feats  # (B, 12L, H/2, W/2), space-to-depth

    def features(self, x, out=None):
        """Everything but the head: (B, c1, H/2, W/2) features and (B, feat_dim) statistics.

        The head is a 1×1 conv, so the raw maps are an affine function of these features; the
        player stores the features (c1 + 12 numbers per half-size pixel instead of 12·L) and folds
        the head into its blend (denoiser.py). `out`, a (B, c1, H/2, W/2) view, receives the
        features directly (the last op writes there: no copy of the largest tensor).
        """
        e1 = _run(self.enc1, self.inp(x))  # (B, c1, H/2, W/2), signed
        e2 = _run(self.enc2, self.down1(F.relu(e1)))  # (B, c2, H/4, W/4)
        e3 = F.relu(_run(self.enc3, self.down2(F.relu(e2))))  # (B, c3, H/8, W/8)
        d2 = _run(self.dec2, F.interpolate(self.up2(e3), scale_factor=2.0) + e2)  # (B, c2, H/4, W/4)
        d1 = F.interpolate(self.up1(F.relu(d2)), scale_factor=2.0) + e1  # (B, c1, H/2, W/2)
        d1 = _run(self.dec1, d1, out=out)
        # Global statistics for AutoTune: what the deepest features saw, and how busy the mid scale is.
        feats = torch.cat([e3.mean(dim=(2, 3)), d2.abs().mean(dim=(2, 3))], dim=1)  # (B, c3 + c2)
        return d1, feats


def is_mono(x: torch.Tensor) -> bool:
    """Whether a batch (B, 3, H, W) holds monochrome images only: R = G = B exactly everywhere."""
    return bool(torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2]))


def estimate_noise_sigma(green: torch.Tensor) -> torch.Tensor:
    """Noise std (B,) of frames from their green planes (B, H, W), in the planes' units:
    median |diagonal Haar detail| / 0.6745 over the 2×2 blocks (see MAD_TO_STD).

    uint8 planes (the player's frames) take an exact integer path: 2·|detail| is an integer in
    0..510, so the median is read off a histogram (measured 0.4 ms against 1.5 ms for the sort at
    720p) and equals the float path's on the same values, torch's lower median included."""
    b, h, w = green.shape
    h, w = h // 2 * 2, w // 2 * 2
    if h == 0 or w == 0:
        return green.new_zeros(b, dtype=torch.float32)
    step = noise_grid_step(h, w)
    g = green[:, :h, :w]
    if g.dtype == torch.uint8:
        g = g.to(torch.int16)  # differences of four 8-bit values fit in int16
    n = (h - 2) // step + 1, (w - 2) // step + 1  # blocks whose top-left corner is on the grid
    corner = [g[:, dy : dy + step * (n[0] - 1) + 1 : step, dx : dx + step * (n[1] - 1) + 1 : step]
              for dy in (0, 1) for dx in (0, 1)]  # 4 × (B, n0, n1)
    detail2 = (corner[0] - corner[1] - corner[2] + corner[3]).abs().flatten(1)  # (B, n0·n1): 2·|detail|
    if detail2.dtype == torch.int16:
        sig = [sigma_from_detail_histogram(torch.bincount(row, minlength=511)) for row in detail2.long()]
        return torch.tensor(sig, dtype=torch.float32, device=green.device)
    return (detail2 * 0.5).float().median(dim=1).values / MAD_TO_STD


def noise_grid_step(h: int, w: int) -> int:
    """Spacing of the 2×2 blocks the noise estimate reads, for an (even-cropped) h×w plane."""
    return 4 if h // 2 * 2 * (w // 2 * 2) > SIGMA_SUBSAMPLE_ABOVE else 2


def sigma_from_detail_histogram(counts) -> float:
    """Noise std from the histogram (511,) of 2·|diagonal detail| values 0..510: the lower median
    (torch.median's) / 2 / MAD_TO_STD; 0 for an empty histogram."""
    counts = torch.as_tensor(counts)
    rank = (int(counts.sum()) - 1) // 2
    if rank < 0:
        return 0.0
    return int(torch.searchsorted(counts.cumsum(0), rank, right=True)) * 0.5 / MAD_TO_STD


def sigma_feature(sigma: torch.Tensor) -> torch.Tensor:
    """(B,) noise std in 8-bit units → (B, 1) input for Router and AutoTune."""
    return torch.log1p(sigma.float().clamp_min(0.0))[:, None]


def to_full_res(raw: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Space-to-depth raw maps (B, 12·L, h, w) → (B, L, 3, 2h, 2w)."""
    b, _, h, w = raw.shape
    x = raw.reshape(b, 2, 2, num_levels, 3, h, w)  # (B, dy, dx, L, C, h, w)
    return x.permute(0, 3, 4, 5, 1, 6, 2).reshape(b, num_levels, 3, 2 * h, 2 * w)


class AutoTune(nn.Module):
    """One linear layer on frame statistics → L logits → softmax(logits / τ): coefficients summing to 1.

    Features: pooled backbone features, log std of each raw map (how much the backbone wants to
    remove at that level), the correlation of each decorrelated map with the noisy frame and, with
    `cfg.sigma_feature`, log(1 + σ̂) of the input's estimated noise std (`extra`).
    """

    def __init__(self, feat_dim: int, num_levels: int, tau: float, extra: int = 0):
        super().__init__()
        self.tau = tau
        self.fc = nn.Linear(feat_dim + 2 * num_levels + extra, num_levels)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats, log_std_raw, corr_noisy, extra=None):
        # Pooled activations have no fixed scale (they drift in training): normalise them
        # (parameter-free), so the logits — ×1/τ = ×20 — cannot blow up into a one-hot choice.
        feats = F.layer_norm(feats.float(), feats.shape[-1:])
        z = [feats, log_std_raw.float(), corr_noisy.float()] + ([extra.float()] if extra is not None else [])
        z = torch.cat(z, dim=1)
        return torch.softmax(self.fc(z) / self.tau, dim=1)  # (B, L), rows sum to 1


class Router(nn.Module):
    """Per-frame L×L mixing G of the raw maps before ND: raw' = G·raw, G = I + one linear layer.

    The head is one fixed linear map per pixel, so on its own it cannot move the best residual
    estimate to the map whose level matches this frame's noise (a multiplication by a per-frame
    quantity). G does that from the frame's statistics. It acts on statistics only: the player
    folds it into the ND transform (T·G), so it costs nothing per pixel. The zero level is left alone.
    """

    def __init__(self, feat_dim: int, levels: tuple[float, ...], extra: int = 0):
        super().__init__()
        self.register_buffer("active", torch.tensor([i for i, v in enumerate(levels) if v > 0]), persistent=False)
        la = len(self.active)
        self.fc = nn.Linear(feat_dim + 2 * len(levels) + extra, la * la)
        nn.init.zeros_(self.fc.weight)  # G = I at initialisation
        nn.init.zeros_(self.fc.bias)

    def forward(self, z, size: int, dtype: torch.dtype):
        """G (B, size, size) in `dtype`: identity except on the non-zero levels' block."""
        la = len(self.active)
        g = torch.eye(size, dtype=dtype, device=z.device).repeat(z.shape[0], 1, 1)
        idx = self.active
        g[:, idx[:, None], idx[None, :]] += self.fc(z).reshape(z.shape[0], la, la).to(dtype)
        return g


class RCDNet(nn.Module):
    def __init__(self, cfg: RCDConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        if cfg.mono:
            self.backbone_mono = Backbone(cfg)
            self.backbone_mono.head = self.backbone.head  # one head: the bases of either blend the same way
        extra = 1 if cfg.sigma_feature else 0
        self.router = Router(self.backbone.feat_dim, cfg.levels, extra)
        self.autotune = AutoTune(self.backbone.feat_dim, cfg.num_levels, cfg.tau, extra)
        self.register_buffer("levels", torch.tensor(cfg.levels, dtype=torch.float32) / 255.0, persistent=False)

    def forward(self, noisy: torch.Tensor, ns_iters: int | None = None):
        """noisy (B, 3, H, W) in [0, 1], any H, W ≥ 1.

        Returns bases (B, L, 3, H, W) float32, decorrelated, map i with std levels[i]/255, and
        AutoTune coefficients (B, L). ns_iters: None iterates Newton–Schulz to convergence.
        """
        raw, feats = self.raw_maps(noisy)
        return self.decorrelate(raw, noisy.float(), feats, ns_iters)

    def backbone_for(self, x: torch.Tensor) -> Backbone:
        """The backbone for a batch (B, 3, H, W): the mono one where the model has it and every
        image of the batch is monochrome, else the colour one."""
        return self.backbone_mono if self.cfg.mono and is_mono(x) else self.backbone

    def raw_maps(self, noisy: torch.Tensor):
        """The backbone alone: noisy (B, 3, H, W), any H, W ≥ 1 (padded to PAD_MULTIPLE, cropped
        back) → raw maps (B, L, 3, H, W) float32, before normalisation and ND, and features (B, F)."""
        h, w = noisy.shape[2:]
        ph, pw = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
        x = F.pad(noisy, (0, pw, 0, ph), mode="replicate") if ph or pw else noisy
        raw, feats = self.backbone_for(x)(x)
        return to_full_res(raw.float(), self.cfg.num_levels)[..., :h, :w], feats

    def decorrelate(self, raw, noisy, feats, ns_iters=None):
        """Noise Decorrelation + AutoTune on raw maps (B, L, 3, H, W) of the noisy frame (B, 3, H, W)."""
        b, l = raw.shape[:2]
        # One covariance pass over [raw maps; noisy] gives Σ_raw and each map's covariance with the input.
        stacked = torch.cat([raw.reshape(b, l, -1), noisy.reshape(b, 1, -1)], dim=1)  # (B, L+1, M)
        sigma = estimate_noise_sigma(noisy[:, 1] * 255.0) if self.cfg.sigma_feature else None  # (B,) 8-bit
        t, coeffs = self.transform_and_autotune(nd.covariance(stacked), feats, ns_iters, sigma)
        bases = torch.bmm(t.float(), raw.reshape(b, l, -1)).reshape(raw.shape)
        return bases, coeffs

    @staticmethod
    def _stats(cov, l):
        """Per-map log std and correlation with the noisy frame, from cov (B, L+1, L+1)."""
        var = cov.diagonal(dim1=1, dim2=2).clamp_min(1e-12)  # (B, L+1)
        corr = cov[:, :l, l] / (var[:, :l] * var[:, l:]).sqrt()  # (B, L)
        return 0.5 * var[:, :l].log(), corr

    def transform_and_autotune(self, cov, feats, ns_iters=None, sigma=None):
        """From cov (B, L+1, L+1) of [raw maps; noisy] (float64) and, with `cfg.sigma_feature`, the
        input's estimated noise std sigma (B,) in 8-bit units: ND transform T (B, L, L) with
        Ñ = T·raw (the routing G folded in), and AutoTune coefficients (B, L). Works on
        statistics only, never on pixels."""
        l = self.cfg.num_levels
        log_std, corr = self._stats(cov, l)
        extra = None
        if self.cfg.sigma_feature:
            if sigma is None:
                raise ValueError("this model needs the input's noise estimate (sigma)")
            extra = sigma_feature(sigma.to(feats.device))  # (B, 1)
        z = [F.layer_norm(feats.float(), feats.shape[-1:]), log_std.float(), corr.float()]
        z = torch.cat(z + ([extra] if extra is not None else []), dim=1)
        g = self.router(z, l + 1, cov.dtype)  # (B, L+1, L+1), identity on level 0 and the input
        cov = g @ cov @ g.transpose(1, 2)  # statistics of [G·raw; noisy]
        p = nd.transform(cov[:, :l, :l], self.levels, ns_iters)  # (B, L, L) ND of the routed maps
        # AutoTune sees the routed maps' log std and each decorrelated map's correlation with the input.
        lv = self.levels.double().clamp_min(1e-6)  # the zero level's correlation is 0/ε = 0
        corr_nd = (p @ cov[:, :l, l:]).squeeze(-1) / (lv * cov[:, l, l].clamp_min(1e-12).sqrt()[:, None])
        log_std_routed, _ = self._stats(cov, l)
        return p @ g[:, :l, :l], self.autotune(feats, log_std_routed, corr_nd, extra)


def count_flops(cfg: RCDConfig, height: int = 720, width: int = 1280) -> int:
    """FLOPs (2 × multiply-adds) of one forward pass at height×width, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = RCDNet(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, height, width))
    return counter.get_total_flops()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
