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


def test_default_computes_its_index_channels_and_no_data_mask_in_the_network() -> None:
    import torch

    from glacierscale.models.features import IndexUNet

    model = load_card_model(str(CARDS_DIR / "unet-athabasca-hls.json"))
    assert model.card.params["indices"] == ["ndsi", "red_swir16", "ndwi", "ndvi", "valid"]
    assert all(isinstance(m, IndexUNet) for m in model.members)
    # The card asks the catalog for the six bands only: the indices are not bands to search for.
    assert "ndsi" not in model.card.bands
    x = torch.zeros(1, 6, 32, 32)
    assert model.members[0].features(x).shape[1] == 11
