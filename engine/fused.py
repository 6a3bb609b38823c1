"""The backbone's forward pass on a CPU with its elementwise passes fused (float32 inference only).

Owns nothing but speed: `features(backbone, rgb, hp, wp)` returns what `model.Backbone.features`
returns for the uint8 frame padded to hp × wp, to float rounding, in fewer passes over memory.
Measured at 1280×720 on a 2-core AVX2 CPU, the live backbone's convolutions took 27 ms and the
padding, upsamplings, skip additions, relus and pooled statistics between them 15 ms more: each is
a pass over a frame-sized tensor. Here

- every residual block x + conv(relu(x)) is, in float32 on an AVX2 CPU (on AVX-512 where a timing
  at start finds it faster: denoiser.pick_winograd), one native pass that
  computes the 3×3 convolution by Winograd F(4×4, 3×3) with the relu applied as x is read and the
  residual added as the output is written (rcd_res3x3: 1.5–2.2× oneDNN's direct convolution at the
  live model's widths); elsewhere it adds its convolution into x inside oneDNN (a binary post-op,
  `mkldnn._convolution_pointwise_`: no separate add pass, no new tensor);
- every skip join d = nearest-×2(u) + e is one native pass that also writes relu(d), which the
  next convolution reads, and at 1/4 scale the Σ|d| that AutoTune's pooled features need
  (engine/csrc/kernels.c, rcd_up_add_relu); in float32 the same pass computes u, the 1×1
  convolution of the coarser scale, a row at a time (rcd_conv_up_add_relu), where torch's 1×1
  convolution ran as a separate matrix product writing u out; where residual blocks follow the
  join on the Winograd kernel, the join runs inside the first block's pass instead, row by row just
  ahead of the rows it reads (rcd_join_res3x3: no pass of its own over the frame-sized e);
- every downsampling conv2x2/2(relu(e)) is one native pass that applies the relu as it reads e
  (rcd_relu_down: oneDNN has no pre-ops, so torch wrote relu(e) out first);
- the first layer reads the uint8 frame, padding included (rcd_inp), where torch needed a padded
  float copy of the frame;
- the features come back contiguous; the caller copies them into X while it fills X's other
  columns (native.fill), a pass it makes anyway;
- in float32 the scale tensors e1, e2 and e3 live in buffers of the calling thread's, made once per
  frame size (_scratch): no frame-sized tensor is allocated per frame.

Together, alternating frames with the plain forward in one process: 32 against 46 ms per 720p
frame for the live backbone, 70 against 101 at 1080p (session 21's machine, before the Winograd
blocks; those took it from 30.0 to 23.5 ms at 720p on two threads of a 2-core AVX2 CPU, session 26;
the buffers and the join inside the block from 39.9 to 36.4 ms on one thread, as each of the
player's two lanes runs it, and from 23.2 to 22.5 on two, session 27).

In bfloat16 (CPUs where oneDNN runs it natively: AVX-512-BF16 or AMX) the convolutions are oneDNN's
in bfloat16, the first layer and the downsamplings included (the native ones are float32 only), the
residual adds are the same in-place conv + add, and the skip joins the native join on bfloat16
tensors; what torch's autocast runs adds about fourteen frame-sized passes around the convolutions
(casts of the input, weights and output, upsamplings, adds, relus). The features come back in
bfloat16 and native.fill widens them into X.

The training code, other devices and the plain paths run `model.Backbone.features`, the reference
this path is tested against (tests/test_engine.py).
"""

from __future__ import annotations

import os
import threading
import weakref
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import native
from engine.model import Backbone

DTYPES = (torch.float32, torch.bfloat16)
# How close the in-place conv + add must come to torch's conv and add, per dtype (the check below):
# float32 rounding; in bfloat16 both round the product to 8 bits, in different orders.
CHECK_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-2}

_conv_add_ok: dict[torch.dtype, bool] = {}
_lock = threading.Lock()
# Each convolution's weight and bias in bfloat16, made once per module (_made_once).
_bf16_weights: "weakref.WeakKeyDictionary[nn.Conv2d, tuple]" = weakref.WeakKeyDictionary()
# Each 3×3 convolution's Winograd-transformed weights (native.winograd_weights), kept the same way.
_winograd_weights: "weakref.WeakKeyDictionary[nn.Conv2d, tuple]" = weakref.WeakKeyDictionary()
# Each thread's float32 buffers for the pass's scale tensors (e1, e2, e3), made once per frame size
# and reused (_scratch). Made fresh for every frame, they were most of the player's page faults
# (a fresh 4 KB page costs about 4 µs in a KVM guest: ~530 a frame at 720p with two lanes, nearly
# all of them, by perf's page-fault samples, in these three tensors and relu(e3)): glibc's freed
# blocks did not always fit the next frame's tensors (inferred from the fault counts, not traced).
_scratch_bufs = threading.local()


def available(bb: Backbone | None = None, dtype: torch.dtype = torch.float32) -> str:
    """'' when this path can run here in `dtype` (for this backbone, where given), else why not (one line)."""
    if native.library() is None:
        return f"native kernels not used: {native.why_not}"
    if dtype not in DTYPES:
        return f"no fused path in {str(dtype).replace('torch.', '')}"
    if bb is not None and any(c % 8 for c in (bb.inp.out_channels, bb.down1.out_channels, bb.down2.out_channels)):
        return "the backbone's widths are not multiples of 8 (the native kernels' vectors)"
    if not _in_place_conv_add_works(dtype):
        return f"this torch has no in-place convolution + add in {str(dtype).replace('torch.', '')} (mkldnn._convolution_pointwise_)"
    return ""


def _in_place_conv_add_works(dtype: torch.dtype = torch.float32) -> bool:
    """Does oneDNN's in-place conv + add exist here for `dtype` and give conv(x) + y? Checked once per
    dtype, on a tiny input: the op is internal to torch (its compiler's CPU fusions use it), so a
    build may lack or change it."""
    with _lock:
        if dtype not in _conv_add_ok:
            try:  # a local generator and no nn.Conv2d: the check must not move the global RNG
                g = torch.Generator().manual_seed(0)
                conv = SimpleNamespace(weight=torch.randn(8, 8, 3, 3, generator=g), bias=torch.randn(8, generator=g),
                                       padding=(1, 1), stride=(1, 1), dilation=(1, 1), groups=1)
                x = torch.randn(1, 8, 6, 10, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
                y = torch.randn(1, 8, 6, 10, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():  # the reference in float32 on the same (rounded) numbers
                    w, b = (t.float() for t in _weights(conv, dtype))
                    want = y.float() + F.conv2d(x.float(), w, b, padding=1)
                    got = _conv_add_(y.clone(), x, conv).float()
                tol = CHECK_TOLERANCE[dtype]
                _conv_add_ok[dtype] = bool(torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max())))
            except (RuntimeError, AttributeError):
                _conv_add_ok[dtype] = False
        return _conv_add_ok[dtype]


def winograd_possible(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the residual blocks can run on the native Winograd kernel (native.res3x3_) in `dtype`:
    in float32 with the native kernels, unless RCD_NATIVE_WINOGRAD=0."""
    return dtype == torch.float32 and native.library() is not None and os.environ.get(native.ENV_WINOGRAD, "1") != "0"


def winograd(dtype: torch.dtype = torch.float32) -> bool:
    """The default of `features`: Winograd blocks where possible and the kernels run AVX2, the CPUs it
    was measured on against oneDNN's convolutions (1.5–2.2×). Where they run AVX-512, oneDNN's
    AVX-512 convolutions are the default; the Denoiser times both there (denoiser.pick_winograd)."""
    return winograd_possible(dtype) and native.vector_isa() == "AVX2"


def _made_once(cache: weakref.WeakKeyDictionary, conv: nn.Conv2d, make):
    """make(conv), kept in `cache` for the module and made again should its weights change (their
    version counters are part of the entry)."""
    version = (conv.weight._version, conv.bias._version)
    entry = cache.get(conv)
    if entry is None or entry[0] != version:
        entry = (version, make(conv))
        cache[conv] = entry
    return entry[1]


def _winograd_u(conv: nn.Conv2d) -> torch.Tensor:
    """native.winograd_weights of the convolution, made once."""
    return _made_once(_winograd_weights, conv, lambda c: native.winograd_weights(c.weight))


def _weights(conv, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution's (weight, bias) in `dtype`: its own in float32, a cached copy in bfloat16."""
    if dtype == torch.float32:
        return conv.weight, conv.bias
    if isinstance(conv, SimpleNamespace):  # the check's stand-in: not cached
        return conv.weight.to(dtype), conv.bias.to(dtype)
    return _made_once(_bf16_weights, conv, lambda c: (c.weight.detach().to(dtype), c.bias.detach().to(dtype)))


def _conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(x) in x's dtype (oneDNN on a channels_last CPU tensor)."""
    w, b = _weights(conv, x.dtype)
    return F.conv2d(x, w, b, conv.stride, conv.padding)


def _conv_add_(y: torch.Tensor, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """y += conv(x), in place, in one oneDNN call (channels_last float32 or bfloat16 on a CPU)."""
    w, b = _weights(conv, y.dtype)
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        y, x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", None, None, [], None)


def _relu(x: torch.Tensor) -> torch.Tensor:
    """relu(x). In bfloat16 on the bits as int16: a bfloat16 is negative exactly where its sign bit,
    the int16's, is set, so the result is the same (-0 becomes +0), and torch's int16 max runs
    natively where its bfloat16 relu converts to float32 and back (720p live, 1/2 scale, one
    thread: 0.55–0.61 against 0.88–0.94 ms)."""
    if x.dtype == torch.bfloat16:
        return F.relu(x.view(torch.int16)).view(torch.bfloat16)
    return F.relu(x)


def _chain(stage: nn.ModuleList, x: torch.Tensor, r: torch.Tensor | None = None,
           wino: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Residual blocks x ← x + conv(relu(x)), in place on x: on the Winograd kernel with `wino` (it
    applies the relu itself), else oneDNN's, reading r = relu(x) where the caller has it. Returns x
    and relu(x) where still known (no block ran), else None."""
    if stage and wino:
        threads = torch.get_num_threads()
        for block in stage:
            native.res3x3_(x, _winograd_u(block.conv), block.conv.bias, threads)
        return x, None
    for block in stage:
        _conv_add_(x, _relu(x) if r is None else r, block.conv)
        r = None
    return x, r


def _relu_(x: torch.Tensor) -> torch.Tensor:
    """relu(x) in place (bfloat16 on the bits as int16, as _relu)."""
    (x.view(torch.int16) if x.dtype == torch.bfloat16 else x).relu_()
    return x


def _scratch(name: str, c: int, h: int, w: int) -> torch.Tensor:
    """This thread's float32 (1, c, h, w) channels_last buffer `name`: valid until the thread's next
    pass (the caller copies the features out before it infers again: engine/denoiser.py)."""
    bufs = _scratch_bufs.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or tuple(buf.shape) != (1, c, h, w):
        bufs[name] = None  # the old size's memory goes before the new is made
        buf = bufs[name] = torch.empty(1, c, h, w, memory_format=torch.channels_last)
    return buf


def _relu_down(conv: nn.Conv2d, x: torch.Tensor, threads: int, name: str) -> torch.Tensor:
    """conv(relu(x)) for the backbone's 2×2 stride-2 downsampling: one native pass in float32 into
    this thread's buffer `name`, a relu and oneDNN's convolution in bfloat16."""
    assert conv.kernel_size == (2, 2) and conv.stride == (2, 2) and conv.padding == (0, 0)
    if x.dtype == torch.float32:
        out = _scratch(name, conv.out_channels, x.shape[2] // 2, x.shape[3] // 2)
        return native.relu_down(x, conv.weight, conv.bias, threads, out=out)
    return _conv(_relu(x), conv)


def _first_layer(conv: nn.Conv2d, rgb: np.ndarray, hp: int, wp: int, dtype: torch.dtype, threads: int) -> torch.Tensor:
    """The first layer on rgb replicate-padded to hp × wp: (1, c1, hp/2, wp/2) channels_last. float32:
    the native layer reads the uint8 frame itself; bfloat16: the frame converted (0..255 are exact in
    bfloat16) and padded in one buffer, then oneDNN's convolution."""
    if dtype == torch.float32:
        out = _scratch("e1", conv.out_channels, hp // 2, wp // 2)
        return native.first_conv(rgb, hp, wp, conv.weight, conv.bias, threads, out=out)
    h, w = rgb.shape[:2]
    frame = torch.empty(hp, wp, 3, dtype=dtype)  # (hp, wp, 3), 0..255
    frame[:h, :w].copy_(torch.from_numpy(rgb))
    if wp > w:
        frame[:h, w:] = frame[:h, w - 1 : w]
    if hp > h:
        frame[h:] = frame[h - 1 : h]
    return _conv(frame.permute(2, 0, 1)[None], conv)  # the permuted view is channels_last


def _up_join(conv: nn.Conv2d, x: torch.Tensor, e: torch.Tensor, threads: int, abs_sum: bool = False,
             relu: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The skip join d = nearest-×2(conv1×1(x)) + e: d, relu(d) and, with abs_sum, Σ|d| per channel.
    float32: one native pass that computes the 1×1 convolution a row at a time (x may be signed: the
    relu is applied as it is read), relu(d) only where asked for; bfloat16: oneDNN's convolution of x
    (a relu's output), then the join. d is written over e, which nothing reads after its join: no
    frame-sized tensor is made (at 720p with two lanes, new join outputs took 42 % of the player's
    page faults)."""
    if e.dtype == torch.float32:
        return native.conv_up_add_relu(x, conv.weight, conv.bias, e, threads, abs_sum=abs_sum, relu=relu, in_place=True)
    return native.up_add_relu(_conv(x, conv), e, threads, abs_sum=abs_sum, in_place=True)


def _join_into_blocks(conv: nn.Conv2d, x: torch.Tensor, e: torch.Tensor, stage: nn.ModuleList,
                      threads: int) -> torch.Tensor:
    """The skip join d = nearest-×2(conv1×1(relu(x))) + e, then the residual blocks of `stage` on the
    Winograd kernel, all in place on e: the join runs inside the first block's pass, row by row just
    ahead of the rows the block reads (native.res3x3_ with join), instead of as a pass of its own over
    the frame-sized e (the live model's join at 1/2 scale and its block, 720p: 16.3 → 14.7 ms on one
    thread, 10.3 → 9.3 on two)."""
    first = stage[0].conv
    native.res3x3_(e, _winograd_u(first), first.bias, threads, join=(x, conv.weight, conv.bias))
    d, _ = _chain(stage[1:], e, wino=True)
    return d


def features(bb: Backbone, rgb: np.ndarray, hp: int, wp: int, dtype: torch.dtype = torch.float32,
             wino: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`bb.features(x)` fused, x being rgb replicate-padded to hp × wp: (1, c1, hp/2, wp/2)
    channels_last contiguous features in `dtype`, (1, c3 + c2) float32 statistics. In float32 the
    features are this thread's buffer (_scratch), overwritten by its next call.

    rgb: (h, w, 3) uint8, C-contiguous, read as 0..255 (the Denoiser folds 1/255 into the first
    layer); hp ≥ h and wp ≥ w multiples of 8; dtype float32 or bfloat16. Call under no_grad or
    inference_mode (tensors are updated in place). Needs `available(bb, dtype) == ''`. wino: the
    residual blocks on the Winograd kernel (where winograd_possible), None for `winograd(dtype)`."""
    threads = torch.get_num_threads()
    # On the Winograd kernel the blocks apply the relu as they read: the joins write no relu(d).
    wino = winograd(dtype) if wino is None else (wino and winograd_possible(dtype))
    e1 = _first_layer(bb.inp, rgb, hp, wp, dtype, threads)  # (1, c1, hp/2, wp/2), signed
    e1, _ = _chain(bb.enc1, e1, wino=wino)
    e2, _ = _chain(bb.enc2, _relu_down(bb.down1, e1, threads, "e2"), wino=wino)  # (1, c2, hp/4, wp/4)
    e3, _ = _chain(bb.enc3, _relu_down(bb.down2, e2, threads, "e3"), wino=wino)  # (1, c3, hp/8, wp/8)
    e3 = _relu_(e3)
    # 1/4: the join, the decoder blocks, then relu(d2) for up1 and Σ|d2| for the statistics. The
    # float32 join at 1/2 applies the relu as it reads d2, so there relu(d2) is made only for a block
    # on oneDNN.
    fp32, blocks = dtype == torch.float32, len(bb.dec2) > 0
    if blocks and wino:
        d2 = _join_into_blocks(bb.up2, e3, e2, bb.dec2, threads)
    else:
        d2, r2, s2 = _up_join(bb.up2, e3, e2, threads, abs_sum=not blocks,
                              relu=(blocks and not wino) or not fp32)
        if blocks:
            d2, _ = _chain(bb.dec2, d2, r2, wino=wino)
    if blocks:
        r2, s2 = None, d2.abs().sum(dim=(0, 2, 3), dtype=torch.float64)
    # 1/2: the join, then the decoder blocks (the last one's conv adds into d1 in place)
    if bb.dec1 and wino:
        d1 = _join_into_blocks(bb.up1, d2, e1, bb.dec1, threads)
    else:
        d1, r1, _ = _up_join(bb.up1, d2 if fp32 else (_relu(d2) if r2 is None else r2), e1, threads,
                             relu=not wino)
        d1, _ = _chain(bb.dec1, d1, r1, wino=wino)
    pooled = (s2 / (d2.shape[2] * d2.shape[3])).float()[None]  # (1, c2): mean |d2|, as the reference
    feats = torch.cat([e3.mean(dim=(2, 3), dtype=torch.float32), pooled], dim=1)  # (1, c3 + c2)
    return d1, feats
