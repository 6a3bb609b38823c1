"""Luma noise in colour frames: the colour backbone against the luma path (weights/README.md).

A measurement, as the table there was made:
    python scripts/luma_noise_eval.py --weights live --images ../shared/data/val/CSet14
Per colour image (grey ones are skipped: they take the monochrome backbone anyway; sizes cropped
to even), seeded noise of three kinds rounded to 8 bits — `luma` (one field in R, G and B),
`4:2:0` (σ in Y, Cb and Cr, the chroma averaged over 2×2 blocks and brought back bilinearly, as a
decoder does) and `rgb` (drawn per channel) — then Denoiser.infer with noise rgb / auto / luma and
an AutoTune blend. PSNR on RGB in [0, 255].
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from engine.denoiser import NOISE_MODES, Denoiser, psnr
from engine.evaluate import load_images, parse_sigmas

# BT.601 full-range RGB → Y, Cb, Cr (rows), as 4:2:0 video is coded
YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def luma_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return to8(img + rng.normal(0.0, sigma, img.shape[:2])[..., None])


def yuv420_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    ycc = img.astype(np.float64) @ YCC.T + rng.normal(0.0, sigma, img.shape)  # (H, W, 3) Y, Cb, Cr
    h, w = img.shape[:2]
    half = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))  # (H/2, W/2, 2)
    up = F.interpolate(torch.from_numpy(half).permute(2, 0, 1)[None], scale_factor=2, mode="bilinear",
                       align_corners=False)[0].permute(1, 2, 0).numpy()
    return to8(np.concatenate([ycc[..., :1], up], axis=2) @ np.linalg.inv(YCC).T)


def rgb_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return to8(img + rng.normal(0.0, sigma, img.shape))


KINDS = {"luma": luma_noise, "4:2:0": yuv420_noise, "rgb": rgb_noise}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="live")
    ap.add_argument("--images", required=True, help="folder of clean images")
    ap.add_argument("--sigma", default="15,25,50")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    images = [im[: im.shape[0] // 2 * 2, : im.shape[1] // 2 * 2] for _, im in load_images(args.images, None)
              if not (np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2]))]
    den = Denoiser.load(args.weights)
    print(f"{args.weights}: {len(images)} colour images")
    for kind, make in KINDS.items():
        for sigma in parse_sigmas(args.sigma):
            rng = np.random.default_rng(args.seed)
            out = {"input": [], **{m: [] for m in NOISE_MODES}}
            took = 0
            for img in images:
                noisy = make(img, sigma, rng)
                out["input"].append(psnr(noisy, img))
                for mode in NOISE_MODES:
                    bases = den.infer(noisy, noise=mode)
                    out[mode].append(psnr(den.blend(bases), img))
                    took += mode == "auto" and bases.luma
            print(f"{kind:6s} σ {sigma:g}: " + "  ".join(f"{k} {np.mean(v):.2f}" for k, v in out.items())
                  + f"  (auto took the luma on {took} of {len(images)})", flush=True)


if __name__ == "__main__":
    main()
