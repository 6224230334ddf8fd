"""The spectral-points check on a tiny points file in the layout of the sample's CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glacierscale.models import load_model
from glacierscale.train.spectral_check import (
    assembled_calls,
    read_points,
    shares,
    spectral_check,
    uniform_calls,
)

HEADER = "site_name,image_date,image_product,class,B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B11,B12,NDSI"
#: B2, B3, B4, B8A, B11, B12 of snow, shadowed snow, ice, rock and water
SPECTRA = {1: (0.95, 0.93, 0.9, 0.75, 0.03, 0.02), 2: (0.3, 0.25, 0.2, 0.15, 0.01, 0.01),
           3: (0.45, 0.42, 0.35, 0.2, 0.03, 0.02), 4: (0.08, 0.1, 0.13, 0.2, 0.25, 0.2),
           5: (0.05, 0.06, 0.04, 0.02, 0.01, 0.005)}


def _write(path: Path) -> Path:
    lines = [HEADER]
    for site in ("A", "B"):
        for cls, (b2, b3, b4, b8a, b11, b12) in SPECTRA.items():
            for k in range(3):
                j = 1.0 + 0.02 * k
                lines.append(f"{site},20210801,Sentinel-2_SR,{cls},0,{b2 * j},{b3 * j},{b4 * j},"
                             f"0,0,0,0,{b8a * j},0,{b11 * j},{b12 * j},0")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_points_become_patches_and_the_baselines_call_them(tmp_path: Path) -> None:
    spectra, classes, sites = read_points(_write(tmp_path / "points.csv"))
    assert spectra.shape == (30, 6) and sorted(set(classes.tolist())) == [1, 2, 3, 4, 5]
    ratio = load_model("band-ratio")
    calls = uniform_calls(ratio, spectra, patch_px=16)
    assert calls[classes == 1].all() and calls[classes == 3].all() and not calls[classes == 4].any()
    np.testing.assert_array_equal(assembled_calls(ratio, spectra, sites), calls)
    got = shares(calls, classes)
    assert got["snow"] == 1.0 and got["rock"] == 0.0 and got["accuracy"] == 1.0


def test_the_check_reports_every_method(tmp_path: Path) -> None:
    doc = spectral_check("ndsi", _write(tmp_path / "points.csv"), modes=("uniform",))
    assert doc["points"] == 30 and doc["classes"]["rock"] == 6
    assert set(doc["uniform"]) == {"model", "band ratio", "ndsi"}
    assert doc["uniform"]["model"] == doc["uniform"]["ndsi"] and doc["floor_holds"]


def test_a_point_missing_a_band_is_left_out_and_spoils_no_neighbour(tmp_path: Path) -> None:
    """The engine writes no data for a pixel missing a band; the check leaves such a point out
    instead of feeding the floor a NaN that its windows would spread over the assembled tile."""
    path = _write(tmp_path / "points.csv")
    lines = path.read_text().splitlines()
    lines.append("A,20210801,Sentinel-2_SR,2,0,0.3,0.25,0.2,0,0,0,0,0.15,0,0.01,,0")
    path.write_text("\n".join(lines) + "\n")
    spectra, classes, sites = read_points(path)
    assert spectra.shape == (30, 6) and np.isfinite(spectra).all()
    assert len(classes) == len(sites) == 30
    doc = spectral_check(load_model("default"), path, modes=("assembled",))
    assert doc["points"] == 30
    # every scored point of these clean spectra is called right, by the floored default too
    assert doc["assembled"]["model"]["accuracy"] == doc["assembled"]["ndsi"]["accuracy"] == 1.0
