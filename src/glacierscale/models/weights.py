"""Weights and cards on any fsspec URL: safetensors only, hashed, written atomically.

Pickled checkpoints (``.pt``/``.pth``/``.ckpt``/``.pkl``) are refused: unpickling executes code
from the file, and a model registry that fetches weights from URLs must never do that.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from collections.abc import Sequence
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from glacierscale.models.card import ModelCard

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")
CARD_SUFFIXES = (".json", ".yaml", ".yml")


class PickleRefusedError(ValueError):
    """A pickled checkpoint was offered where safetensors weights are required."""


def pickle_refusal(path: str) -> PickleRefusedError:
    return PickleRefusedError(
        f"{path} is a pickled checkpoint, which glacierscale refuses to load: unpickling runs "
        "arbitrary code from the file. Convert it once, in a trusted environment: load it with "
        "torch.load(path, weights_only=True), build the network, then call "
        "glacierscale.models.save_model(net, card, directory) to write safetensors weights and a "
        "model card; load that card instead.")


def check_not_pickle(path: str, head: bytes | None = None) -> None:
    """Raise :class:`PickleRefusedError` for pickle suffixes or pickle/zip magic bytes."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise pickle_refusal(path)
    # torch.save writes a zip archive (PK..) whose payload is a pickle; plain pickles start 0x80.
    if head is not None and (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise pickle_refusal(path)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def combined_hash(hashes: Sequence[str]) -> str:
    """Hash of an ensemble: one member hash gives itself, several give the sha256 of the list."""
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def join_url(base_dir: str, ref: str) -> str:
    """Resolve a weights reference relative to the folder of its card (URLs and paths alike)."""
    if "://" in ref or ref.startswith("/"):
        return ref
    proto, _, rest = base_dir.rpartition("://")
    joined = posixpath.normpath(posixpath.join(rest or base_dir, ref))
    return f"{proto}://{joined}" if proto else joined


def parent_url(url: str) -> str:
    proto, _, rest = url.rpartition("://")
    parent = posixpath.dirname(rest) or "."
    return f"{proto}://{parent}" if proto else parent


def read_bytes(url: str) -> bytes:
    """Whole file from any fsspec URL or local path, with a clear error when it is missing."""
    try:
        with fsspec.open(url, "rb") as f:
            data: bytes = f.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"model file not found: {url}") from exc
    return data


def read_card(url: str) -> ModelCard:
    """Read a JSON/YAML model card from any fsspec URL."""
    check_not_pickle(url)
    if not url.lower().endswith(CARD_SUFFIXES):
        raise ValueError(f"{url}: a model card is a .json, .yaml or .yml file")
    return ModelCard.from_text(read_bytes(url).decode("utf-8"), source=url)


def load_state(url: str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a safetensors file: (state dict on CPU, sha256 of the file)."""
    check_not_pickle(url)
    data = read_bytes(url)
    check_not_pickle(url, data[:8])
    try:
        state = st_load(data)
    except Exception as exc:  # safetensors raises its own error type for a bad header
        raise ValueError(f"{url} is not a valid safetensors file ({exc}); glacierscale reads "
                         "weights only as safetensors") from exc
    return state, sha256_bytes(data)


def state_dict_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The network weights of a registry model or bare network, CPU and contiguous."""
    net = getattr(model, "net", model)
    return {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}


def _write_atomic(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        # Object stores publish a single PUT atomically.
        fs.pipe_file(path, data)


def save_model(model: nn.Module, card: ModelCard, directory: str) -> ModelCard:
    """Write ``<name>.safetensors`` (or ``<name>-<i>.safetensors`` per ensemble member) and the card
    ``<name>.json`` into ``directory`` (a local path or fsspec URL); returns the card written.

    The card is written last, with the weight file names and their sha256 filled in, so a card on
    storage always points at complete weights. ``model`` may be a bare network (e.g. a
    :class:`~glacierscale.models.unet.UNet`), a registry model or an ensemble.
    """
    members = list(getattr(model, "members", []))
    nets = members or [model]
    names = ([f"{card.name}.safetensors"] if len(nets) == 1
             else [f"{card.name}-{i}.safetensors" for i in range(len(nets))])
    hashes = []
    for net, name in zip(nets, names, strict=True):
        blob = st_save(state_dict_of(net), metadata={"card": card.name})
        _write_atomic(join_url(directory, name), blob)
        hashes.append(sha256_bytes(blob))
    final = ModelCard.from_dict({**card.to_dict(), "weights": names,
                                 "weights_hash": combined_hash(hashes)})
    _write_atomic(join_url(directory, f"{card.name}.json"), final.to_json().encode())
    return final


def card_weights_hash(card: ModelCard, hashes: Sequence[str]) -> str:
    """Check loaded weights against the card's hash (if it has one); return the effective hash."""
    got = combined_hash(hashes)
    if card.weights_hash and card.weights_hash != got:
        raise ValueError(f"weights of model {card.name!r} do not match the card's weights_hash "
                         f"({card.weights_hash[:12]}... expected, {got[:12]}... found): the files "
                         "were changed or corrupted; re-save them with save_model")
    return got


def load_weights_into(net: nn.Module, state: dict[str, Any], source: str) -> None:
    """Load a state dict strictly, naming the mismatch and the likely fix."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source} does not fit the architecture of its card (check the card's "
                         f"'architecture', 'params' and number of bands): {exc}") from exc
