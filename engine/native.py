"""Native CPU kernels (engine/csrc/*.c), built on first use with the system C compiler.

Owns finding a compiler, building the shared library into a per-user cache, loading it with
ctypes and saying, in one line, why it is not used where it is not. Nothing here is required: on
a machine without a C compiler, without AVX2 or with RCD_NATIVE=0 in the environment, every
caller takes its torch path, which computes the same numbers more slowly.

The kernels (engine/csrc/kernels.c says more), each one pass over a frame where torch needs
several: `blend` (a 1×1 product, clamp, uint8 conversion and depth-to-space: torch's three passes
moved 4× the bytes the blend must) and `fill` (X's [1 | noisy] columns, the noise estimate's
histogram and the statistics ND and AutoTune read); and for the backbone's fused forward
(engine/fused.py) `up_add_relu`, its skip joins (upsample, add, relu and a pooled statistic: five
torch passes; `conv_up_add_relu` with the 1×1 convolution before the upsampling), and
`relu_down`, its 2×2 stride-2 downsampling with the relu applied on reading.
The blend, the fill's statistics, `relu_down`, `first_conv` and `up_add_relu` also have AVX-512
versions, used where the CPU has it (`isa()`, `set_isa()`; the same bytes either way), and the
statistics an AMX version for bfloat16 features (the same within float32 rounding). And from
engine/csrc/heads.c the per-frame algebra after those passes, `gram_cov` and `Heads` (Router, ND
and AutoTune), which NumPy ran in about 150 calls of ~10 µs each. And from engine/csrc/view.c
`absdiff4`, the player's difference view in one pass instead of six, and `tonemap`, the
display's picture of an HDR or wide-gamut frame; from engine/csrc/yuv.c
`yuv_rgb`, the decoder's conversion of the YUV formats swscale converts slowly (4:4:4, > 8 bits),
and `yuv_rgb_float`, the same unrounded (renders that keep a deeper source's bits).
Why at run time: the product installs as pure Python; a build step in `pip install` would make a
compiler a hard requirement.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

SOURCES = tuple(Path(__file__).with_name("csrc") / name for name in ("kernels.c", "heads.c", "view.c", "yuv.c"))
LIBRARY_STEM = "kernels"  # the built library: kernels-<hash of the sources and flags>.so
# -mavx2 -mfma -mf16c rather than -march=native: the cached library then runs on every AVX2 CPU
# (all of which have FMA and F16C), and the kernels are written in those intrinsics anyway.
CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-fPIC", "-shared"]
COMPILE_TIMEOUT_S = 60
# Builds of other versions of the sources kept in the cache beside a new one (the most recently
# used): two checkouts or installs used in turn deleted each other's library when a build removed
# every other one, and each start rebuilt it (a test of one-line errors failed on the notice).
KEEP_BUILDS = 3
ENV_SWITCH = "RCD_NATIVE"  # "0" turns the kernels off (the torch path runs)
# "0" keeps the kernels that have an AVX-512 version (the blend) on their AVX2 version; both give the
# same bytes, so this only changes speed (and lets the tests compare the two on one machine).
ENV_AVX512 = "RCD_NATIVE_AVX512"
# "0" keeps the fill's statistics off the AMX tiles (the AVX-512 ones: the same statistics within
# float32 rounding, summed in another order).
ENV_AMX = "RCD_NATIVE_AMX"
# "0" runs the float32 backbone's 3×3 residual blocks on oneDNN instead of the native Winograd kernel
# (res3x3_): the same features within float32 rounding, for comparisons.
ENV_WINOGRAD = "RCD_NATIVE_WINOGRAD"
ISA_NAMES = {2: "AVX2", 3: "AVX-512", 4: "AVX-512+AMX"}
ISA_LEVELS = {"AVX2": 2, "AVX-512": 3, "best": 4}
AMX_WIDTHS = (16, 32)  # feature widths c1 the tile statistics handle (kernels.c, gram_line_amx)

_lib: ctypes.CDLL | None = None
_tried = False
_lock = threading.Lock()  # one build per process, whichever thread asks first
why_not = ""  # one line: why the kernels are not in use (empty when they are, or not yet tried)


def _cache_dirs() -> list[Path]:
    """Where the built library may live: the user's cache, else a per-user temporary folder."""
    dirs = []
    try:
        dirs.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rcd-player")
    except RuntimeError:  # no home directory to be found
        pass
    dirs.append(Path(tempfile.gettempdir()) / f"rcd-player-{os.getuid()}")
    return dirs


def _cpu_supported() -> str:
    """'' if this machine runs the kernels, else the reason."""
    if os.name != "posix":
        return f"built on POSIX systems only (this is {os.name})"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # an old torch: trust the compiler's check of the flags below
        return ""
    return "" if cap.upper().startswith(("AVX2", "AVX512")) else f"the CPU has no AVX2 (torch reports {cap})"


def _build(dest: Path) -> str:
    """Compile the sources into dest atomically (parallel processes may race); '' or the reason it failed."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return "no C compiler (cc, gcc or clang) on PATH"
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=dest.parent)
    os.close(fd)
    try:
        run = subprocess.run([cc, *CFLAGS, *map(str, SOURCES), "-o", tmp, "-lm"], capture_output=True, text=True,
                             timeout=COMPILE_TIMEOUT_S)
        if run.returncode != 0:
            first = (run.stderr.strip().splitlines() or ["no message"])[0]
            return f"{Path(cc).name} failed on engine/csrc: {first}"
        os.replace(tmp, dest)
        _prune(dest)
        return ""
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"building engine/csrc failed: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prune(keep: Path) -> None:
    """Delete the builds of other versions of the sources in keep's folder but the KEEP_BUILDS most
    recently used (loading one touches it)."""
    def used(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # deleted meanwhile by another process
            return 0.0

    others = sorted((p for p in keep.parent.glob(f"{LIBRARY_STEM}-*.so") if p != keep), key=used, reverse=True)
    for old in others[KEEP_BUILDS:]:
        old.unlink(missing_ok=True)


def _library_name() -> str | None:
    """The built library's file name for the current source and flags (None if unreadable)."""
    try:
        code = b"".join(src.read_bytes() for src in SOURCES)
    except OSError:
        return None
    return f"{LIBRARY_STEM}-{hashlib.sha256(code + ' '.join(CFLAGS).encode()).hexdigest()[:16]}.so"


def will_build() -> bool:
    """Whether the next `library()` call will compile the kernels (seconds, once per source
    version): not tried yet in this process, not turned off, a supported CPU and nothing cached."""
    if _tried or os.environ.get(ENV_SWITCH, "1") == "0" or _cpu_supported():
        return False
    name = _library_name()
    return name is not None and not any((folder / name).exists() for folder in _cache_dirs())


def library() -> ctypes.CDLL | None:
    """The loaded kernels, building them on the first call; None (and `why_not` set) where unavailable."""
    global _tried
    with _lock:
        if not _tried:
            _tried = True
            _load()
        return _lib


def _load() -> None:
    global _lib, why_not
    if os.environ.get(ENV_SWITCH, "1") == "0":
        why_not = f"turned off by {ENV_SWITCH}=0"
        return
    why_not = _cpu_supported()
    if why_not:
        return
    name = _library_name()
    if name is None:
        why_not = f"cannot read {SOURCES[0].parent}"
        return
    for folder in _cache_dirs():
        path = folder / name
        if not path.exists():
            try:
                why_not = _build(path)
            except OSError as e:  # the cache folder cannot be made or written: try the next one
                why_not = f"cannot write {folder}: {e.strerror}"
            if why_not:
                continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            why_not = f"cannot load {path}: {e}"
            continue
        try:
            os.utime(path)  # used now: _prune keeps the most recently used builds
        except OSError:
            pass
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.rcd_blend.argtypes = [p, i64, i64, i64, p, p, i64, i64, ctypes.c_int]
        lib.rcd_blend.restype = ctypes.c_int
        lib.rcd_blend_f16.argtypes = lib.rcd_blend.argtypes
        lib.rcd_blend_f16.restype = ctypes.c_int
        for f in (lib.rcd_blend_float, lib.rcd_blend_f16_float):
            f.argtypes, f.restype = lib.rcd_blend.argtypes, ctypes.c_int
        lib.rcd_fill.argtypes = [p, i64, i64, p, p, i64, i64, i64, i64, i64, p, p, ctypes.c_int, p, p, p, i64, p, p,
                                 ctypes.c_int]
        lib.rcd_fill.restype = ctypes.c_int
        lib.rcd_up_add_relu.argtypes = [p, p, p, p, i64, i64, i64, p, ctypes.c_int]
        lib.rcd_up_add_relu.restype = ctypes.c_int
        lib.rcd_up_add_relu_bf16.argtypes = lib.rcd_up_add_relu.argtypes
        lib.rcd_up_add_relu_bf16.restype = ctypes.c_int
        lib.rcd_conv_up_add_relu.argtypes = [p, i64, p, p, p, p, p, i64, i64, i64, p, ctypes.c_int]
        lib.rcd_conv_up_add_relu.restype = ctypes.c_int
        lib.rcd_relu_down.argtypes = [p, i64, i64, i64, p, p, i64, p, ctypes.c_int]
        lib.rcd_relu_down.restype = ctypes.c_int
        lib.rcd_inp.argtypes = [p, i64, i64, i64, i64, p, p, i64, p, ctypes.c_int]
        lib.rcd_inp.restype = ctypes.c_int
        lib.rcd_res3x3.argtypes = [p, i64, i64, i64, p, p, ctypes.c_int]
        lib.rcd_res3x3.restype = ctypes.c_int
        lib.rcd_join_res3x3.argtypes = [p, i64, i64, i64, p, p, p, i64, p, p, ctypes.c_int]
        lib.rcd_join_res3x3.restype = ctypes.c_int
        lib.rcd_gram_cov.argtypes = [p, i64, i64, p, i64, ctypes.c_double, ctypes.c_double, p]
        lib.rcd_gram_cov.restype = ctypes.c_int
        lib.rcd_heads.argtypes = [ctypes.POINTER(_HeadsParams), p, p, ctypes.c_double, p, p]
        lib.rcd_heads.restype = ctypes.c_int
        lib.rcd_absdiff4.argtypes = [p, i64, p, i64, p, i64, i64]
        lib.rcd_absdiff4.restype = ctypes.c_int
        lib.rcd_tonemap.argtypes = [p, i64, p, p, p, i64, i64, p, p, p, i64, p, p, i64, ctypes.c_float, p, i64]
        lib.rcd_tonemap.restype = ctypes.c_int
        lib.rcd_yuv_rgb.argtypes = [p, i64, p, i64, p, i64, i64, i64, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_int, ctypes.c_int, p, p]
        lib.rcd_yuv_rgb.restype = ctypes.c_int
        lib.rcd_yuv_rgbf.argtypes = [p, i64, p, i64, p, i64, i64, i64, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                     ctypes.c_int, p, p, p]
        lib.rcd_yuv_rgbf.restype = ctypes.c_int
        lib.rcd_put_noisy_f.argtypes = [p, i64, i64, p, i64, i64, i64, i64, ctypes.c_int]
        lib.rcd_put_noisy_f.restype = ctypes.c_int
        lib.rcd_rgbf_yuv.argtypes = [p, i64, i64, p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                     ctypes.c_float, p, i64, p, i64, p, i64, ctypes.c_int]
        lib.rcd_rgbf_yuv.restype = ctypes.c_int
        lib.rcd_luma.argtypes = [p, i64, p]
        lib.rcd_luma.restype = ctypes.c_int
        lib.rcd_set_isa.argtypes = [ctypes.c_int]
        lib.rcd_set_isa.restype = ctypes.c_int
        avx512, amx = (os.environ.get(name, "1") != "0" for name in (ENV_AVX512, ENV_AMX))
        lib.rcd_set_isa(ISA_LEVELS["best" if avx512 and amx else "AVX-512" if avx512 else "AVX2"])
        _lib, why_not = lib, ""
        return


def isa() -> str:
    """The instruction set of the kernels that have two versions ("AVX-512", "AVX2", or
    "AVX-512+AMX" where the fill's statistics also use the tiles); '' without the kernels."""
    lib = library()
    return "" if lib is None else ISA_NAMES[lib.rcd_set_isa(-1)]


def vector_isa() -> str:
    """The vector instructions of the kernels that have two versions ("AVX-512" or "AVX2"; the
    blend's, for one); '' without the kernels."""
    return isa().removesuffix("+AMX")


def stats_on_tiles(c1: int, features: torch.dtype) -> bool:
    """Whether `fill` computes its statistics on the AMX tiles for features of this width and type:
    on a CPU with AMX (and the level not lowered), bfloat16 features of a width in AMX_WIDTHS."""
    return isa().endswith("+AMX") and features == torch.bfloat16 and c1 in AMX_WIDTHS


def set_isa(name: str) -> str:
    """"AVX2", "AVX-512" (at most) or "best" (what this CPU has), for the kernels with two versions;
    returns the one now in use. For tests and benchmarks: not while a kernel runs."""
    lib = library()
    assert lib is not None, why_not
    return ISA_NAMES[lib.rcd_set_isa(ISA_LEVELS[name])]


def blend(x: torch.Tensor, wp2: int, c1: int, wm: torch.Tensor, out: np.ndarray, threads: int) -> None:
    """out (h, w, 3) uint8 ← clamp(X[noisy] + X[d]·W + b) with depth-to-space, in one pass; or
    float32 out, unrounded (renders that keep a deeper source's bits).

    x: (h2·wp2, c1 + 13) float32 or float16 (compact bases), contiguous, CPU; wm: (c1 + 1, 16)
    float32 contiguous ([W; b], b with the +0.5 for rounding a uint8 out, without it for float32);
    out: C-contiguous, written in full."""
    lib = library()
    assert lib is not None, why_not
    assert x.dtype in (torch.float32, torch.float16) and x.is_contiguous() and x.device.type == "cpu"
    assert wm.dtype == torch.float32 and wm.is_contiguous() and tuple(wm.shape) == (c1 + 1, 16)
    assert out.dtype in (np.uint8, np.float32) and out.flags.c_contiguous and out.ndim == 3 and out.shape[2] == 3
    h, w = out.shape[:2]
    assert x.shape[0] >= ((h + 1) // 2) * wp2, "X has fewer rows than the frame needs"
    if out.dtype == np.float32:
        kernel = lib.rcd_blend_float if x.dtype == torch.float32 else lib.rcd_blend_f16_float
    else:
        kernel = lib.rcd_blend if x.dtype == torch.float32 else lib.rcd_blend_f16
    rc = kernel(x.data_ptr(), wp2, x.shape[1], c1, wm.data_ptr(), out.ctypes.data, h, w, threads)
    if rc != 0:
        raise ValueError(f"native blend refused its arguments: X {tuple(x.shape)}, c1 {c1}, frame {h}×{w}")


def _x_and_frame(x: torch.Tensor, frame: np.ndarray, dtype, hp: int, wp: int) -> tuple[int, int]:
    """(H, W) of a frame that fills X's noisy columns, both checked: X float32 contiguous on the CPU
    with the padded frame's half-pixels, the frame (H, W, 3) of dtype, C-contiguous."""
    assert x.dtype == torch.float32 and x.is_contiguous() and x.device.type == "cpu"
    assert frame.dtype == dtype and frame.flags.c_contiguous and frame.ndim == 3 and frame.shape[2] == 3
    assert x.shape[0] >= (hp // 2) * (wp // 2), "X has fewer rows than the padded frame"
    return frame.shape[0], frame.shape[1]


def put_noisy(x: torch.Tensor, c1: int, fine: np.ndarray, hp: int, wp: int, threads: int) -> None:
    """X's columns c1.. ← [1 | the 2×2 pixels of each half-pixel] from a float32 frame (H, W, 3) in
    8-bit units, replicate-padded to hp × wp (fill's layout, for a render's unrounded frames)."""
    lib = library()
    assert lib is not None, why_not
    h, w = _x_and_frame(x, fine, np.float32, hp, wp)
    if lib.rcd_put_noisy_f(x.data_ptr(), x.shape[1], c1, fine.ctypes.data, h, w, hp, wp, threads):
        raise ValueError(f"native put_noisy refused its arguments: X {tuple(x.shape)}, c1 {c1}, frame {h}×{w}")


def absdiff4(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """min(4·|a − b|, 255) of two uint8 (H, W, 3) frames (views with strided rows too) as a new
    contiguous array in one pass; None where the kernels are not in use or the layout does not fit."""
    lib = library()
    if (lib is None or a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim != 3
            or any(x.strides[1:] != (x.shape[2], 1) for x in (a, b))):
        return None
    h, w, c = a.shape
    out = np.empty((h, w, c), np.uint8)
    lib.rcd_absdiff4(a.ctypes.data, a.strides[0], b.ctypes.data, b.strides[0], out.ctypes.data, h, w * c)
    return out


def tonemap(rgb: np.ndarray, out: np.ndarray, lin: np.ndarray, ky: np.ndarray, ootf: np.ndarray | None,
            m: np.ndarray, tone: np.ndarray, tone_max: float, enc: np.ndarray,
            rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray | None:
    """out ← the display's picture of rgb, uint8 (H, W, 3) (rows may be strided; out contiguous),
    or of its pixels at `rows` × `cols` (int32, in range: a nearest-neighbour downscale picked as
    it is mapped), through player/tonemap.py's DisplayMap tables (float32 lin (256,), ky (3,), ootf
    (no + 1,) or None, m (9,), tone (nt + 1,); uint8 enc (ne,)) as engine/csrc/view.c says; None
    where the kernels are not in use or the layout does not fit."""
    lib = library()
    if lib is None or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.strides[1:] != (3, 1) or rgb.shape[2] != 3:
        return None
    h, w = rgb.shape[:2]
    picks = []
    for n, idx in ((h, rows), (w, cols)):
        if idx is not None:
            assert idx.dtype == np.int32 and idx.flags.c_contiguous and idx.ndim == 1 and (len(idx) == 0 or 0 <= idx.min() and idx.max() < n)
        picks.append(n if idx is None else len(idx))
    h, w = picks
    assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    tables = (lin, ky, m, tone) + (() if ootf is None else (ootf,))
    assert all(t.dtype == np.float32 and t.flags.c_contiguous for t in tables) and enc.dtype == np.uint8
    if lib.rcd_tonemap(rgb.ctypes.data, rgb.strides[0], None if rows is None else rows.ctypes.data,
                       None if cols is None else cols.ctypes.data, out.ctypes.data, h, w, lin.ctypes.data, ky.ctypes.data,
                       None if ootf is None else ootf.ctypes.data, 0 if ootf is None else len(ootf) - 1,
                       m.ctypes.data, tone.ctypes.data, len(tone) - 1, tone_max, enc.ctypes.data, len(enc)):
        raise ValueError(f"native tone mapping refused its tables (tone {len(tone)}, enc {len(enc)}, peak {tone_max})")
    return out


def yuv_rgb_float(y: np.ndarray, u: np.ndarray, v: np.ndarray, k: np.ndarray,
                  rounded: np.ndarray | None = None) -> np.ndarray | None:
    """yuv_rgb unrounded: float32 (H, W, 3) in 8-bit units, clamped to 0..255, of planar or
    semi-planar YUV (not packed); np.rint of it is yuv_rgb's frame, which `rounded` (uint8 (H, W, 3),
    C-contiguous) receives in the same pass. None where the kernels are not in use."""
    lib = library()
    if lib is None:
        return None
    h, w, xshift, yshift, ystep, cstep = _yuv_layout(y, u, v, k)
    assert ystep == 1, "packed YUV has no unrounded conversion"
    out = np.empty((h, w, 3), np.float32)
    if rounded is not None:
        assert rounded.dtype == np.uint8 and rounded.shape == (h, w, 3) and rounded.flags.c_contiguous
    if lib.rcd_yuv_rgbf(y.ctypes.data, y.strides[0], u.ctypes.data, u.strides[0], v.ctypes.data, v.strides[0], h, w,
                        xshift, yshift, 8 * y.itemsize, cstep, k.ctypes.data, out.ctypes.data,
                        None if rounded is None else rounded.ctypes.data):
        raise ValueError(f"native YUV conversion refused a {w}×{h} frame with chroma {u.shape[1]}×{u.shape[0]} (step {cstep})")
    return out


def _yuv_layout(y: np.ndarray, u: np.ndarray, v: np.ndarray, k: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """(h, w, xshift, yshift, ystep, cstep) of yuv_rgb's planes, checked."""
    h, w = y.shape
    ch, cw = u.shape
    xshift, yshift = int(cw < w), int(ch < h)
    assert u.shape == v.shape and (cw, ch) == (-(-w // (1 + xshift)), -(-h // (1 + yshift))), (y.shape, u.shape)
    assert y.dtype == u.dtype == v.dtype and y.dtype in (np.uint8, np.uint16) and k.dtype == np.float32
    ystep, cstep = y.strides[1] // y.itemsize, u.strides[1] // u.itemsize  # 1: a plane of its own; 2, 4: interleaved
    assert u.strides == v.strides and (ystep, cstep) in ((1, 1), (1, 2), (2, 4)) and k.shape == (8,)
    return h, w, xshift, yshift, ystep, cstep


def rgb_float_yuv(rgb: np.ndarray, k: np.ndarray, sub: tuple[int, int], top: int, shift: int,
                  y: np.ndarray, u: np.ndarray, v: np.ndarray) -> bool:
    """y, u, v ← float32 (H, W, 3) RGB in 8-bit units as YUV samples (engine/csrc/yuv.c, rcd_rgbf_yuv,
    k its float32 (10,)): views of a frame's planes as colour._plane_views makes them, uint8 or
    uint16, chroma subsampled by sub (rows, columns), planar or a semi-planar plane's halves. False
    where the kernels are not in use."""
    lib = library()
    if lib is None:
        return False
    h, w = y.shape
    assert rgb.dtype == np.float32 and rgb.flags.c_contiguous and rgb.shape == (h, w, 3) and k.dtype == np.float32
    assert y.dtype == u.dtype == v.dtype and y.strides[1] == y.itemsize and u.strides == v.strides
    cstep = u.strides[1] // u.itemsize
    if lib.rcd_rgbf_yuv(rgb.ctypes.data, h, w, k.ctypes.data, sub[0], sub[1], y.itemsize, shift, float(top),
                        y.ctypes.data, y.strides[0], u.ctypes.data, u.strides[0], v.ctypes.data, v.strides[0], cstep):
        raise ValueError(f"native RGB → YUV conversion refused a {w}×{h} frame (chroma {sub}, step {cstep})")
    return True


def yuv_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """The uint8 (H, W, 3) RGB frame of YUV: y (H, W), u and v (H, W) or subsampled by 2 in either
    direction (⌈H/2⌉, ⌈W/2⌉ …), all uint8 or all uint16 (samples wider than 8 bits, whatever their bit
    depth: the coefficients carry the scale), rows may be strided; u and v are planes of their own,
    or the two halves of one semi-planar plane's pairs (NV12's plane[:, 0::2] and [:, 1::2]), or all
    three views of one packed 8-bit 4:2:2 plane (YUYV's [:, 0::2], [:, 1::4], [:, 3::4]). k: float32
    (8,) as engine/csrc/yuv.c takes them (player/colour.py makes them). None where the kernels are
    not in use."""
    lib = library()
    if lib is None:
        return None
    h, w, xshift, yshift, ystep, cstep = _yuv_layout(y, u, v, k)
    out = np.empty((h, w, 3), np.uint8)
    depth = 8 * y.itemsize
    if lib.rcd_yuv_rgb(y.ctypes.data, y.strides[0], u.ctypes.data, u.strides[0], v.ctypes.data, v.strides[0], h, w,
                       xshift, yshift, depth, ystep, cstep, k.ctypes.data, out.ctypes.data):
        raise ValueError(f"native YUV conversion refused a {w}×{h} frame with chroma {u.shape[1]}×{u.shape[0]} (step {cstep})")
    return out


def luma(rgb: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out ← the luma frame of rgb (both uint8 (H, W, 3), C-contiguous): R = G = B = BT.601 luma in
    16-bit fixed point (engine/denoiser.py, luma_frame, whose NumPy path gives the same bytes)."""
    lib = library()
    assert lib is not None, why_not
    assert rgb.dtype == out.dtype == np.uint8 and rgb.shape == out.shape and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous and out.flags.c_contiguous
    lib.rcd_luma(rgb.ctypes.data, rgb.shape[0] * rgb.shape[1], out.ctypes.data)
    return out


class Gram(NamedTuple):
    """A frame's statistics, float64 over its half-pixels (padding excluded): [d | 1]ᵀ·X (c1 + 1, k)
    and Σ X² per column (k,)."""

    g: torch.Tensor
    sq: torch.Tensor
    seconds: float = 0.0  # the time spent on them (inside `fill`: the slowest thread's share, and the rest)
    cov: np.ndarray | None = None  # with `fill(head=...)`: gram_cov's covariance, computed in the same call


def fill(x: torch.Tensor, c1: int, rgb: np.ndarray, hp: int, wp: int, step: int, threads: int,
         d: torch.Tensor | None = None, gram: bool = False,
         head: np.ndarray | None = None, store: np.ndarray | None = None) -> tuple[np.ndarray, Gram | None]:
    """X's columns c1.. ← [1 | the 2×2 pixels of each half-pixel] from the uint8 frame (replicate-
    padded to hp × wp). Returns the histogram (511,) int64 of 2·|diagonal detail| of the green plane
    over the 2×2 blocks on the `step` grid (model.estimate_noise_sigma's), and with gram the
    statistics ND and AutoTune read (`Gram`; for an odd size, over the half-pixels whose 2×2 pixels
    are all in the frame), computed on each line of X while it is
    still in cache (at 720p 1.5–1.8 ms where a second pass over X took 3.8; 1.1–1.2 ms on AMX tiles
    for bfloat16 features, `stats_on_tiles`), with the seconds spent on them. X[:, c1] is the ones
    column (the kernel sums rather than multiplies there). With d, the features (1, c1, hp/2, wp/2)
    channels_last, float32 or bfloat16, X's first c1 columns are copied from it in the same pass.
    With gram and head (12, L, c1 + 1) float64 C-contiguous, also `gram_cov`'s covariance of the
    frame, in the same call (Gram.cov). With store (uint8, rgb's shape, C-contiguous), X's noisy
    columns end up holding store's pixels instead, each row rewritten after its statistics: the
    histogram and the statistics stay rgb's."""
    lib = library()
    assert lib is not None, why_not
    h, w = _x_and_frame(x, rgb, np.uint8, hp, wp)
    if store is not None:
        assert store.dtype == np.uint8 and store.flags.c_contiguous and store.shape == rgb.shape
    if d is not None:
        assert tuple(d.shape) == (1, c1, hp // 2, wp // 2) and d.dtype in (torch.float32, torch.bfloat16)
        assert d.device.type == "cpu"
        assert d.is_contiguous(memory_format=torch.channels_last), "features must be channels_last"
    hist = np.zeros(511, np.int64)
    g = sq = None
    seconds = ctypes.c_double(0.0)
    cov = None
    if gram:
        g, sq = torch.empty(c1 + 1, x.shape[1], dtype=torch.float64), torch.empty(x.shape[1], dtype=torch.float64)
        if head is not None:
            assert h % 2 == 0 and w % 2 == 0, "the covariance in the fill needs an even frame size"
            assert head.dtype == np.float64 and head.flags.c_contiguous and head.shape[::2] == (12, c1 + 1)
            cov = np.empty((head.shape[1] + 1, head.shape[1] + 1))
    rc = lib.rcd_fill(x.data_ptr(), x.shape[1], c1, rgb.ctypes.data, None if store is None else store.ctypes.data,
                      h, w, hp, wp, step, hist.ctypes.data,
                      None if d is None else d.data_ptr(), d is not None and d.dtype == torch.bfloat16,
                      None if g is None else g.data_ptr(), None if sq is None else sq.data_ptr(),
                      None if cov is None else head.ctypes.data, 0 if cov is None else head.shape[1],
                      None if cov is None else cov.ctypes.data, ctypes.byref(seconds), threads)
    if rc != 0:
        raise ValueError(f"native fill refused its arguments: X {tuple(x.shape)}, c1 {c1}, frame {h}×{w} in {hp}×{wp}")
    return hist, None if g is None else Gram(g, sq, seconds.value, cov)


def _join_outputs(low: torch.Tensor, e: torch.Tensor, abs_sum: bool, relu: bool,
                  in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A skip join's checks and outputs: low (1, ·, h/2, w/2) and e (1, c, h, w) channels_last on the
    CPU → d (e itself, in_place), relu(d) where asked for, like e, and (c,) float64 for Σ|d| where
    asked for."""
    _, c, h, w = e.shape
    for t in (low, e):
        assert t.device.type == "cpu" and t.is_contiguous(memory_format=torch.channels_last)
    assert tuple(low.shape[2:]) == (h // 2, w // 2) and low.shape[0] == e.shape[0] == 1, \
        f"cannot join {tuple(low.shape)} to {tuple(e.shape)}"
    d = e if in_place else torch.empty_like(e, memory_format=torch.channels_last)
    r = torch.empty_like(e, memory_format=torch.channels_last) if relu else None
    return d, r, torch.empty(c, dtype=torch.float64) if abs_sum else None


def up_add_relu(u: torch.Tensor, e: torch.Tensor, threads: int, abs_sum: bool = False,
                in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A U-Net skip join in one pass: d = nearest-×2 upsampling of u, plus e; r = relu(d); with
    abs_sum, Σ|d| per channel (c,) float64. u (1, c, h/2, w/2) and e (1, c, h, w): float32 or both
    bfloat16, channels_last, CPU; d and r come back the same, d written over e with in_place (no
    frame-sized tensor made, none faulted in)."""
    lib = library()
    assert lib is not None, why_not
    assert u.dtype == e.dtype and e.dtype in (torch.float32, torch.bfloat16), f"u {u.dtype}, e {e.dtype}"
    _, c, h, w = e.shape
    assert u.shape[1] == c, f"cannot join {tuple(u.shape)} to {tuple(e.shape)}"
    d, r, sums = _join_outputs(u, e, abs_sum, relu=True, in_place=in_place)
    kernel = lib.rcd_up_add_relu if e.dtype == torch.float32 else lib.rcd_up_add_relu_bf16
    rc = kernel(u.data_ptr(), e.data_ptr(), d.data_ptr(), r.data_ptr(), h, w, c,
                None if sums is None else sums.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"native skip join refused its arguments: u {tuple(u.shape)}, e {tuple(e.shape)}")
    return d, r, sums


def _conv1x1_weights(weight: torch.Tensor, bias: torch.Tensor, ci: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×1 convolution from ci to c channels as the kernels' conv1_t takes it: weight (ci, c), bias (c)."""
    assert tuple(weight.shape) == (c, ci, 1, 1) and tuple(bias.shape) == (c,), f"a 1×1 convolution from {ci} to {c} channels"
    return weight.detach().float().reshape(c, ci).t().contiguous(), bias.detach().float().contiguous()


def conv_up_add_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, e: torch.Tensor, threads: int,
                     abs_sum: bool = False, relu: bool = True,
                     in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """`up_add_relu` of u = conv1×1(relu(x), weight, bias), u never written out: x (1, ci, h/2, w/2)
    and e (1, c, h, w) float32 channels_last on the CPU, weight (c, ci, 1, 1) with c a multiple of 8.
    relu False: relu(d) is not written (None), for a reader that applies it itself. in_place: d is
    written over e."""
    lib = library()
    assert lib is not None, why_not
    assert x.dtype == e.dtype == torch.float32, f"x {x.dtype}, e {e.dtype}"
    _, c, h, w = e.shape
    ci = x.shape[1]
    assert c % 8 == 0, f"{c} output channels: the kernel writes whole vectors of 8"
    wt, b = _conv1x1_weights(weight, bias, ci, c)
    d, r, sums = _join_outputs(x, e, abs_sum, relu, in_place)
    rc = lib.rcd_conv_up_add_relu(x.data_ptr(), ci, wt.data_ptr(), b.data_ptr(), e.data_ptr(), d.data_ptr(),
                                  None if r is None else r.data_ptr(),
                                  h, w, c, None if sums is None else sums.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"native 1×1 convolution + skip join refused its arguments: x {tuple(x.shape)}, e {tuple(e.shape)}")
    return d, r, sums


def _output(out: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """A kernel's float32 channels_last output: `out`, checked, or a new tensor."""
    if out is None:
        return torch.empty(shape, memory_format=torch.channels_last)
    assert tuple(out.shape) == shape and out.dtype == torch.float32 and out.device.type == "cpu" and \
        out.is_contiguous(memory_format=torch.channels_last), f"out must be float32 {shape} channels_last"
    return out


def relu_down(e: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, threads: int,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(relu(e), weight, bias, stride=2) for a 2×2 kernel, in one pass: e (1, c, h, w) float32
    channels_last on the CPU (h, w even), weight (co, c, 2, 2) with co a multiple of 8 → (1, co, h/2, w/2),
    into `out` where given (that shape, channels_last)."""
    lib = library()
    assert lib is not None, why_not
    _, c, h, w = e.shape
    co = weight.shape[0]
    assert e.dtype == torch.float32 and e.device.type == "cpu" and e.is_contiguous(memory_format=torch.channels_last)
    assert tuple(weight.shape) == (co, c, 2, 2) and tuple(bias.shape) == (co,), "a 2×2 convolution of e's channels"
    wt = weight.detach().float().permute(2, 3, 1, 0).contiguous()  # (ky, kx, c, co)
    b = bias.detach().float().contiguous()
    out = _output(out, (1, co, h // 2, w // 2))
    rc = lib.rcd_relu_down(e.data_ptr(), h, w, c, wt.data_ptr(), b.data_ptr(), co, out.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"native relu + 2×2 convolution refused its arguments: e {tuple(e.shape)}, {co} outputs")
    return out


def first_conv(rgb: np.ndarray, hp: int, wp: int, weight: torch.Tensor, bias: torch.Tensor, threads: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """The backbone's first layer straight from the uint8 frame: conv2d(frame, weight, bias, stride=2,
    padding=1) for a 4×4 kernel, frame = rgb (h, w, 3) replicate-padded to hp × wp (even) and read
    as 0..255 floats; weight (co, 3, 4, 4), co a multiple of 8 → (1, co, hp/2, wp/2) channels_last,
    into `out` where given."""
    lib = library()
    assert lib is not None, why_not
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous and rgb.ndim == 3 and rgb.shape[2] == 3
    h, w = rgb.shape[:2]
    co = weight.shape[0]
    assert tuple(weight.shape) == (co, 3, 4, 4) and tuple(bias.shape) == (co,), "a 4×4 convolution of RGB"
    wt = weight.detach().float().permute(2, 3, 1, 0).reshape(4, 12, co).contiguous()  # (ky, kx·3 + c, co)
    b = bias.detach().float().contiguous()
    out = _output(out, (1, co, hp // 2, wp // 2))
    rc = lib.rcd_inp(rgb.ctypes.data, h, w, hp, wp, wt.data_ptr(), b.data_ptr(), co, out.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"native first layer refused its arguments: frame {h}×{w} in {hp}×{wp}, {co} outputs")
    return out


# Winograd F(4×4, 3×3)'s weight transform G (6, 3): U = G·g·Gᵀ per (output, input) channel pair.
WINOGRAD_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                           [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3 convolution's weight (c, c, 3, 3) → (36, c, c) float32 [position][input][output], what
    `res3x3_` multiplies by (the transform in float64, then rounded once)."""
    c = weight.shape[0]
    assert tuple(weight.shape) == (c, c, 3, 3), f"a 3×3 convolution from c to c channels, not {tuple(weight.shape)}"
    g = WINOGRAD_G
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.detach().double().cpu(), g)  # (6, 6, ci, co)
    return u.reshape(36, c, c).float().contiguous()


def res3x3_(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, threads: int,
            join: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x ← x + conv2d(relu(x), weight, bias, padding=1), a pre-activation residual block, in place and in
    one pass by Winograd F(4×4, 3×3): x (1, c, h, w) float32 channels_last on the CPU, c a multiple
    of 8; u = winograd_weights(weight). join = (xc, weight, bias): x first becomes the skip join
    nearest-×2(conv1×1(relu(xc))) + x (conv_up_add_relu's d), in the same pass (h, w even; xc
    (1, ci, h/2, w/2) float32 channels_last). Returns x."""
    lib = library()
    assert lib is not None, why_not
    _, c, h, w = x.shape
    assert x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
    assert tuple(u.shape) == (36, c, c) and u.dtype == torch.float32 and u.is_contiguous(), "winograd_weights of a c → c convolution"
    b = bias.detach().float().contiguous()
    if join is None:
        rc = lib.rcd_res3x3(x.data_ptr(), h, w, c, u.data_ptr(), b.data_ptr(), threads)
    else:
        xc, jw, jb = join
        ci = xc.shape[1]
        assert xc.dtype == torch.float32 and xc.is_contiguous(memory_format=torch.channels_last)
        assert tuple(xc.shape) == (1, ci, h // 2, w // 2), f"the coarser scale {tuple(xc.shape)} for x {tuple(x.shape)}"
        wt, jbias = _conv1x1_weights(jw, jb, ci, c)
        rc = lib.rcd_join_res3x3(x.data_ptr(), h, w, c, u.data_ptr(), b.data_ptr(), xc.data_ptr(), ci, wt.data_ptr(),
                                 jbias.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"native 3×3 residual block refused its arguments: x {tuple(x.shape)}")
    return x


def gram_cov(g: np.ndarray, c1: int, head: np.ndarray, sq_noisy: float, m: float) -> np.ndarray:
    """Covariance (L+1, L+1) float64 of [L raw maps; noisy] in 0..1 units over m samples, from a
    frame's statistics: g (c1 + 1, k) = [d | 1]ᵀ·X, sq_noisy = Σ noisy² (0..1 units), and the head
    (12, L, c1 + 1) that gives the raw maps from [d | 1] (engine/denoiser.py, _covariance)."""
    lib = library()
    assert lib is not None, why_not
    g, head = np.ascontiguousarray(g, np.float64), np.ascontiguousarray(head, np.float64)
    l = head.shape[1]
    assert g.shape[0] == c1 + 1 and g.shape[1] >= c1 + 13 and head.shape == (12, l, c1 + 1)
    cov = np.empty((l + 1, l + 1))
    if lib.rcd_gram_cov(g.ctypes.data, g.shape[1], c1, head.ctypes.data, l, sq_noisy, m, cov.ctypes.data):
        raise ValueError(f"native covariance refused its arguments: {l} levels, c1 {c1}")
    return cov


class _HeadsParams(ctypes.Structure):
    """heads_t of engine/csrc/heads.c."""

    _fields_ = [(name, ctypes.c_int64) for name in ("l", "nz", "la", "sigma_feature")] + \
               [(name, ctypes.c_void_p) for name in ("active", "levels", "router_w", "router_b", "auto_w", "auto_b")] + \
               [(name, ctypes.c_double) for name in ("tau", "ridge", "tol", "max_rescale")] + \
               [(name, ctypes.c_int64) for name in ("max_iters", "check_every")]


class Heads:
    """One model's Router, ND and AutoTune in C: `heads(cov, feats, sigma) → (T, coefficients)`,
    or None where engine/heads_np.py's fallbacks apply (it then runs). Holds the weights the C
    struct points at."""

    def __init__(self, levels: np.ndarray, active: np.ndarray, router: tuple[np.ndarray, np.ndarray],
                 autotune: tuple[np.ndarray, np.ndarray], tau: float, sigma_feature: bool,
                 nd: tuple[float, float, float, int, int]):
        """levels (L,) 0..1; active (la,) the routed levels; router (W (la², nz), b), autotune
        (W (L, nz), b) float32; nd: RIDGE, NS_TOL, MAX_RESCALE, NS_MAX_ITERS, NS_CHECK_EVERY."""
        lib = library()
        assert lib is not None, why_not
        self._lib = lib
        f64, f32 = (lambda a: np.ascontiguousarray(a, np.float64)), (lambda a: np.ascontiguousarray(a, np.float32))
        self._keep = (np.ascontiguousarray(active, np.int64), f64(levels), f32(router[0]), f32(router[1]),
                      f32(autotune[0]), f32(autotune[1]))
        self.l, self.nz = len(levels), autotune[0].shape[1]
        self.f = self.nz - 2 * self.l - int(sigma_feature)  # pooled features
        assert router[0].shape == (len(active) ** 2, self.nz) and autotune[0].shape == (self.l, self.nz)
        ridge, tol, max_rescale, iters, every = nd
        self._params = _HeadsParams(self.l, self.nz, len(active), int(sigma_feature),
                                    *(a.ctypes.data for a in self._keep), tau, ridge, tol, max_rescale, iters, every)

    def __call__(self, cov: np.ndarray, feats: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray] | None:
        """cov (L+1, L+1) float64, feats (F,) float32 → T (L, L), coefficients (L,) float64, or
        None. Thread-safe (the struct is only read)."""
        cov, feats = np.ascontiguousarray(cov, np.float64), np.ascontiguousarray(feats, np.float32)
        assert cov.shape == (self.l + 1, self.l + 1) and feats.shape == (self.f,)
        t, auto = np.empty((self.l, self.l)), np.empty(self.l)  # per call: frames are inferred on several threads at once
        rc = self._lib.rcd_heads(ctypes.byref(self._params), cov.ctypes.data, feats.ctypes.data, sigma,
                                 t.ctypes.data, auto.ctypes.data)
        return None if rc else (t, auto)
