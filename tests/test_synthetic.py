"""Generated chart images for training (engine/synthetic.py) and the --synthetic training option."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import checkpoint, synthetic
from engine.images import write_png

REPO = Path(__file__).resolve().parent.parent


def test_chart_images_are_seeded_uint8_and_varied():
    a = synthetic.chart_images(3, 96, seed=5)
    assert all(im.shape == (96, 96, 3) and im.dtype == np.uint8 for im in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, synthetic.chart_images(3, 96, seed=5)))
    assert not np.array_equal(a[0], synthetic.chart_images(1, 96, seed=6)[0])
    assert not np.array_equal(a[0], a[1])
    for im in a:  # real content: many distinct colours and a wide range, not a flat card
        assert int(im.max()) - int(im.min()) > 100
        assert len(np.unique(im.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize("period", [2.0, 3.0, 4.0, 8.0])
@pytest.mark.parametrize("angle", [0.0, math.pi / 2])
def test_grating_has_the_requested_period_and_orientation(period, angle):
    n = 96  # a multiple of every period above: the spectrum's peak falls on one bin
    img = synthetic.grating(n, n, np.random.default_rng(0), period=period, angle=angle).astype(np.float64)
    grey = img.mean(axis=2)
    across, along = (grey.mean(axis=0), grey.mean(axis=1)) if angle == 0.0 else (grey.mean(axis=1), grey.mean(axis=0))
    spectrum = np.abs(np.fft.rfft(across - across.mean()))
    assert int(np.argmax(spectrum)) == round(n / period)
    assert np.ptp(across) > 20  # the lines are there (contrast ≥ 0.15 of full scale)
    assert np.ptp(along) < 1e-9  # and constant along their direction


def test_train_synthetic_share_adds_generated_images(tmp_path):
    from tests.test_weights import chart

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_png(data / f"{i}.png", chart(96, 128, i))
    base = [sys.executable, "-m", "engine.train", "--preset", "live", "--plain", "--data", str(data), "--val", str(data),
            "--steps", "1", "--batch", "2", "--patch", "64", "--threads", "1", "--val-every", "1"]
    r = subprocess.run(base + ["--out", str(tmp_path / "s.pt"), "--synthetic", "0.5"], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(tmp_path / "s.pt")[1]["synthetic_images"] == 3  # 50 % of 6
    r = subprocess.run(base + ["--out", str(tmp_path / "bad.pt"), "--synthetic", "1"], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["error: --synthetic 1: the share must be in [0, 1)"]
    assert not (tmp_path / "bad.pt").exists()
