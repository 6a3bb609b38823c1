"""Speed benchmark: python -m engine.bench [--weights live,quality] [--device auto|cpu|cuda] [--threads N].

Owns the timing numbers of the product path (engine.denoiser.Denoiser), per model:
- inference per frame at 960×540, 1280×720 and 1920×1080, split into the backbone
  (Bases.backbone_ms: the network's pass) and the rest (= infer total − backbone), and of that
  rest ND + AutoTune (Bases.stats_ms: the statistics ND and AutoTune read, Router, ND, AutoTune)
  as a % of the backbone (target ≤ 10 %). The rest also fills X's other columns and estimates
  the input's noise;
- blend per frame at 1280×720 and 1920×1080 (Mix(strength=20, character=0.3) into a preallocated
  uint8 frame; which kernel ran, the native one-pass C kernel or torch, is printed) beside its memory floor measured in the same run: the bytes one blend must move
  (engine.denoiser.frame_bytes_per_blend) over the large-copy bandwidth of this device (a 256 MB
  float32 torch copy_ into a preallocated tensor after each blend run: bandwidth = 2 · bytes / time,
  since a copy reads and writes), and the ratio blend / floor (target ≤ 1.5 at 1080p on a CPU);
- GFLOP per 1280×720 frame (model.count_flops) and parameters.
Warm-up runs first, CUDA synchronised around every timed call, medians reported. It prints
numbers and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine import checkpoint, compose
from engine.model import PRESETS, RCDNet, count_flops, param_count

INFER_SIZES = ((540, 960), (720, 1280), (1080, 1920))  # (H, W)
BLEND_SIZES = ((720, 1280), (1080, 1920))
BLEND_MIX = compose.Mix(strength=20.0, character=0.3)
COPY_MB = 256
INFER_WARMUP, INFER_RUNS = 2, 5
BLEND_WARMUP, BLEND_RUNS = 3, 20
ND_TARGET_PCT = 10.0
BLEND_FLOOR_TARGET = 1.5


class BenchError(Exception):
    """A one-line user error: a bad option value (exit code 2, as argparse's)."""

    exit_code = 2


class InputError(BenchError):
    """A one-line user error: weights, the device or an output that could not be used (exit code 1,
    as the player's)."""

    exit_code = 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CopyProbe:
    """Large-copy bandwidth: copy_ of `mbytes` MB of float32 into a preallocated tensor, counting the
    bytes read and the bytes written. `once()` times one copy; the blend timings interleave it with
    their own runs, because this machine's bandwidth drifts by 2× within a minute (9.9 and 18.6 GB/s
    in two bench runs of one session) and a floor measured apart from the blend made its ratio drift."""

    def __init__(self, device: torch.device, mbytes: int = COPY_MB):
        n = mbytes * (1 << 20) // 4
        self.device, self.nbytes = device, 2.0 * n * 4
        self.src = torch.ones(n, dtype=torch.float32, device=device)
        self.dst = torch.empty_like(self.src)
        self.dst.copy_(self.src)  # touch every page once

    def once(self) -> float:
        """Bytes/s of one copy."""
        _sync(self.device)
        t0 = time.perf_counter()
        self.dst.copy_(self.src)
        _sync(self.device)
        return self.nbytes / (time.perf_counter() - t0)

    def median(self, runs: int = 5) -> float:
        return float(np.median([self.once() for _ in range(runs)]))


def bench_infer(den, size: tuple[int, int], warmup: int, runs: int, seed: int = 0) -> dict:
    h, w = size
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    totals, backbones, stats = [], [], []
    for k in range(warmup + runs):
        _sync(den.device)
        t0 = time.perf_counter()
        bases = den.infer(frame)
        _sync(den.device)
        if k >= warmup:
            totals.append((time.perf_counter() - t0) * 1000.0)
            backbones.append(bases.backbone_ms)
            stats.append(bases.stats_ms)
    total, backbone, nd_autotune = float(np.median(totals)), float(np.median(backbones)), float(np.median(stats))
    rest = float(np.median(np.array(totals) - np.array(backbones)))
    return {"size": f"{w}x{h}", "backbone_ms": backbone, "infer_ms": total, "after_network_ms": rest,
            "nd_autotune_ms": nd_autotune,
            "nd_autotune_pct": 100.0 * nd_autotune / backbone if backbone > 0 else float("nan")}


def bench_blend(den, size: tuple[int, int], copy: CopyProbe, warmup: int, runs: int, seed: int = 1) -> dict:
    """Blend timings, each run followed by one large copy: the floor uses the median bandwidth of
    those copies, measured in the same seconds as the blends."""
    from engine.denoiser import frame_bytes_per_blend

    h, w = size
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    bases = den.infer(frame)
    out = np.empty((h, w, 3), np.uint8)
    times, bandwidths = [], []
    for k in range(warmup + runs):
        _sync(den.device)
        t0 = time.perf_counter()
        den.blend(bases, BLEND_MIX, out=out)
        _sync(den.device)
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
            bandwidths.append(copy.once())
    nbytes = frame_bytes_per_blend(bases)
    blend_ms = float(np.median(times))
    bandwidth = float(np.median(bandwidths))
    floor_ms = nbytes / bandwidth * 1000.0
    return {"size": f"{w}x{h}", "blend_ms": blend_ms, "floor_ms": floor_ms, "ratio": blend_ms / floor_ms,
            "bytes": int(nbytes), "copy_bandwidth_gbs": bandwidth / 1e9}


# ---- models -------------------------------------------------------------------------------------
def shipped_names() -> list[str]:
    return [n for n in ("live", "quality") if checkpoint.resolve(n).is_file()]


def load_models(weights: str | None, random_init: str | None) -> tuple[list[tuple[str, RCDNet]], str | None]:
    """[(display name, model)] and an optional note."""
    if random_init:
        names = _split(random_init)
        bad = [n for n in names if n not in PRESETS]
        if bad:
            raise BenchError(f"--random-init: unknown preset {bad[0]!r} (choose from {', '.join(sorted(PRESETS))})")
        torch.manual_seed(0)
        return [(f"random-init:{n}", RCDNet(PRESETS[n]).eval()) for n in names], None
    if weights:
        return [(n, checkpoint.load(n)[0]) for n in _split(weights)], None
    names = shipped_names()
    if names:
        return [(n, checkpoint.load(n)[0]) for n in names], None
    note = (f"note: no shipped weights in {checkpoint.WEIGHTS_DIR} (rcd_live.pt, rcd_quality.pt); timing randomly "
            "initialised presets instead (speed does not depend on the weights' values)")
    return [(f"random-init:{n}", RCDNet(PRESETS[n]).eval()) for n in ("live", "quality")], note


def _split(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise BenchError(f"expected a comma-separated list, got {text!r}")
    return names


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'64x96,1280x720' (W×H, as screens are named) → ((96, 64), (720, 1280)) as (H, W)."""
    sizes = []
    for tok in _split(text):
        try:
            w, h = (int(v) for v in tok.lower().replace("×", "x").split("x"))
        except ValueError:
            raise BenchError(f"--sizes: expected WxH[,WxH…], got {tok!r}") from None
        if w < 1 or h < 1:
            raise BenchError(f"--sizes: sizes must be positive, got {tok!r}")
        sizes.append((h, w))
    return tuple(sizes)


# ---- output -------------------------------------------------------------------------------------
def print_model(rec: dict) -> None:
    print(f"\n== {rec['name']}: {rec['params'] / 1e6:.3f} M params, {rec['gflops_per_720p_frame']:.2f} GFLOP per "
          f"1280×720 frame, backbone in {rec['dtype']}, levels {rec['levels']}")
    print(f"backbone: {rec['backbone_kernel']}; statistics: {rec['stats_kernel']}")
    print(f"{'frame':>10} {'backbone ms':>12} {'infer ms':>9} {'after ms':>9} {'ND+AutoTune ms':>15} {'% of backbone':>14}")
    for r in rec["infer"]:
        flag = "" if r["nd_autotune_pct"] <= ND_TARGET_PCT else f"  (over the {ND_TARGET_PCT:g} % target)"
        print(f"{r['size']:>10} {r['backbone_ms']:>12.1f} {r['infer_ms']:>9.1f} {r['after_network_ms']:>9.2f} "
              f"{r['nd_autotune_ms']:>15.2f} {r['nd_autotune_pct']:>13.1f}%{flag}")
    print("(after: everything past the network's pass; ND+AutoTune: of that, the statistics, Router, ND and AutoTune)")
    print(f"blend, Mix(strength={BLEND_MIX.strength:g}, character={BLEND_MIX.character:g}) into a preallocated uint8 frame "
          f"({rec['blend_kernel']}):")
    print(f"{'frame':>10} {'blend ms':>9} {'floor ms':>9} {'blend/floor':>12} {'MB moved':>9} {'copy GB/s':>10}")
    for r in rec["blend"]:
        print(f"{r['size']:>10} {r['blend_ms']:>9.2f} {r['floor_ms']:>9.2f} {r['ratio']:>12.2f} {r['bytes'] / 1e6:>9.2f} "
              f"{r['copy_bandwidth_gbs']:>10.2f}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None,
                    help="comma-separated names (live, quality) or checkpoint paths; default: every shipped model "
                         "present in weights/, else randomly initialised presets")
    ap.add_argument("--random-init", default=None, help="comma-separated presets to time with random weights")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    # For tests: small frames, few runs, a small copy.
    ap.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--copy-mb", type=int, default=COPY_MB, help=argparse.SUPPRESS)
    return ap


def run(args) -> dict:
    if args.weights and args.random_init:
        raise BenchError("give --weights or --random-init, not both")
    if args.threads < 0:
        raise BenchError(f"--threads must be non-negative, got {args.threads}")
    if args.runs is not None and args.runs < 1:
        raise BenchError(f"--runs must be at least 1, got {args.runs}")
    if args.json:
        from engine.images import check_output

        why = check_output(args.json, "results")
        if why:
            raise InputError(why)
    infer_sizes = blend_sizes = None
    if args.sizes:
        infer_sizes = blend_sizes = parse_sizes(args.sizes)
    infer_sizes, blend_sizes = infer_sizes or INFER_SIZES, blend_sizes or BLEND_SIZES
    if args.threads:
        torch.set_num_threads(args.threads)
    from engine.denoiser import Denoiser, pick_device

    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise InputError(str(e)) from None
    models, note = load_models(args.weights, args.random_init)
    if note:
        print(note)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}")
    copy = CopyProbe(device, args.copy_mb)
    bandwidth = copy.median()
    print(f"device {device} ({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus")
    print(f"large-copy bandwidth: {bandwidth / 1e9:.2f} GB/s at start ({args.copy_mb} MB float32 copy_, read + write; "
          "each blend's floor uses copies interleaved with its own runs)")

    report = {"device": str(device), "device_name": dev_name, "threads": torch.get_num_threads(),
              "copy_bandwidth_gbs": bandwidth / 1e9, "models": []}
    for name, model in models:
        den = Denoiser(model, str(device))
        infer_runs = args.runs or INFER_RUNS
        blend_runs = args.runs or BLEND_RUNS
        rec = {
            "name": name,
            "params": param_count(model),
            "gflops_per_720p_frame": count_flops(model.cfg, 720, 1280) / 1e9,
            "dtype": str(den.dtype).replace("torch.", ""),
            "levels": list(model.cfg.levels),
            "infer": [bench_infer(den, s, INFER_WARMUP, infer_runs) for s in infer_sizes],
            "blend": [bench_blend(den, s, copy, BLEND_WARMUP, blend_runs) for s in blend_sizes],
            "blend_kernel": den.blend_kernel,
            "backbone_kernel": den.backbone_kernel,
            "stats_kernel": den.stats_kernel,
        }
        report["models"].append(rec)
        print_model(rec)
        del den
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
