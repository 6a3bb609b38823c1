"""Image files ↔ uint8 RGB arrays (H, W, 3). Owns reading folders of PNG/JPEG/TIFF, grey or colour, and
checking before a long run that its output file can be written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


MIN_SIDE = 2  # smaller images have no statistics to decorrelate (a 1×1 one broke ND's and calibration's checks)


def read_rgb(path: str | Path) -> np.ndarray:
    """Any Pillow-readable image → uint8 (H, W, 3); grey is replicated to three channels, and
    16-bit or float grey is scaled to 8 bits (Pillow's own conversion clips it: a 16-bit grey
    ramp came out all white, a float one all black)."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            if im.mode.startswith("I;16") or a.max() > 255:
                a = a / 257.0  # 16-bit: 65535 → 255
            elif im.mode == "F" and a.max() <= 1.0:
                a = a * 255.0  # float in 0..1
            grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"error: {folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise SystemExit(f"error: {folder}: no PNG, JPEG or TIFF images in it")
    return files


def load_folder(folder: str | Path) -> list[np.ndarray]:
    """Every image of a folder; an unreadable one ends the program with one line naming it."""
    out = []
    for p in list_images(folder):
        try:
            out.append(read_rgb(p))
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # Pillow: UnidentifiedImageError (an OSError), truncated data
            raise SystemExit(f"error: {p}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        why = too_small(p, out[-1])
        if why:
            raise SystemExit(f"error: {why}")
    return out


def too_small(path, img: np.ndarray) -> str:
    """'' if an image has the MIN_SIDE it needs, else one line naming the file."""
    h, w = img.shape[:2]
    return f"{path}: {w}×{h} pixels, too small (at least {MIN_SIDE}×{MIN_SIDE})" if min(h, w) < MIN_SIDE else ""


def write_png(path: str | Path, rgb: np.ndarray, cicp: tuple[int, int, int, int] | None = None) -> None:
    """rgb: uint8 (H, W, 3). cicp: (primaries, transfer, matrix, full range) as H.273 numbers them
    (FFmpeg's too), written in PNG's cICP chunk: HDR codes that viewers which read it show as HDR."""
    info = None
    if cicp is not None:
        info = PngImagePlugin.PngInfo()
        info.add(b"cICP", bytes(cicp))  # (before IDAT, where the PNG specification puts it)
    Image.fromarray(rgb).save(path, pnginfo=info)


def check_output(path: str | os.PathLike, what: str) -> str:
    """'' if `path` can be written (its folder is made), else one line saying why. Asked before a
    long run, so that its results are not lost to an unwritable path at the end."""
    if str(path).endswith(("/", os.sep)) or Path(path).is_dir():
        return f"{path}: is a directory (give a file path for the {what})"
    p = Path(path)
    existed = p.exists()
    if existed and not p.is_file():  # a device or a pipe: replaced by the write's rename (/dev/null was)
        return f"{path}: not a regular file (give a file path for the {what})"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a"):
            pass
    except OSError as e:
        return f"{path}: cannot write the {what} ({e.strerror})"
    if not existed:
        p.unlink(missing_ok=True)
    return ""
