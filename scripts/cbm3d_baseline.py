"""CBM3D on the exact noisy images engine.evaluate makes: the reference for the quality bars.

A measurement only — `bm3d` (PyPI) is not a dependency of the product:
    pip install bm3d && python scripts/cbm3d_baseline.py --images DIR --sigma 15,25,50 --json OUT
Noise comes from engine.evaluate.add_noise with the same seed, so the numbers sit beside
engine.evaluate's table image for image. PSNR on RGB in [0, 255] after clipping.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from engine.evaluate import add_noise, load_images, parse_sigmas, psnr_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--sigma", default="15,25,50")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    import bm3d

    images = load_images(args.images, args.limit)
    results = []
    for sigma in parse_sigmas(args.sigma):
        t0, psnrs = time.time(), []
        for index, (name, clean) in enumerate(images):
            noisy = add_noise(clean, sigma, args.seed, index)[0].permute(1, 2, 0).numpy().astype(np.float64)  # (H, W, 3) 0..1
            est = bm3d.bm3d_rgb(noisy, sigma / 255.0)
            est8 = torch.from_numpy(np.clip(est, 0, 1) * 255.0).permute(2, 0, 1).float()
            psnrs.append(psnr_of(est8, torch.from_numpy(clean).permute(2, 0, 1).float()))
            print(f"sigma {sigma:g} {name}: {psnrs[-1]:.2f} dB", flush=True)
        results.append({"sigma": sigma, "psnr_cbm3d": float(np.mean(psnrs)), "per_image": psnrs,
                        "seconds": round(time.time() - t0, 1)})
        print(f"sigma {sigma:g}: CBM3D {results[-1]['psnr_cbm3d']:.2f} dB", flush=True)
    with open(args.json, "w") as f:
        json.dump({"images": args.images, "seed": args.seed, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
