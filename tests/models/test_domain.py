"""The training domain of a card, and whether a tile lies in it."""

from __future__ import annotations

from datetime import date

import pytest

from glacierscale.models import ModelCard, load_model
from glacierscale.models.domain import (
    Domain,
    Region,
    box_within,
    boxes_intersect,
    check_tile,
    domain_of,
    sensor_family,
)

ATHABASCA = (-117.32, 52.156, -117.232, 52.21)
HELD_OUT = (86.70, 27.90, 86.95, 28.05)


def _card(domain: Domain | None) -> ModelCard:
    return ModelCard(name="m", architecture="unet", bands=("red", "swir16"), mean=(0.2, 0.1),
                     std=(0.1, 0.1), resolution_m=30.0,
                     domain=domain.to_dict() if domain else {})


def _athabasca() -> ModelCard:
    return _card(Domain(regions=(Region("Athabasca", ATHABASCA),), sensors=("sentinel-2-msi",),
                        collections=("HLSS30_2.0",), resolution_m=30.0, months=(9,)))


def test_a_tile_of_the_training_area_sensor_season_and_pixel_size_is_in_domain() -> None:
    card = _athabasca()
    tile = (-117.30, 52.17, -117.27, 52.19)
    check = check_tile(card, tile, collections=["sentinel-2-l2a"], platforms=["sentinel-2a"],
                       resolution_m=30.0, dates=[date(2021, 9, 3)])
    assert check.in_domain and bool(check) and check.reasons == ()
    # the card survives JSON: the check reads the same domain back
    assert check_tile(ModelCard.from_text(card.to_json()), tile, collections=["HLSS30_2.0"],
                      resolution_m=20.0).in_domain


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"bbox": (86.8, 27.95, 86.85, 28.0)}, "region not seen"),
    ({"collections": ["HLSL30_2.0"]}, "sensor ['landsat-oli'] not seen"),
    ({"platforms": ["landsat-8"], "collections": ["landsat-c2-l2"]}, "landsat-oli"),
    ({"collections": ["landsat-c2-l2"]}, "sensor unknown"),
    ({"collections": []}, "sensor unknown"),
    ({"resolution_m": 10.0}, "pixel size 10 m"),
    ({"resolution_m": 60.0}, "pixel size 60 m"),
    ({"dates": [date(2021, 3, 1)]}, "months [3]"),
])
def test_each_way_out_of_the_domain_is_named(kwargs: dict, reason: str) -> None:
    args = {"bbox": (-117.30, 52.17, -117.27, 52.19), "collections": ["sentinel-2-l2a"],
            "resolution_m": 30.0, "dates": [date(2020, 9, 9)]} | kwargs
    bbox = args.pop("bbox")
    check = check_tile(_athabasca(), bbox, **args)
    assert not check.in_domain
    assert len(check.reasons) == 1 and reason in check.reasons[0]


def test_a_box_held_out_of_the_labels_is_out_of_domain_inside_its_region() -> None:
    card = _card(Domain(regions=(Region("Khumbu", (86.70, 27.85, 87.05, 28.15)),),
                        excluded=(Region("held out", HELD_OUT),)))
    assert not check_tile(card, (86.80, 27.95, 86.85, 28.00))
    assert "held out" in check_tile(card, (86.80, 27.95, 86.85, 28.00)).reasons[0]
    assert check_tile(card, (86.96, 28.06, 87.00, 28.10))  # beside the box
    assert check_tile(card, (86.90, 28.00, 87.00, 28.10))  # straddling its edge


def test_unstated_domain_is_out_and_the_baselines_are_in_everywhere() -> None:
    assert not check_tile(_card(None), ATHABASCA)
    assert "states no training domain" in check_tile(_card(None), ATHABASCA).reasons[0]
    ratio = load_model("band-ratio").card
    assert check_tile(ratio, (170.0, -45.0, 171.0, -44.0), collections=["landsat-c2-l2"],
                      resolution_m=100.0, dates=[date(2020, 1, 5)]).in_domain
    assert domain_of(ratio) == Domain.from_dict(ratio.domain)


def test_boxes_across_the_antimeridian() -> None:
    across = (179.5, 60.0, -179.5, 61.0)
    assert boxes_intersect(across, (-179.8, 60.2, -179.6, 60.4))
    assert boxes_intersect(across, (179.6, 60.2, 179.8, 60.4))
    assert not boxes_intersect(across, (-170.0, 60.2, -169.0, 60.4))
    assert box_within((179.7, 60.2, -179.7, 60.4), across)
    assert not box_within((179.7, 60.2, -179.0, 60.4), across)


def test_sensor_families() -> None:
    assert sensor_family("HLSS30_2.0") == sensor_family("sentinel-2-l2a") == "sentinel-2-msi"
    assert sensor_family("landsat-9") == sensor_family("HLSL30_2.0") == "landsat-oli"
    assert sensor_family("landsat-7") == "landsat-etm+"
    assert sensor_family("landsat-c2-l2") is None


def test_one_warning_counts_the_tiles_out_of_domain_and_why() -> None:
    from glacierscale.models.domain import domain_warning

    card = _athabasca()
    tiles = [(-117.30, 52.17, -117.27, 52.19), (86.8, 27.95, 86.85, 28.0),
             (10.0, 46.0, 10.1, 46.1)]
    checks = [check_tile(card, t, collections=["HLSL30_2.0"], resolution_m=30.0) for t in tiles]
    msg = domain_warning("default@abc", [c.reasons for c in checks])
    assert msg is not None and msg.startswith("3 of 3 tiles lie outside")
    assert "sensor ['landsat-oli'] not seen in training: 3 tiles" in msg
    assert "region not seen in training: 2 tiles" in msg
    assert domain_warning("default", [(), ()]) is None
