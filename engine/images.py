"""Image files ↔ uint8 RGB arrays (H, W, 3). Owns reading folders of PNG/JPEG/TIFF, grey or colour, and
checking before a long run that its output file can be written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def read_rgb(path: str | Path) -> np.ndarray:
    """Any Pillow-readable image → uint8 (H, W, 3); grey is replicated to three channels."""
    with Image.open(path) as im:
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
        except (OSError, ValueError) as e:  # Pillow: UnidentifiedImageError (an OSError), truncated data
            raise SystemExit(f"error: {p}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path)


def check_output(path: str | os.PathLike, what: str) -> str:
    """'' if `path` can be written (its folder is made), else one line saying why. Asked before a
    long run, so that its results are not lost to an unwritable path at the end."""
    p = Path(path)
    existed = p.exists()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a"):
            pass
    except OSError as e:
        return f"{path}: cannot write the {what} ({e.strerror})"
    if not existed:
        p.unlink(missing_ok=True)
    return ""
