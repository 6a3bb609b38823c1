"""Image files ↔ uint8 RGB arrays (H, W, 3). Owns reading folders of PNG/JPEG/TIFF, grey or colour."""

from __future__ import annotations

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
    return [read_rgb(p) for p in list_images(folder)]


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path)
