"""The backbone's forward pass on a CPU with its elementwise passes fused (float32 inference only).

Owns nothing but speed: `features(backbone, rgb, hp, wp)` returns what `model.Backbone.features`
returns for the uint8 frame padded to hp × wp, to float rounding, in fewer passes over memory.
Measured at 1280×720 on a 2-core AVX2 CPU, the live backbone's convolutions took 27 ms and the
padding, upsamplings, skip additions, relus and pooled statistics between them 15 ms more: each is
a pass over a frame-sized tensor. Here

- every residual block x + conv(relu(x)) adds its convolution into x inside oneDNN (a binary
  post-op, `mkldnn._convolution_pointwise_`: no separate add pass, no new tensor);
- every skip join d = nearest-×2(u) + e is one native pass that also writes relu(d), which the
  next convolution reads, and at 1/4 scale the Σ|d| that AutoTune's pooled features need
  (engine/csrc/kernels.c, rcd_up_add_relu);
- every downsampling conv2x2/2(relu(e)) is one native pass that applies the relu as it reads e
  (rcd_relu_down: oneDNN has no pre-ops, so torch wrote relu(e) out first);
- the first layer reads the uint8 frame, padding included (rcd_inp), where torch needed a padded
  float copy of the frame;
- the features come back contiguous; the caller copies them into X while it fills X's other
  columns (native.fill), a pass it makes anyway.

Together, alternating frames with the plain forward in one process: 32 against 46 ms per 720p
frame for the live backbone, 70 against 101 at 1080p. The training code, other devices and the
bfloat16 path run `model.Backbone.features`, the reference this path is tested against
(tests/test_engine.py).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import native
from engine.model import Backbone

_conv_add_ok: bool | None = None
_lock = threading.Lock()


def available(bb: Backbone | None = None) -> str:
    """'' when this path can run here (for this backbone, where given), else why not (one line)."""
    if native.library() is None:
        return f"native kernels not used: {native.why_not}"
    if bb is not None and any(c % 8 for c in (bb.inp.out_channels, bb.down1.out_channels, bb.down2.out_channels)):
        return "the backbone's widths are not multiples of 8 (the native kernels' vectors)"
    if not _in_place_conv_add_works():
        return "this torch has no in-place convolution + add (mkldnn._convolution_pointwise_)"
    return ""


def _in_place_conv_add_works() -> bool:
    """Does oneDNN's in-place conv + add exist here and give conv(x) + y? Checked once, on a tiny input:
    the op is internal to torch (its compiler's CPU fusions use it), so a build may lack or change it."""
    global _conv_add_ok
    with _lock:
        if _conv_add_ok is None:
            try:  # a local generator and no nn.Conv2d: the check must not move the global RNG
                g = torch.Generator().manual_seed(0)
                conv = SimpleNamespace(weight=torch.randn(8, 8, 3, 3, generator=g), bias=torch.randn(8, generator=g),
                                       padding=(1, 1), stride=(1, 1), dilation=(1, 1), groups=1)
                x = torch.randn(1, 8, 6, 10, generator=g).contiguous(memory_format=torch.channels_last)
                y = torch.randn(1, 8, 6, 10, generator=g).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    want = y + F.conv2d(x, conv.weight, conv.bias, padding=1)
                    got = _conv_add_(y.clone(), x, conv)
                _conv_add_ok = bool(torch.allclose(got, want, rtol=1e-5, atol=1e-5))
            except (RuntimeError, AttributeError):
                _conv_add_ok = False
        return _conv_add_ok


def _conv_add_(y: torch.Tensor, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """y += conv(x), in place, in one oneDNN call (channels_last float32 on a CPU)."""
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        y, x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", None, None, [], None)


def _chain(stage: nn.ModuleList, x: torch.Tensor, r: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Residual blocks x ← x + conv(relu(x)), in place on x. r = relu(x) where the caller has it.
    Returns x and relu(x) where still known (no block ran), else None."""
    for block in stage:
        _conv_add_(x, F.relu(x) if r is None else r, block.conv)
        r = None
    return x, r


def _relu_down(conv: nn.Conv2d, x: torch.Tensor, threads: int) -> torch.Tensor:
    """conv(relu(x)) for the backbone's 2×2 stride-2 downsampling, in one native pass."""
    assert conv.kernel_size == (2, 2) and conv.stride == (2, 2) and conv.padding == (0, 0)
    return native.relu_down(x, conv.weight, conv.bias, threads)


def features(bb: Backbone, rgb: np.ndarray, hp: int, wp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`bb.features(x)` fused, x being rgb replicate-padded to hp × wp: (1, c1, hp/2, wp/2)
    channels_last contiguous features, (1, c3 + c2) statistics.

    rgb: (h, w, 3) uint8, C-contiguous, read as 0..255 (the Denoiser folds 1/255 into the first
    layer); hp ≥ h and wp ≥ w multiples of 8. Call under no_grad or inference_mode (tensors are
    updated in place). Needs `available(bb) == ''`."""
    threads = torch.get_num_threads()
    e1 = native.first_conv(rgb, hp, wp, bb.inp.weight, bb.inp.bias, threads)  # (1, c1, hp/2, wp/2), signed
    e1, _ = _chain(bb.enc1, e1)
    e2, _ = _chain(bb.enc2, _relu_down(bb.down1, e1, threads))  # (1, c2, hp/4, wp/4)
    e3, _ = _chain(bb.enc3, _relu_down(bb.down2, e2, threads))  # (1, c3, hp/8, wp/8)
    e3 = F.relu(e3)
    # 1/4: the join, the decoder blocks, then relu(d2) for up1 and Σ|d2| for the statistics
    d2, r2, s2 = native.up_add_relu(bb.up2(e3), e2, threads, abs_sum=len(bb.dec2) == 0)
    d2, r2 = _chain(bb.dec2, d2, r2)
    if r2 is None:
        r2, s2 = F.relu(d2), d2.abs().sum(dim=(0, 2, 3), dtype=torch.float64)
    # 1/2: the join, then the decoder blocks (the last one's conv adds into d1 in place)
    d1, r1, _ = native.up_add_relu(bb.up1(r2), e1, threads)
    d1, _ = _chain(bb.dec1, d1, r1)
    pooled = (s2 / (d2.shape[2] * d2.shape[3])).float()[None]  # (1, c2): mean |d2|, as the reference
    feats = torch.cat([e3.mean(dim=(2, 3)), pooled], dim=1)  # (1, c3 + c2)
    return d1, feats
