"""Checkpoint files: one file per model holding {"config", "state_dict", "meta"}.

Owns saving and safe loading (torch.load with weights_only=True) and the one-line errors for a
missing, truncated, foreign or mismatched file. Shipped files are also checked against the
sha256 recorded in weights/SHA256SUMS.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from engine.model import RCDConfig, RCDNet

FORMAT = "rcd-checkpoint/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SUMS_FILE = WEIGHTS_DIR / "SHA256SUMS"


class CheckpointError(Exception):
    """A checkpoint could not be used; the message is one line naming the file and the problem."""


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: RCDNet, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Write atomically (temporary name, then rename) so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def shipped_sums() -> dict[str, str]:
    """{file name: sha256} of the shipped weights."""
    if not SUMS_FILE.exists():
        return {}
    out = {}
    for line in SUMS_FILE.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1]] = parts[0]
    return out


def resolve(name_or_path: str | os.PathLike) -> Path:
    """'live' / 'quality' → the shipped file; anything else is a path."""
    s = str(name_or_path)
    if s in ("live", "quality"):
        return WEIGHTS_DIR / f"rcd_{s}.pt"
    return Path(s)


def load(name_or_path: str | os.PathLike, map_location="cpu") -> tuple[RCDNet, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, meta)."""
    path = resolve(name_or_path)
    if not path.exists():
        hint = " (train one with python -m engine.train)" if str(name_or_path) in ("live", "quality") else ""
        raise CheckpointError(f"{path}: no such weights file{hint}")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a weights file")
    real = path.resolve()  # (through a symlink too: the link's own name bypassed the check)
    if real.parent == WEIGHTS_DIR:
        expected = shipped_sums().get(real.name)
        if expected is not None and sha256(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match weights/SHA256SUMS (file modified or damaged)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files; all mean the same thing here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # torch's weights_only refusal is a paragraph of advice on trusting the file: not the point here
        why = "" if first.startswith("Weights only load failed") else f": {first.split('. ')[0][:160]}"
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or not a checkpoint){why}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an RCD checkpoint (expected format {FORMAT})")
    try:  # a damaged config fails in many ways (wrong types, short lists, negative widths): one line each
        cfg = RCDConfig.from_dict(blob["config"])
        model = RCDNet(cfg)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: invalid model config ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    sd = blob.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: damaged checkpoint (state_dict is not a mapping of tensors)")
    try:
        model.load_state_dict(sd)
    except (RuntimeError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0] if lines else ""
        raise CheckpointError(f"{path}: weights do not match the config: {detail[:200]}") from None
    if not all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()):
        raise CheckpointError(f"{path}: damaged weights (NaN or infinite values)")
    meta = blob.get("meta", {})
    return model.eval(), dict(meta) if isinstance(meta, dict) else {}
