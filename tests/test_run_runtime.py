"""A run's inference runtime can be pinned in its config: it is part of the config token (so a
tile computed with another runtime is not taken for this run's), a malformed one is refused, and
the worker's held model is prepared for it."""

from __future__ import annotations

import pytest

from glacierscale.config import InferConfig, RunConfig
from glacierscale.infer import RuntimeChoice
from glacierscale.infer.worker import worker_model


def _cfg(**kw: object) -> RunConfig:
    return RunConfig(aoi="-117.3,52.16,-117.2,52.2", catalog="c", **kw)


def test_a_pinned_runtime_is_in_the_token_an_unset_one_changes_nothing() -> None:
    base = _cfg()
    pinned = _cfg(infer=InferConfig(runtime="cpu/fp32/nchw"))
    assert pinned.token() != base.token()
    assert _cfg(infer=InferConfig(runtime="")).token() == base.token()
    with pytest.raises(ValueError, match="runtime"):
        InferConfig(runtime="gpu/fp32")


def test_the_held_model_is_prepared_for_the_pinned_runtime() -> None:
    for token in ("cpu/fp32/nchw", "cpu/fp32/channels_last"):
        model, rt = worker_model("ndsi", InferConfig(), token)
        assert rt.choice() == RuntimeChoice.parse(token), token
        assert model.card.name == "ndsi"
