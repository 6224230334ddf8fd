"""The shipped models: cards load with their weights (hash checked), stay small, record how they
were made and judged, state where they have been, and the default answers under its physics
floor."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from glacierscale.models import load_card_model, load_model
from glacierscale.models.domain import check_tile
from glacierscale.models.floor import PhysicsFloor, fold_floors
from glacierscale.models.registry import CARDS_DIR

SHIPPED = {
    "unet-athabasca-hls": ("blue", "green", "red", "nir", "swir16", "swir22"),
    "unet-everest-rgbn": ("blue", "green", "red", "nir"),
}
#: No shipped model may have a training label inside this box (W, S, E, N).
HELD_OUT = (86.70, 27.90, 86.95, 28.05)


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
    # the training domain: labelled box, sensors, pixel size, months
    domain = card.domain
    assert domain["regions"] and domain["sensors"] and domain["months"]
    assert domain["resolution_m"] == 30.0


def test_no_shipped_model_has_a_label_in_the_held_out_box() -> None:
    for name in SHIPPED:
        card = load_card_model(str(CARDS_DIR / f"{name}.json")).card
        rules = card.provenance["label_rules"]
        region = card.domain["regions"][0]["bbox"]
        w, s, e, n = HELD_OUT
        overlaps = not (region[2] <= w or e <= region[0] or region[3] <= s or n <= region[1])
        if overlaps:  # a model trained around the box must have kept it out of its labels
            assert [list(HELD_OUT)] == rules["exclude"]
            assert card.domain["excluded"][0]["bbox"] == list(HELD_OUT)


def test_the_default_is_the_network_under_its_physics_floor() -> None:
    import torch

    from glacierscale.models.features import IndexUNet

    model = load_model("default")
    assert isinstance(model, PhysicsFloor)
    card = model.card
    assert card.params["indices"] == ["ndsi", "red_swir16", "ndwi", "ndvi", "valid"]
    assert all(isinstance(m, IndexUNet) for m in model.members)
    assert "ndsi" not in card.bands  # indices are computed in the network, not searched for
    assert model.members[0].features(torch.zeros(1, 6, 32, 32)).shape[1] == 11
    floors = fold_floors(card)
    assert len(floors) == 4 and model.params.imputable == ("blue", "nir", "swir22")
    assert all(0.0 <= f.rate <= 1.0 and f.mixture.dims == 6 for f in floors)
    # the stress table is part of the card, with the command that made it
    stress = card.provenance["stress_test"]
    assert len(stress["shifts"]) == 19 and stress["command"].startswith("glacierscale stress-test")
    assert {r["shift"] for r in stress["shifts"]} == {"none", "gain", "offset", "haze",
                                                      "illumination", "resolution", "missing",
                                                      "sensor"}
    # a uniform patch of bright clean ice: glacier, whoever answers
    ice = np.array([0.62, 0.58, 0.52, 0.42, 0.05, 0.04], np.float32)
    x = torch.from_numpy((ice - np.array(card.mean, np.float32))
                         / np.array(card.std, np.float32))[None, :, None, None]
    with torch.no_grad():
        assert float(model.logits(x.expand(1, 6, 64, 64).contiguous())[0, 0, 32, 32]) > 0


def test_the_default_says_where_it_has_been() -> None:
    card = load_model("default").card
    tile = (-117.30, 52.17, -117.27, 52.19)
    september = [date(2021, 9, 5)]
    assert check_tile(card, tile, collections=["sentinel-2-l2a"], resolution_m=30.0,
                      dates=september)
    assert not check_tile(card, tile, collections=["HLSL30_2.0"], resolution_m=30.0,
                          dates=september)
    assert not check_tile(card, (86.8, 27.95, 86.85, 28.0), collections=["sentinel-2-l2a"],
                          resolution_m=30.0, dates=september)
    assert not check_tile(card, tile, collections=["sentinel-2-l2a"], resolution_m=10.0,
                          dates=september)


@pytest.mark.integration
def test_the_everest_training_labels_stop_at_the_held_out_box(shared_data: Path,
                                                            sample_cache: Path) -> None:
    from glacierscale.train import ChipSource, LabelRules, build_chips, everest_sample
    from glacierscale.train.cv import read_reference
    from glacierscale.train.labels import UNKNOWN, excluded_pixels
    from glacierscale.train.reevaluate import card_tiles

    card = load_card_model(str(CARDS_DIR / "unet-everest-rgbn.json")).card
    sample = everest_sample(shared_data, sample_cache)
    tiles, folds, _ = card_tiles(card)
    rules = LabelRules(**dict(card.provenance["label_rules"]))
    source = ChipSource(sample.catalog, card.bands, sample.start, sample.end)
    # the card records the outlines as the training command named them (relative to the
    # repository root); the test reads the same file from wherever the sample data lies
    outlines = shared_data / "everest" / Path(card.provenance["data"]["outlines"]).name
    chips = build_chips(tiles, source, read_reference(str(outlines)), rules)
    assert {c.tile_id for c in chips} == set(folds)  # the very tiles the model trained on
    inside = 0
    for c in chips:
        box = excluded_pixels(c.tile, [HELD_OUT])
        assert (c.labels[box] == UNKNOWN).all()
        inside += int(box.sum())
    assert inside > 0  # the training tiles do reach into the box: the rule is what keeps it out
