"""Two builds of the CPU kernels timed in one process, alternating call by call: the quiet way to
compare a kernel change on a VM whose speed drifts by up to 1.5× between runs (README.md,
"Measured performance"). Separate runs of `engine.bench` cannot see a 5 % change there; this can.

    python scripts/kernel_ab.py OLD.so [--weights live] [--threads 1] [--size 1280x720] [--rounds 40]

OLD.so names a build in the kernel cache (~/.cache/rcd-player, or a path): engine/native.py keeps
the three most recently used, so the build of the commit before a change is usually there. The
other build is the working tree's (built on first use). For each native call of the fused
backbone's pass, and for the fill with its statistics, it prints the median time with each build
and whether the two gave the same floats. A frame of ../shared/data/clips/01_dog.mp4 where it
exists, else a generated one.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine import fused, native  # noqa: E402
from engine.denoiser import Denoiser  # noqa: E402
from engine.model import noise_grid_step  # noqa: E402

CLIP = Path(__file__).resolve().parent.parent.parent / "shared/data/clips/01_dog.mp4"
TIMED = ("first_conv", "relu_down", "res3x3_", "conv_up_add_relu", "up_add_relu")  # native calls of the pass


def load_old(name: str, new: ctypes.CDLL) -> ctypes.CDLL:
    """The other build, with the new build's signatures for the functions it has."""
    path = Path(name) if "/" in name else native._cache_dirs()[0] / name
    old = ctypes.CDLL(str(path))
    for fn in dir(new):
        if fn.startswith("rcd_") and hasattr(old, fn):
            getattr(old, fn).argtypes = getattr(new, fn).argtypes
            getattr(old, fn).restype = getattr(new, fn).restype
    return old


def frame(w: int, h: int) -> np.ndarray:
    if CLIP.exists():
        import av

        with av.open(str(CLIP)) as c:
            rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
        return np.ascontiguousarray(np.resize(rgb, (h, rgb.shape[1], 3))[:, np.arange(w) % rgb.shape[1]])
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="the other build: a file name in the kernel cache, or a path")
    ap.add_argument("--weights", default="live")
    ap.add_argument("--threads", type=int, default=1, help="threads per call (1: as each of the player's lanes)")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--rounds", type=int, default=40)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    torch.set_num_threads(a.threads)
    new = native.library()
    if new is None:
        print(f"no native kernels here: {native.why_not}")
        return 1
    old = load_old(a.old, new)
    den = Denoiser.load(a.weights, device="cpu", precision="fp32")
    bb = den.model.backbone
    rgb = frame(w, h)
    hp, wp = h + (-h % 8), w + (-w % 8)
    x = den.infer(rgb).x  # an X of this size to fill
    times = {"old": collections.defaultdict(list), "new": collections.defaultdict(list)}
    now = ["new"]
    for name in TIMED:
        real = getattr(native, name)

        def timed(*args, _real=real, _name=name, **kw):
            t0 = time.perf_counter()
            out = _real(*args, **kw)
            shape = "×".join(map(str, args[0].shape[1:])) if isinstance(args[0], torch.Tensor) else ""
            times[now[0]][f"{_name} {shape}{' +join' if kw.get('join') else ''}"].append(time.perf_counter() - t0)
            return out

        setattr(native, name, timed)
    outs: dict[str, list] = {}
    with torch.no_grad():
        for r in range(a.rounds):
            for which, lib in (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old)):
                native._lib, now[0] = lib, which
                try:
                    t0 = time.perf_counter()
                    d, feats = fused.features(bb, rgb, hp, wp)
                    times[which]["features (the whole pass)"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    _, gram = native.fill(x, den.c1, rgb, hp, wp, noise_grid_step(h, w), a.threads, d=d, gram=True,
                                          head=den._raw_from_x_np)
                    times[which]["fill + statistics"].append(time.perf_counter() - t0)
                except AttributeError as e:  # a kernel the other build does not have
                    print(f"the {which} build cannot run this tree's pass: {e}")
                    return 1
                outs[which] = [d.clone(), feats.clone(), x.clone(), gram.cov.copy()]
    print(f"{a.weights}, {w}×{h}, {a.threads} thread(s), median of {a.rounds} alternating calls, ms:")
    for key in times["new"]:
        o, n = (1000 * float(np.median(times[k][key][2:])) for k in ("old", "new"))
        print(f"  {key:34s} old {o:7.2f}   new {n:7.2f}   {n / o:5.2f}×")
    same = [torch.equal(p, q) if isinstance(p, torch.Tensor) else np.array_equal(p, q) for p, q in zip(outs["old"], outs["new"])]
    print("same floats (features, statistics, X, covariance):", same)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
