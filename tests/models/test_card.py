"""Model cards: a frozen value that round-trips through JSON and YAML and rejects bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from glacierscale.models import ModelCard


def _card(**kw: object) -> ModelCard:
    base: dict[str, object] = dict(
        name="m", architecture="unet", bands=("red", "swir16", "elevation"),
        mean=(0.2, 0.1, 2000.0), std=(0.1, 0.1, 800.0), params={"width": 8, "depth": 2},
        provenance={"folds": [0, 1]})
    base.update(kw)
    return ModelCard(**base)  # type: ignore[arg-type]


def test_round_trip_json_and_yaml() -> None:
    card = _card(temperature=1.7, weights=("a.safetensors",), weights_hash="ab" * 32)
    assert ModelCard.from_text(card.to_json()) == card
    assert ModelCard.from_text(yaml.safe_dump(card.to_dict())) == card
    assert json.loads(card.to_json())["bands"] == ["red", "swir16", "elevation"]
    assert card.tag == "m@" + "ab" * 6


def test_card_is_frozen_and_hashable_with_read_only_mappings() -> None:
    card = _card()
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        card.params["width"] = 4  # type: ignore[index]
    assert hash(card) == hash(_card()) and {card: 1}[_card()] == 1
    assert dataclasses.replace(card, temperature=2.0).temperature == 2.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"mean": (0.1,)}, "one value per band"),
    ({"std": (0.1, 0.0, 1.0)}, "std must be finite and > 0"),
    ({"bands": ("red", "B04", "elevation")}, "unknown band names"),
    ({"bands": ("red", "red", "elevation")}, "duplicate"),
    ({"classes": ("ice", "rock")}, "binary"),
    ({"temperature": 0.0}, "temperature"),
    ({"halo_px": -1}, "halo_px"),
])
def test_invalid_cards_name_the_problem(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _card(**changes)


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    d = _card().to_dict()
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        ModelCard.from_dict({**d, "colour": "blue"})
    del d["bands"]
    with pytest.raises(ValueError, match="missing required fields \\['bands'\\]"):
        ModelCard.from_dict(d)
    with pytest.raises(ValueError, match="mapping"):
        ModelCard.from_text("- just\n- a list\n")


def test_band_indices_select_the_card_order_or_name_what_is_missing() -> None:
    card = _card()
    stack = ["blue", "green", "red", "nir", "swir16", "swir22", "elevation"]
    assert card.band_indices(stack) == [2, 4, 6]
    with pytest.raises(ValueError, match="missing \\['elevation'\\]"):
        card.band_indices(stack[:6])


def test_floor_and_domain_round_trip_read_only() -> None:
    card = _card(floor={"rate": 0.2, "mixture": {"weights": [1.0]}},
                 domain={"regions": [{"name": "a", "bbox": [1, 2, 3, 4]}], "months": [9]})
    back = ModelCard.from_text(card.to_json())
    assert back == card and back.floor["rate"] == 0.2 and back.domain["months"] == [9]
    with pytest.raises(TypeError):
        card.domain["months"] = []  # type: ignore[index]
    assert _card().floor == {} and _card().domain == {}
