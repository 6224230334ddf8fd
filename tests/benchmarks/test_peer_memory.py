"""The peer benchmark: its memory measure (peak RSS over a process tree) and its script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20


def _peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_benchmark", REPO / "benchmarks/peer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A parent that holds 150 MiB and starts a child that holds 150 MiB while the parent still holds
# its own: the tree's peaks add up, the parent's alone does not reach 300 MiB. The pages are
# written (``b"\x01" * n``), so they are resident, not just reserved.
_TREE = """
import subprocess, sys, time
held = b"\\x01" * (150 * 2**20)
subprocess.run([sys.executable, "-c",
                "import time; x = b'\\\\x01' * (150 * 2**20); time.sleep(0.5); print(len(x))"],
               check=True)
print(len(held))
"""


def test_peak_rss_is_summed_over_the_process_tree() -> None:
    out = _peer().run_measured([sys.executable, "-c", _TREE])
    assert out["returncode"] == 0, out["stderr"]
    assert out["processes"] >= 2
    assert out["peak_rss_sum_gib"] * 2**30 >= 300 * MIB
    assert out["peak_live_rss_gib"] * 2**30 >= 300 * MIB
    assert out["stdout"].split() == [str(150 * MIB)] * 2


@pytest.mark.integration
def test_the_peer_script_maps_real_tiles_like_the_engine(shared_data: Path, sample_cache: Path,
                                                         tmp_path: Path) -> None:
    """The peer side of the benchmark, on two real tiles: its masks are the engine's masks."""
    from glacierscale.config import GridConfig, InferConfig
    from glacierscale.demo import athabasca_sample
    from glacierscale.infer import predict_tile
    from glacierscale.io.outputs import encode_mask
    from glacierscale.models import load_model

    peer = _peer()
    sample = athabasca_sample(shared_data, sample_cache)
    infer = InferConfig(window_px=64, overlap=0.5, batch_size=4, precision="fp32", device="cpu")
    grid = GridConfig(tile_size_px=64, halo_px=32, resolution=30.0)
    _, spec = peer.run_and_peer_spec(sample, "default", grid, infer, 1, str(tmp_path / "ours"))
    assert len(spec["tiles"]) >= 16  # the benchmark's minimum
    spec["tiles"] = spec["tiles"][5:7]
    (tmp_path / "tiles.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/peer.py"), "--peer",
                           str(tmp_path / "tiles.json"), "--out", str(tmp_path / "peer")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["seconds"]) >= {"load", "infer", "write", "vectorize", "dissolve"}
    assert (tmp_path / "peer" / "inventory.parquet").is_file()

    # The engine on the same pixels, loaded as the peer loads them.
    import odc.stac
    import pystac
    import rasterio
    from odc.geo.geobox import GeoBox

    model = load_model("default")
    items = [pystac.Item.from_file(str(p)) for p in Path(sample.catalog).glob("*.json")]
    items = [i for i in items if i.collection_id == peer.COLLECTION]
    keys = [peer.S30_ASSETS[b] for b in model.card.bands]
    for tile in spec["tiles"]:
        gbox = GeoBox(tuple(tile["shape"]), rasterio.Affine(*tile["transform"]), tile["crs"])
        ds = odc.stac.load(items, bands=keys, geobox=gbox, resampling="bilinear")
        image = np.stack([np.where(ds[k].values[0] == -9999, np.nan,
                                   ds[k].values[0] * np.float32(1e-4)).astype(np.float32)
                          for k in keys])
        image[:, ~np.isfinite(image).all(axis=0)] = np.nan
        h, n = tile["halo_px"], tile["size_px"]
        prob = predict_tile(model, image, infer).prob[h:h + n, h:h + n]
        ours = encode_mask(prob, infer.threshold)
        with rasterio.open(tmp_path / "peer" / tile["tile_id"] / "mask.tif") as src:
            theirs = src.read(1)
        assert np.count_nonzero(ours != theirs) <= 0.001 * ours.size
