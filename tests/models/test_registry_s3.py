"""Cards and weights on a real S3-compatible store (moto server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
import pytest
import torch

from glacierscale.models import Ensemble, ModelCard, UNet, load_model, save_model
from glacierscale.testing.services import s3_server

pytestmark = pytest.mark.integration


@pytest.fixture()
def s3_endpoint() -> Iterator[str]:
    with s3_server() as url:
        old = fsspec.config.conf.get("s3")
        # fsspec's config is how users point s3:// at a private endpoint, too.
        fsspec.config.conf["s3"] = {"endpoint_url": url, "key": "test", "secret": "test"}
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("models")
        try:
            yield url
        finally:
            if old is None:
                fsspec.config.conf.pop("s3", None)
            else:
                fsspec.config.conf["s3"] = old
            fsspec.filesystem("s3").clear_instance_cache()


def test_ensemble_saved_to_and_loaded_from_s3(s3_endpoint: str) -> None:
    torch.manual_seed(0)
    nets = [UNet(2, 1, width=8, depth=2).eval() for _ in range(2)]
    card = ModelCard(name="s3m", architecture="unet", bands=("red", "swir16"), mean=(0.2, 0.1),
                     std=(0.1, 0.1), params={"width": 8, "depth": 2})
    saved = save_model(Ensemble(nets, card), card, "s3://models/glacier/v1")
    m = load_model("s3://models/glacier/v1/s3m.json")
    assert isinstance(m, Ensemble) and m.card.weights_hash == saved.weights_hash
    x = torch.randn(1, 2, 32, 32)
    with torch.inference_mode():
        assert torch.equal(m.sample_logits(x)[0], nets[0](x))
    assert load_model("s3://models/glacier/v1").card == saved
