"""The registry: names, cards on any fsspec URL, safetensors only, ensembles, integrity."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
import torch

from glacierscale.models import (
    REGISTRY,
    Ensemble,
    ModelCard,
    PickleRefusedError,
    TorchModel,
    UNet,
    available_models,
    load_model,
    register_model,
    save_model,
)
from glacierscale.models.smp import smp_available

BANDS = ("green", "red", "swir16")


def _card(name: str = "tiny") -> ModelCard:
    return ModelCard(name=name, architecture="unet", bands=BANDS, mean=(0.2, 0.2, 0.1),
                     std=(0.1, 0.1, 0.1), params={"width": 8, "depth": 2}, licence="CC-BY-4.0",
                     provenance={"trained_on": "unit test"})


def _net(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(len(BANDS), 1, width=8, depth=2).eval()


def _same_logits(a: torch.nn.Module, b: object) -> bool:
    x = torch.randn(1, len(BANDS), 32, 32)
    with torch.inference_mode():
        return torch.equal(a(x)[:, :1], b.logits(x))  # type: ignore[attr-defined]


def test_builtin_names_and_unknown_names() -> None:
    assert {"band-ratio", "ndsi", "unet"} <= set(available_models())
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*band-ratio"):
        load_model("resnet")


def test_save_then_load_from_a_folder_a_card_path_and_a_memory_url(tmp_path: Path) -> None:
    net = _net(0)
    saved = save_model(net, _card(), str(tmp_path))
    assert saved.weights == ("tiny.safetensors",) and len(saved.weights_hash) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]
    for where in (str(tmp_path), str(tmp_path / "tiny.json")):
        m = load_model(where)
        assert isinstance(m, TorchModel) and m.card == saved and _same_logits(net, m)
    save_model(net, _card(), "memory://models/tiny")
    m = load_model("memory://models/tiny/tiny.json")
    assert m.card.weights_hash == saved.weights_hash and _same_logits(net, m)


def test_ensemble_of_folds_is_first_class(tmp_path: Path) -> None:
    nets = [_net(0), _net(1), _net(2)]
    card = save_model(Ensemble(nets, _card("folds")), _card("folds"), str(tmp_path))
    assert card.weights == ("folds-0.safetensors", "folds-1.safetensors", "folds-2.safetensors")
    m = load_model(str(tmp_path / "folds.json"))
    assert isinstance(m, Ensemble) and len(m.members) == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        s = m.sample_logits(x)
        assert s.shape == (3, 2, 1, 32, 32)
        assert torch.equal(s[1], nets[1](x))
        p = torch.sigmoid(m.logits(x))
        torch.testing.assert_close(p, torch.sigmoid(s).mean(0), atol=1e-5, rtol=0)


def test_weights_relative_to_the_card_and_one_line_registration(tmp_path: Path) -> None:
    """The packaged default model sits at cards/NAME.json with ../weights/NAME.safetensors."""
    net = _net(3)
    saved = save_model(net, _card("default-like"), str(tmp_path / "weights"))
    ref = "../weights/default-like.safetensors"
    card = ModelCard.from_dict({**saved.to_dict(), "weights": [ref]})
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "default-like.json").write_text(card.to_json())
    register_model("default-like", str(tmp_path / "cards" / "default-like.json"))
    try:
        m = load_model("default-like")
        assert _same_logits(net, m) and m.card.weights_hash == saved.weights_hash
    finally:
        REGISTRY.pop("default-like")


def test_pickled_checkpoints_are_refused_with_the_fix(tmp_path: Path) -> None:
    net = _net(0)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    with pytest.raises(PickleRefusedError, match="save_model"):
        load_model(str(tmp_path / "model.pt"))
    # A pickle renamed to .safetensors is caught by its magic bytes.
    saved = save_model(net, _card(), str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "tiny.safetensors")
    with pytest.raises(PickleRefusedError, match="arbitrary code"):
        load_model(str(tmp_path / "tiny.json"))
    assert saved.weights_hash


def test_tampered_weights_missing_weights_and_wrong_architecture(tmp_path: Path) -> None:
    save_model(_net(0), _card(), str(tmp_path))
    save_model(_net(1), _card("other"), str(tmp_path / "other"))
    (tmp_path / "other" / "other.safetensors").replace(tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="do not match the card's weights_hash"):
        load_model(str(tmp_path / "tiny.json"))
    (tmp_path / "tiny.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny\.safetensors"):
        load_model(str(tmp_path / "tiny.json"))
    d = json.loads((tmp_path / "tiny.json").read_text())
    save_model(_net(0), _card(), str(tmp_path))
    d.update(params={"width": 16, "depth": 2}, weights_hash="")
    (tmp_path / "wide.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="does not fit the architecture"):
        load_model(str(tmp_path / "wide.json"))
    with pytest.raises(ValueError, match="weights without a card"):
        load_model(str(tmp_path / "tiny.safetensors"))
    with pytest.raises(ValueError, match="2 model cards"):
        load_model(str(tmp_path))


def test_save_is_atomic_no_temporary_files_left(tmp_path: Path) -> None:
    save_model(_net(0), _card(), str(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    fs = fsspec.filesystem("file")
    assert fs.cat(str(tmp_path / "tiny.json")).startswith(b"{")


@pytest.mark.skipif(smp_available(), reason="segmentation-models-pytorch is installed")
def test_smp_architecture_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    card = ModelCard(name="smp", architecture="smp:Unet", bands=BANDS, mean=(0, 0, 0),
                     std=(1, 1, 1), params={"encoder_name": "resnet34"},
                     weights=("smp.safetensors",))
    (tmp_path / "smp.json").write_text(card.to_json())
    save_model(_net(0), _card("smp"), str(tmp_path / "w"))
    (tmp_path / "w" / "smp.safetensors").replace(tmp_path / "smp.safetensors")
    with pytest.raises(ImportError, match=r"glacierscale\[smp\]"):
        load_model(str(tmp_path / "smp.json"))


def test_weight_free_baselines_round_trip_through_a_card(tmp_path: Path) -> None:
    card = load_model("band-ratio").card
    (tmp_path / "br.json").write_text(card.to_json())
    m = load_model(str(tmp_path / "br.json"))
    x = torch.rand(1, 2, 8, 8) + 0.01
    assert torch.equal(m.logits(x), load_model("band-ratio").logits(x))


def test_cards_dropped_into_the_package_folder_are_found_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glacierscale.models import registry

    save_model(_net(4), _card("dropped"), str(tmp_path / "weights"))
    card = ModelCard.from_dict({**json.loads((tmp_path / "weights" / "dropped.json").read_text()),
                                "weights": ["../weights/dropped.safetensors"]})
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "dropped.json").write_text(card.to_json())
    monkeypatch.setattr(registry, "CARDS_DIR", tmp_path / "cards")
    assert "dropped" in available_models()
    assert load_model("dropped").card.weights_hash == card.weights_hash
