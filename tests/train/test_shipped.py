"""The shipped models: cards load with their weights (hash checked), stay small, and record how
they were made and judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from glacierscale.models import load_card_model
from glacierscale.models.registry import CARDS_DIR

SHIPPED = {
    "unet-athabasca-hls": ("blue", "green", "red", "nir", "swir16", "swir22"),
    "unet-everest-rgbn": ("blue", "green", "red", "nir"),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_card_loads_and_records_its_making(name: str) -> None:
    card_path = CARDS_DIR / f"{name}.json"
    model = load_card_model(str(card_path))  # raises if a weight file does not match the hash
    card = model.card
    assert card.bands == SHIPPED[name] and card.resolution_m == 30.0
    assert len(card.weights) == 4 and len(model.members) == 4  # the 4 fold models
    for ref in card.weights:
        assert (card_path.parent / ref).stat().st_size < 10 * 1024 * 1024
    prov = card.provenance
    assert prov["command"].startswith("glacierscale train ") and f"--name {name}" in prov["command"]
    assert len(prov["data"]["outlines_sha256"]) == 64
    assert set(prov["cross_validation"]["tile_folds"].values()) == {0, 1, 2, 3}
    pooled = prov["metrics_held_out_pooled"]
    assert "everything is ice" in pooled and prov["limitations"]
    assert 0.5 < card.temperature < 5.0
    assert Path(prov["data"]["outlines"]).name in {"athabasca_outline.shp",
                                                   "15_rgi60_glacier_outlines.gpkg"}
