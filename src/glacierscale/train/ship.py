"""Packaging a trained model into the package's registry layout (``models/cards`` + ``weights``).

The registry resolves ``card:<file>`` in ``glacierscale/models/cards/`` and a card's ``weights``
relative to the card, so a shipped card lists ``../weights/<file>.safetensors``. The weights are
copied byte for byte: their sha256 (``weights_hash``) stays valid.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from glacierscale.models import ModelCard
from glacierscale.models.weights import read_card

#: A shipped weight file must stay small enough for a source distribution and a git repository.
MAX_WEIGHTS_BYTES = 10 * 1024 * 1024


def ship_model(card_path: str | Path, models_dir: str | Path) -> Path:
    """Copy a trained model (card + safetensors beside it) into ``models_dir/cards`` and
    ``models_dir/weights``; returns the shipped card's path.

    Refuses weight files over 10 MB (train a narrower network instead).
    """
    card_path = Path(card_path)
    card = read_card(str(card_path))
    models_dir = Path(models_dir)
    cards, weights = models_dir / "cards", models_dir / "weights"
    cards.mkdir(parents=True, exist_ok=True)
    weights.mkdir(parents=True, exist_ok=True)
    refs = []
    for ref in card.weights:
        src = card_path.parent / ref
        size = src.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise ValueError(f"{src} is {size / 1e6:.1f} MB, over the 10 MB a shipped weight file "
                             "may take: train with a smaller --width or --depth")
        shutil.copyfile(src, weights / Path(ref).name)
        refs.append(f"../weights/{Path(ref).name}")
    shipped = ModelCard.from_dict({**card.to_dict(), "weights": refs})
    out = cards / f"{card.name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(shipped.to_json())
    tmp.replace(out)
    return out
