"""Evaluation command: python -m engine.evaluate --weights PATH|live|quality --images DIR --json OUT.

Owns the quality numbers of a model on a folder of clean images with synthetic Gaussian noise:
the noisy input, AutoTune (PSNR and SSIM), each level alone, the best single strength over the
whole set, a per-image oracle over strength × character, the strength calibration and the
residual correlation left by Noise Decorrelation; plus the model's size, FLOPs and speed.

Protocol (reproducible, one place to read it):
- noise: noisy = clean/255 + σ/255 · randn, float, neither clipped nor quantised; the randn comes
  from a torch.Generator seeded from (--seed, image index, σ), drawn on the CPU on every device;
- the network runs once per image and σ (model.forward, float input); every strength / character
  candidate is then a network-free blend of the same maps (compose.blend, float32, on the device);
- PSNR and SSIM in 8-bit units against the clean uint8 image, the output clipped to [0, 255]
  (not quantised); set values are means of per-image values;
- best strength: one strength s ∈ {0, 1, …, 60} at character 0 for the whole set (max of the mean);
- oracle: per image, the max over AutoTune itself and strength {0, 2, …, 60} × character
  {−1, −0.75, …, 1} (both knobs shape that image's AutoTune mix, as in the player), plus every
  strength of the best-strength grid at character 0, so oracle ≥ best strength and oracle ≥
  AutoTune always hold;
- calibration: for s ∈ {5, 10, …, 50} and character ∈ {−1, 0, 1}, |std(output − noisy) − s| / s
  with std measured on the unclipped output; the max over s, character and images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine import checkpoint, compose
from engine import decorrelate as nd
from engine.images import check_output, list_images, read_rgb, too_small
from engine.model import PRESETS, RCDNet, count_flops, param_count

BEST_STRENGTHS = tuple(float(s) for s in range(0, 61))  # one strength for the whole set, character 0
ORACLE_STRENGTHS = tuple(float(s) for s in range(0, 61, 2))
ORACLE_CHARACTERS = tuple(-1.0 + 0.25 * k for k in range(9))  # −1, −0.75, …, 1
CALIBRATION_STRENGTHS = tuple(float(s) for s in range(5, 51, 5))
CALIBRATION_CHARACTERS = (-1.0, 0.0, 1.0)
TIMING_SIZE = (720, 1280)  # (H, W) of the speed measurement
TIMING_WARMUP, TIMING_RUNS = 2, 5
MSE_FLOOR = 1e-10  # a perfect reconstruction reads as 148 dB, not infinity (JSON has no inf)

RESULT_KEYS = ("sigma", "psnr_noisy", "psnr_autotune", "ssim_autotune", "psnr_levels", "psnr_best_strength",
               "best_strength", "psnr_oracle", "calibration_error_max", "nd_offdiag_max")


class EvalError(Exception):
    """A one-line user error: a bad option value (exit code 2, as argparse's)."""

    exit_code = 2


class InputError(EvalError):
    """A one-line user error: something named could not be used — a folder, an image, weights, the
    device, an output (exit code 1, as the player's)."""

    exit_code = 1


# ---- candidates ---------------------------------------------------------------------------------
def candidates() -> tuple[list[tuple[float, float]], set[tuple[float, float]]]:
    """All (strength, character) blends to score per image, and the subset whose residual std is
    measured for calibration. Strength 0 is the identity at every character: scored once, as (0, 0)."""
    keys: dict[tuple[float, float], None] = {}
    for s in BEST_STRENGTHS:
        keys[(s, 0.0)] = None
    for s in ORACLE_STRENGTHS:
        for ch in ORACLE_CHARACTERS:
            keys[(s, ch if s > 0 else 0.0)] = None
    calib = {(s, ch) for s in CALIBRATION_STRENGTHS for ch in CALIBRATION_CHARACTERS}
    for k in sorted(calib):
        keys[k] = None
    return list(keys), calib


def oracle_keys() -> list[tuple[float, float]]:
    keys = {(s, 0.0) for s in BEST_STRENGTHS}
    keys |= {(s, ch if s > 0 else 0.0) for s in ORACLE_STRENGTHS for ch in ORACLE_CHARACTERS}
    return sorted(keys)


# ---- noise and metrics --------------------------------------------------------------------------
def noise_seed(seed: int, index: int, sigma: float) -> int:
    """A 63-bit seed for (run seed, image index, σ): distinct streams, stable across runs and devices."""
    state = np.random.SeedSequence([int(seed), int(index), int(round(sigma * 1000))]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def is_grey(img: np.ndarray) -> bool:
    """uint8 (H, W, 3) with its three channels equal (a grey file, replicated by read_rgb)."""
    return bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]))


def add_noise(clean: np.ndarray, sigma: float, seed: int, index: int) -> torch.Tensor:
    """clean uint8 (H, W, 3) → noisy (1, 3, H, W) float32 in [0, 1] units, not clipped, not quantised.
    A grey image gets grey noise, one field in all three channels: with a field per channel it was a
    colour image whose three noisy copies of each pixel a model can average (three CSet5 images made
    grey, σ 25: `live` 28.7–31.6 dB that way, 22.7–23.4 with grey noise)."""
    x = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255.0
    gen = torch.Generator().manual_seed(noise_seed(seed, index, sigma))
    shape = (1, 1) + x.shape[2:] if is_grey(clean) else x.shape
    return x + (sigma / 255.0) * torch.randn(shape, generator=gen)


def psnr_of(est: torch.Tensor, clean8: torch.Tensor) -> float:
    """PSNR (dB) of an 8-bit-unit float image, already clipped, against the clean image (same shape)."""
    mse = F.mse_loss(est, clean8).item()
    return 10.0 * math.log10(255.0**2 / max(mse, MSE_FLOOR))


def ssim_of(est: torch.Tensor, clean8: torch.Tensor) -> float | None:
    """SSIM (skimage, RGB, data_range 255) of (3, H, W) 8-bit-unit images; None for images too small
    for a 3×3 window."""
    from skimage.metrics import structural_similarity

    a = est.detach().double().cpu().permute(1, 2, 0).numpy()
    b = clean8.detach().double().cpu().permute(1, 2, 0).numpy()
    side = min(a.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return None
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255.0, win_size=win))


# ---- per image ----------------------------------------------------------------------------------
class Scorer:
    """Everything computed per image and σ, from one network pass."""

    def __init__(self, model: RCDNet, device: torch.device):
        self.model, self.device = model, device
        self.levels = tuple(float(v) for v in model.cfg.levels)
        self.keys, self.calib = candidates()
        self.one_hot = torch.eye(len(self.levels), dtype=torch.float64)

    @torch.no_grad()
    def image(self, clean: np.ndarray, sigma: float, seed: int, index: int) -> dict:
        noisy = add_noise(clean, sigma, seed, index).to(self.device)
        bases, auto = self.model(noisy)  # (1, L, 3, H, W) [0, 1] units, (1, L)
        maps8 = bases[0].float() * 255.0  # (L, 3, H, W), 8-bit units
        noisy8 = noisy[0] * 255.0  # (3, H, W)
        clean8 = torch.from_numpy(clean).permute(2, 0, 1).float().to(self.device)
        out = {"psnr_noisy": psnr_of(noisy8.clamp(0, 255), clean8)}

        auto_img = compose.blend(noisy8, maps8, auto[0]).clamp_(0, 255)
        out["psnr_autotune"] = psnr_of(auto_img, clean8)
        out["ssim_autotune"] = ssim_of(auto_img, clean8)
        del auto_img
        out["psnr_levels"] = [psnr_of(compose.blend(noisy8, maps8, self.one_hot[i]).clamp_(0, 255), clean8)
                              for i in range(len(self.levels))]

        scores, calib_err = {}, 0.0
        for key in self.keys:
            # Strength × character around this image's AutoTune mix, as the player's knobs do.
            c = compose.character_coefficients(self.levels, key[0], key[1], base=auto[0])
            y = compose.blend(noisy8, maps8, c)  # (3, H, W), not clipped
            if key in self.calib:
                measured = float((y - noisy8).std())
                calib_err = max(calib_err, abs(measured - key[0]) / key[0])
            scores[key] = psnr_of(y.clamp_(0, 255), clean8)
        scores["autotune"] = out["psnr_autotune"]  # the oracle's search starts from AutoTune
        out["scores"] = scores
        out["calibration_error"] = calib_err
        out["nd_offdiag"] = nd.offdiag_corr_max(bases)
        return out


def summarise(sigma: float, per_image: list[dict]) -> tuple[dict, list[float]]:
    """Set-level result for one σ (exactly RESULT_KEYS) and the mean-PSNR-vs-strength curve."""
    def mean(key):
        return float(np.mean([r[key] for r in per_image]))

    curve = [float(np.mean([r["scores"][(s, 0.0)] for r in per_image])) for s in BEST_STRENGTHS]
    best = int(np.argmax(curve))
    okeys = oracle_keys()
    oracle = float(np.mean([max(r["scores"][k] for k in [*okeys, "autotune"]) for r in per_image]))
    ssims = [r["ssim_autotune"] for r in per_image if r["ssim_autotune"] is not None]
    res = {
        "sigma": sigma,
        "psnr_noisy": mean("psnr_noisy"),
        "psnr_autotune": mean("psnr_autotune"),
        "ssim_autotune": float(np.mean(ssims)) if ssims else None,
        "psnr_levels": np.mean([r["psnr_levels"] for r in per_image], axis=0).tolist(),
        "psnr_best_strength": curve[best],
        "best_strength": BEST_STRENGTHS[best],
        "psnr_oracle": oracle,
        "calibration_error_max": max(r["calibration_error"] for r in per_image),
        "nd_offdiag_max": max(r["nd_offdiag"] for r in per_image),
    }
    assert tuple(res) == RESULT_KEYS
    return res, curve


def evaluate(model: RCDNet, images: list[tuple[str, np.ndarray]], sigmas: list[float], seed: int,
             device: torch.device, progress: bool = True) -> tuple[list[dict], dict[float, list[float]]]:
    from tqdm import tqdm

    model = model.eval().to(device)
    scorer = Scorer(model, device)
    results, curves = [], {}
    bar = tqdm(total=len(images) * len(sigmas), desc="evaluate", disable=None if progress else True,
               file=sys.stderr, dynamic_ncols=True)
    for sigma in sigmas:
        per_image = []
        for index, (_, clean) in enumerate(images):
            per_image.append(scorer.image(clean, sigma, seed, index))
            bar.update(1)
        res, curve = summarise(sigma, per_image)
        results.append(res)
        curves[sigma] = curve
    bar.close()
    return results, curves


# ---- speed --------------------------------------------------------------------------------------
def time_infer(model: RCDNet, device: torch.device, size: tuple[int, int] = TIMING_SIZE,
               warmup: int = TIMING_WARMUP, runs: int = TIMING_RUNS, seed: int = 0) -> float:
    """Median ms of Denoiser.infer on a random uint8 frame (the product path: padding, precision,
    backbone, decorrelation statistics, AutoTune)."""
    from engine.denoiser import Denoiser

    den = Denoiser(model, str(device))
    frame = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    times = []
    for k in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        den.infer(frame)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


# ---- output -------------------------------------------------------------------------------------
def format_table(results: list[dict]) -> str:
    head = (f"{'σ':>5} {'noisy':>7} {'AutoTune':>9} {'SSIM':>7} {'best s':>14} {'oracle':>7} "
            f"{'calib err':>9} {'ND offdiag':>10}  levels (dB)")
    rows = [head, "-" * len(head)]
    for r in results:
        ssim = "n/a" if r["ssim_autotune"] is None else f"{r['ssim_autotune']:.4f}"
        best = f"{r['psnr_best_strength']:.2f} @ {r['best_strength']:g}"
        levels = " ".join(f"{v:.2f}" for v in r["psnr_levels"])
        rows.append(f"{r['sigma']:>5g} {r['psnr_noisy']:>7.2f} {r['psnr_autotune']:>9.2f} {ssim:>7} {best:>14} "
                    f"{r['psnr_oracle']:>7.2f} {100 * r['calibration_error_max']:>8.2f}% {r['nd_offdiag_max']:>10.1e}"
                    f"  {levels}")
    return "\n".join(rows)


def plot(path: str, results: list[dict], curves: dict[float, list[float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        curve = curves[r["sigma"]]
        (line,) = ax.plot(BEST_STRENGTHS, curve, label=f"σ = {r['sigma']:g}")
        ax.axhline(r["psnr_autotune"], color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"AutoTune, σ = {r['sigma']:g}")
        ax.plot([r["best_strength"]], [r["psnr_best_strength"]], marker="o", color=line.get_color())
    ax.set_xlabel("strength (removed-noise std, 8-bit units), character 0")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


# ---- command line -------------------------------------------------------------------------------
SIGMA_MAX = 255.0  # noise std beyond the 8-bit range itself; from ~1e8 float32 loses the calibration


def parse_sigmas(text: str) -> list[float]:
    try:
        sigmas = [float(t) for t in text.split(",")]
    except ValueError:
        raise EvalError(f"--sigma: expected comma-separated numbers, got {text!r}") from None
    if not sigmas or any(not math.isfinite(s) or not 0 <= s <= SIGMA_MAX for s in sigmas):
        raise EvalError(f"--sigma: expected numbers from 0 to {SIGMA_MAX:g} (8-bit units), got {text!r}")
    if len(set(sigmas)) != len(sigmas):
        raise EvalError(f"--sigma: {text!r} names a σ twice")
    return sigmas


def load_model(weights: str | None, random_init: str | None, seed: int) -> tuple[RCDNet, dict]:
    """(model, the JSON 'model' record without FLOPs)."""
    if random_init is not None:
        torch.manual_seed(seed)
        model = RCDNet(PRESETS[random_init]).eval()
        return model, {"name": f"random-init:{random_init}", "sha256": None}
    model, _meta = checkpoint.load(weights)
    return model, {"name": str(weights), "sha256": checkpoint.sha256(checkpoint.resolve(weights))}


def load_images(folder: str, limit: int | None) -> list[tuple[str, np.ndarray]]:
    files = list_images(folder)  # SystemExit("error: …") for a missing or empty folder
    if limit is not None:
        files = files[:limit]
    out = []
    for p in files:
        try:
            out.append((p.name, read_rgb(p)))
        except Exception as e:  # Pillow raises many types for damaged files
            raise InputError(f"{p}: cannot read image: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        why = too_small(p, out[-1][1])
        if why:
            raise InputError(why)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m engine.evaluate", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint path, or live / quality for the shipped models")
    src.add_argument("--random-init", choices=sorted(PRESETS), help="evaluate a randomly initialised preset (smoke tests)")
    ap.add_argument("--images", required=True, help="folder of clean PNG/JPEG/TIFF images (grey or colour)")
    ap.add_argument("--sigma", default="15,25,50", help="comma-separated Gaussian noise stds, 8-bit units")
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted by name)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (non-negative)")
    ap.add_argument("--plot", default=None, help="PNG: mean PSNR against strength per σ, AutoTune dashed")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return ap


PLOT_SUFFIXES = (".png", ".pdf", ".svg")  # matplotlib writes these without extra packages


def run(args) -> dict:
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit must be at least 1, got {args.limit}")
    if args.seed < 0:
        raise EvalError(f"--seed must be non-negative, got {args.seed}")
    if args.threads < 0:
        raise EvalError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    sigmas = parse_sigmas(args.sigma)
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        raise EvalError(f"--plot {args.plot}: use one of {', '.join(PLOT_SUFFIXES)}")
    for path, what in ((args.json, "results"), (args.plot, "plot")):
        why = check_output(path, what) if path else ""
        if why:
            raise InputError(why)
    images = load_images(args.images, args.limit)
    if args.threads:
        torch.set_num_threads(args.threads)
    from engine.denoiser import pick_device

    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise InputError(str(e)) from None
    model, record = load_model(args.weights, args.random_init, args.seed)

    results, curves = evaluate(model, images, sigmas, args.seed, device)
    ms = time_infer(model, device)
    report = {
        "model": {
            "config": model.cfg.to_dict(),
            "params": param_count(model),
            "gflops_per_720p_frame": count_flops(model.cfg, *TIMING_SIZE) / 1e9,
            "name": record["name"],
            "sha256": record["sha256"],
        },
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "ms_per_720p_frame": ms,
        "results": results,
    }
    out = Path(args.json)
    try:  # whole or not at all: a full disk left half a JSON file
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
        os.replace(tmp, out)
    except OSError as e:
        raise InputError(f"{out}: cannot write the results ({e.strerror})") from None

    m = report["model"]
    print(f"model {m['name']}: {m['params'] / 1e6:.3f} M params, {m['gflops_per_720p_frame']:.2f} GFLOP per 1280×720 frame, "
          f"{ms:.1f} ms per 1280×720 frame on {report['device']}")
    print(f"{len(images)} images from {args.images}, seed {args.seed}")
    print(format_table(results))
    if args.plot:
        try:
            plot(args.plot, results, curves, f"{m['name']} on {Path(args.images).name} ({len(images)} images)")
        except OSError as e:
            raise InputError(f"{args.plot}: cannot write the plot ({e.strerror}); the results are in {out}") from None
        print(f"plot: {args.plot}")
    print(f"json: {out}")
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # engine.images reports a missing or empty folder this way
        if isinstance(e.code, str):
            msg = e.code if e.code.startswith("error:") else f"error: {e.code}"
            print(msg, file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
