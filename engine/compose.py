"""The network-free blend and the controls that drive it: output = noisy + Σ c_i · Ñ_i.

Owns the mapping from what a user asks for (strength, character, per-level coefficients,
AutoTune, luma/chroma gains) to coefficient vectors, and the blend itself in the canonical
layout (noisy (3, H, W), maps (L, 3, H, W)). The blend is torch on any device; the coefficient
math works on L-vectors on the host in NumPy float64 (`*_np`), and hands torch tensors back where
asked (a torch op costs ~10 µs of dispatch here: twenty of them were a tenth of a 720p blend).
No state.

Units: images and maps in 8-bit units (0..255 scale, float). Because the decorrelated maps are
orthogonal with std l_i (decorrelate.py), the removed-noise std of a blend is known in closed
form, sqrt(Σ c_i² l_i²) (METHOD.md eq. 5): that is what "strength" means here.

Luma/chroma: the residual r (per pixel, RGB) splits as r = Y(r)·(1,1,1) + (r − Y(r)·(1,1,1)) with
Y the BT.709 luma weights; both parts are linear in r, so separate luma and chroma coefficients
are still one linear blend: per level, the 3×3 colour matrix cc·I + (cy − cc)·1·yᵀ.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)  # BT.709 Y from linear-coded R, G, B (HD video)
STRENGTH_MAX = 60.0  # above the top level every blend over-smooths; the UI stops here
# Character tilts the weight across the levels by up to this factor between the lightest and the
# heaviest level (×/÷ 4 at the ends relative to the middle at ±1): enough to hear, never a jump.
CHARACTER_TILT = math.log(16.0)
# Without a frame's AutoTune to shape it (no frame yet, tests), the weight is a bump of this width
# (natural log of the level) around the strength, moved by up to CHARACTER_SPAN either way.
CHARACTER_SPAN = math.log(2.5)
CHARACTER_WIDTH = 0.45


@dataclass(frozen=True)
class Mix:
    """What the user asked for. Immutable: the player swaps in a new one on every change.

    strength None = AutoTune (the network's per-frame coefficients); a number = removed-noise
    std in 8-bit units shaped by `character`; `coeffs` (expert mode) overrides both. `luma` and
    `chroma` scale the luma and chroma parts of the residual (1 = as mixed).
    """

    strength: float | None = None  # None: AutoTune; else AutoTune's shape scaled to this std
    character: float = 0.0
    coeffs: tuple[float, ...] | None = None
    luma: float = 1.0
    chroma: float = 1.0

    def with_(self, **kw) -> "Mix":
        return replace(self, **kw)


def as_float64(v) -> np.ndarray:
    """A coefficient vector (torch tensor on any device, NumPy array or sequence) as float64 NumPy
    (no copy where it already is one)."""
    if isinstance(v, torch.Tensor):
        v = v.detach()
        v = (v if v.device.type == "cpu" else v.cpu()).numpy()
    return np.asarray(v, dtype=np.float64)


def strength_of(coeffs, levels) -> float:
    """Removed-noise std of a blend of decorrelated maps: sqrt(Σ c_i² l_i²). Python floats over the
    levels: the compositor asks after every blend, with the caches cold (see character_coefficients_np)."""
    return math.sqrt(sum((c * float(lv)) ** 2 for c, lv in zip(as_float64(coeffs).tolist(), levels)))


@functools.lru_cache(maxsize=16)
def _level_shape(levels: tuple[float, ...]) -> tuple[tuple[bool, ...], tuple[float, ...], tuple[float, ...]]:
    """Per level: whether it carries strength (> 0), its log (0 where not), and its place
    z ∈ [−½, ½] between the lightest and the heaviest level on the log axis."""
    live = tuple(v > 0 for v in levels)
    loglv = tuple(math.log(v) if ok else 0.0 for v, ok in zip(levels, live))
    ll = [x for x, ok in zip(loglv, live) if ok] or [0.0]
    mean, span = sum(ll) / len(ll), max(max(ll) - min(ll), 1e-9)
    return live, loglv, tuple((x - mean) / span for x in loglv)


def character_coefficients_np(levels, strength: float, character: float = 0.0, base=None) -> np.ndarray:
    """Coefficients (L,) float64 with removed-noise std exactly `strength`, shaped by `character`.

    The shape is `base` — the frame's AutoTune coefficients: the network's own judgement of how
    the levels should mix — tilted toward the lighter levels (character −1, keeps texture) or the
    heavier ones (+1, smoother), then scaled so Σ c_i² l_i² = strength². So strength s at
    character 0 is AutoTune's mix made stronger or weaker, and at AutoTune's own strength it *is*
    AutoTune. Without a base, a bump of weight around the level nearest the strength is used.
    strength 0 → all zeros (the identity blend).

    Python floats over the L ≤ 12 levels rather than NumPy: this runs before every blend, right
    after the previous one has streamed a frame through the caches, where each NumPy call costs
    about 40 µs against 1.5 µs hot (measured: 0.49 ms cold for the NumPy version of this function,
    0.20 ms for this one).
    """
    lv = tuple(float(v) for v in levels)
    s = max(float(strength), 0.0)
    if s == 0.0:
        return np.zeros(len(lv))
    ch = max(-1.0, min(1.0, float(character)))
    live, loglv, z = _level_shape(lv)  # the zero level (if any) carries no strength: it gets no weight
    if base is None:
        centre = math.log(s) + ch * CHARACTER_SPAN
        w = [math.exp(-((x - centre) ** 2) / (2 * CHARACTER_WIDTH**2)) for x in loglv]
    else:
        w = [max(b, 0.0) * math.exp(ch * CHARACTER_TILT * zi) for b, zi in zip(as_float64(base).tolist(), z)]
    w = [wi + 1e-12 if ok else 0.0 for wi, ok in zip(w, live)]  # keep a direction where weights vanish
    scale = s / math.sqrt(sum((wi * li) ** 2 for wi, li in zip(w, lv)))
    return np.array([wi * scale for wi in w])


def character_coefficients(levels, strength: float, character: float = 0.0, base: torch.Tensor | None = None) -> torch.Tensor:
    """character_coefficients_np as a float64 torch tensor (L,) on the CPU."""
    return torch.from_numpy(character_coefficients_np(levels, strength, character, base))


def mix_coefficients_np(mix: Mix, levels, auto) -> np.ndarray:
    """The mix's level coefficients (L,) float64 NumPy before its luma and chroma gains, for a
    frame's AutoTune; read-only (may share memory with `auto`). No torch op: this runs before
    every blend (a dozen torch ops were 0.6 ms of a 7 ms 1080p blend, cold)."""
    if mix.coeffs is not None:
        c = np.asarray(mix.coeffs, dtype=np.float64)
        assert c.size == len(levels), f"{c.size} coefficients for {len(levels)} levels"
        return c
    if mix.strength is None:
        return as_float64(auto)
    return character_coefficients_np(levels, mix.strength, mix.character, base=auto)


def gains_np(c: np.ndarray, mix: Mix) -> tuple[np.ndarray, np.ndarray]:
    """Level coefficients (L,) → (luma coefficients, chroma coefficients) with the mix's gains."""
    cy = c if mix.luma == 1.0 else c * mix.luma  # gains of 1 (the usual case) cost no NumPy call
    cc = c if mix.chroma == 1.0 else c * mix.chroma
    return cy, cc


def coefficients_np(mix: Mix, levels, auto) -> tuple[np.ndarray, np.ndarray]:
    """(luma coefficients (L,), chroma coefficients (L,)) float64 NumPy for a mix and a frame's
    AutoTune, read-only: they may share memory with each other and with `auto`."""
    return gains_np(mix_coefficients_np(mix, levels, auto), mix)


def coefficients(mix: Mix, levels, auto: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """coefficients_np as float64 torch tensors (L,) on the CPU, each its own copy."""
    cy, cc = coefficients_np(mix, levels, auto)
    return torch.tensor(cy), torch.tensor(cc)


# Output colour c of level i's 3×3 matrix: cc_i·I + (cy_i − cc_i)·(1, 1, 1)ᵀ·yᵀ (see the module docstring).
_EYE3 = np.eye(3)
_ONES_Y = np.ones((3, 1)) * np.asarray(LUMA_WEIGHTS)[None, :]  # (3, 3): every row is yᵀ


def colour_matrices_np(c_luma, c_chroma) -> np.ndarray:
    """Per-level 3×3 matrices (L, 3, 3) float64 NumPy: output colour c gets Σ_c' W[i, c, c'] · map_i[c'].
    The coefficients: torch tensors or NumPy arrays (L,)."""
    cy = as_float64(c_luma)[:, None, None]
    cc = as_float64(c_chroma)[:, None, None]
    return cc * _EYE3 + (cy - cc) * _ONES_Y


def colour_matrices(c_luma: torch.Tensor, c_chroma: torch.Tensor) -> torch.Tensor:
    """colour_matrices_np as a float64 torch tensor (L, 3, 3) on the CPU."""
    return torch.from_numpy(colour_matrices_np(c_luma, c_chroma))


def blend(noisy: torch.Tensor, maps: torch.Tensor, c_luma: torch.Tensor, c_chroma: torch.Tensor | None = None) -> torch.Tensor:
    """noisy (3, H, W) + Σ_i colour_matrix_i · maps[i] → (3, H, W) float, not clipped.

    maps (L, 3, H, W) on any device; coefficients (L,). With c_chroma None it equals c_luma and
    the blend is the plain `noisy + Σ c_i maps_i`.
    """
    c_chroma = c_luma if c_chroma is None else c_chroma
    l, _, h, w = maps.shape
    wm = colour_matrices(c_luma, c_chroma)  # (L, 3, 3)
    wm = wm.permute(1, 0, 2).reshape(3, 3 * l).to(maps)  # (3, 3L): column (i, c')
    return noisy + (wm @ maps.reshape(3 * l, h * w)).reshape(3, h, w)
