"""Temperature scaling: fitted from held-out pixels, stored in a file, applied through the card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glacierscale.models import (
    fit_temperature,
    load_model,
    read_calibration,
    with_temperature,
    write_calibration,
)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_t: float) -> None:
    rng = np.random.default_rng(42)
    z = rng.normal(0.0, 3.0, 200_000)
    y = (rng.random(z.size) < 1.0 / (1.0 + np.exp(-z / true_t))).astype(float)
    z[:10] = np.nan  # non-finite pairs are ignored
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.05)


def test_fit_rejects_bad_labels_and_empty_input() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        fit_temperature(np.zeros(3), np.array([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="no finite"):
        fit_temperature(np.full(3, np.nan), np.zeros(3))


def test_calibration_file_round_trip_and_application(tmp_path: Path) -> None:
    path = str(tmp_path / "calibration.json")
    write_calibration(path, 1.8, fitted_on="unit test")
    assert read_calibration(path) == 1.8
    base = load_model("band-ratio")
    cal = with_temperature(base, path)
    assert cal.card.temperature == 1.8 and base.card.temperature == 1.0
    assert cal.card.weights_hash == base.card.weights_hash
    assert with_temperature(base, 0.7).card.temperature == 0.7
    (tmp_path / "bad.yaml").write_text("temp: 2\n")
    with pytest.raises(ValueError, match="'temperature' key"):
        read_calibration(str(tmp_path / "bad.yaml"))
    with pytest.raises(ValueError, match="> 0"):
        write_calibration(path, -1.0)
