"""Cross-validated training end to end on the real Athabasca sample (a few steps), and the model's
evaluation on another sensor of the same area; the Everest sample as a STAC catalog."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, reproject

from glacierscale.config import GridConfig
from glacierscale.core.tiles import TileSpec
from glacierscale.demo import athabasca_sample
from glacierscale.models import load_model
from glacierscale.models.floor import PhysicsFloor
from glacierscale.train import (
    ChipSource,
    LabelRules,
    TrainConfig,
    TrainRequest,
    evaluate_model,
    everest_sample,
    train_cv,
)
from glacierscale.train.chips import load_stack
from glacierscale.train.leakage import LabelLeakError
from glacierscale.train.shifts import STRESS_SHIFTS, Shift
from glacierscale.train.stress import Scene, markdown, stress_test, summary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(shared_data: Path, sample_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    sample = athabasca_sample(shared_data, sample_cache)
    out = tmp_path_factory.mktemp("model")
    req = TrainRequest(
        name="tiny-athabasca", outlines=sample.reference or "",
        source=ChipSource(sample.catalog, ("green", "red", "swir16"), sample.start,
                          sample.end, ("HLSS30_2.0",)),
        aoi=",".join(map(str, sample.bbox)), folds=2,
        grid=GridConfig.model_validate({"tile_size_px": 64, "resolution": 30.0, "halo_px": 16}),
        rules=LabelRules(ring_px=1, known_within_m=150.0),
        train=TrainConfig(width=8, depth=2, chip_px=64, batch_size=2, steps=2, eval_every=1,
                          precision="fp32"),
        command="pytest", limitations="a smoke test model", floor=True)
    return train_cv(req, str(out), cache=str(sample_cache / "chips")), out, sample


def test_train_cv_writes_a_loadable_model_with_its_record(trained) -> None:
    result, out, _ = trained
    card = result.card
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == ["curves.png", "evaluation.md", "metrics.json", "reliability.png",
                     "tiny-athabasca-0.safetensors", "tiny-athabasca-1.safetensors",
                     "tiny-athabasca.json"]
    assert all((out / w).stat().st_size < 10_000_000 for w in card.weights)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # normalisation from the chips, temperature from the held-out folds, provenance recorded
    assert 0.0 < card.mean[1] < 1.0 and card.temperature > 0
    prov = card.provenance
    assert prov["data"]["items"] == ["hls_s30_2020-09-09"]
    # the card states where the model has been: the labelled box, the instrument, the month
    domain = card.domain
    assert domain["sensors"] == ["sentinel-2-msi"] and domain["collections"] == ["HLSS30_2.0"]
    assert domain["months"] == [9] and domain["resolution_m"] == 30.0
    w, s, e, n = domain["regions"][0]["bbox"]
    assert -117.33 < w < e < -117.20 and 52.15 < s < n < 52.23
    assert len(prov["data"]["outlines_sha256"]) == 64 and prov["command"] == "pytest"
    folds = prov["cross_validation"]["tile_folds"]
    assert set(folds.values()) == {0, 1} and len(folds) == len(result.chips)
    # folds are whole tiles: no tile id in two folds, every labelled pixel in exactly one
    metrics = json.loads((out / "metrics.json").read_text())
    pooled = metrics["held_out"]["pooled"]
    names = set(pooled)
    assert {"U-Net (held-out folds)", "band-ratio (fixed threshold)", "ndsi (fixed threshold)",
            "best threshold (tuned on training folds)", "everything is ice"} <= names
    n = {name: row["n_pixels"] for name, row in pooled.items()}
    assert len(set(n.values())) == 1  # every method on the same pixels
    ice = pooled["everything is ice"]
    assert ice["recall"] == 1.0
    assert ice["precision"] == pytest.approx(metrics["glacier_fraction_of_labelled_pixels"])
    # the band ratio is a strong baseline on clean ice (outlines are mostly clean ice here)
    assert pooled["band-ratio (fixed threshold)"]["iou"] > 0.6
    model = load_model(str(out / "tiny-athabasca.json"))
    assert model.card.weights_hash == card.weights_hash and len(model.members) == 2
    # shipped under the physics floor, with each fold's floor from its own training folds
    assert isinstance(model, PhysicsFloor) and len(card.floor["folds"]) == 2
    assert "U-Net under the physics floor (held-out folds)" in names
    assert model.params.net_temperature == pytest.approx(
        metrics["temperature"]["0"]["all_folds"])


def test_evaluate_on_another_sensor(trained) -> None:
    _, out, sample = trained
    ev, meta = evaluate_model(str(out / "tiny-athabasca.json"), sample.catalog,
                              collections=("HLSL30_2.0",), start=sample.start, end=sample.end,
                              out=str(out / "l30"))
    assert meta["items"] == ["hls_l30_2020-08-16"]
    rows = ev.rows()
    assert rows["U-Net fold models (held-out folds)"]["n_pixels"] == rows["everything is ice"][
        "n_pixels"] > 1000
    assert (out / "l30" / "evaluation.md").read_text().startswith("# tiny-athabasca on")


def test_a_dem_clipped_to_the_outlines_is_refused(shared_data: Path, sample_cache: Path,
                                                  tmp_path: Path) -> None:
    # The sample DEM covers only the outlined glacier: its footprint is the label.
    sample = athabasca_sample(shared_data, sample_cache)
    req = TrainRequest(
        name="leaky", outlines=sample.reference or "",
        source=ChipSource(sample.catalog, ("red", "swir16", "elevation"), sample.start,
                          sample.end, ("HLSS30_2.0",)),
        aoi=",".join(map(str, sample.bbox)), folds=2,
        grid=GridConfig.model_validate({"tile_size_px": 64, "resolution": 30.0, "halo_px": 16}),
        train=TrainConfig(width=8, depth=2, chip_px=64, batch_size=2, steps=1), command="pytest")
    with pytest.raises(LabelLeakError, match=r"'elevation' has data on 100% of the glacier"):
        train_cv(req, str(tmp_path / "m"), cache=str(sample_cache / "chips"))
    assert not (tmp_path / "m").exists()  # refused before any training


def test_everest_catalog_reads_dn_over_255(shared_data: Path, sample_cache: Path) -> None:
    s = everest_sample(shared_data, sample_cache)
    assert s.collections == ("landsat-7-etm-dn",) and s.start == date(2000, 10, 30)
    tile = TileSpec.from_id("32645_0126_1797", 128, 30.0, 0)
    image, items = load_stack(tile, ChipSource(s.catalog, ("blue", "red", "nir"), s.start, s.end))
    assert items == ("LE71400412000304SGS00",)
    # the 30 m tile grid is offset by 2/3 of a pixel from this scene's grid: the loader resamples
    # bilinearly, so compare with GDAL's bilinear reprojection of DN / 255 onto the tile grid
    src = shared_data / "everest"
    expected = np.zeros((3, *tile.shape), np.float32)
    with rasterio.open(src / "LE71400412000304SGS00_RGB.tif") as ds:
        for i, band in enumerate((3, 1)):  # blue is band 3 of the RGB file, red band 1
            reproject(ds.read(band).astype(np.float32) / 255.0, expected[i],
                      src_transform=ds.transform, src_crs=ds.crs, dst_transform=tile.transform,
                      dst_crs=tile.crs, resampling=Resampling.bilinear)
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(image[0][inner], expected[0][inner], atol=2e-3)
    np.testing.assert_allclose(image[1][inner], expected[1][inner], atol=2e-3)
    assert float(image.min()) > 0.0 and float(image.max()) <= 1.0


def test_chips_on_dask_and_from_the_cache_are_identical(shared_data: Path, sample_cache: Path,
                                                        tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from glacierscale.train import build_chips, read_reference

    s = everest_sample(shared_data, sample_cache)
    tiles = [TileSpec.from_id(t, 64, 30.0, 16) for t in ("32645_0252_3595", "32645_0253_3595")]
    source = ChipSource(s.catalog, ("blue", "green", "red", "nir"), s.start, s.end)
    assert s.reference is not None
    outlines = read_reference(s.reference)
    rules = LabelRules()
    local = build_chips(tiles, source, outlines, rules, cache=str(tmp_path / "chips"))
    cached = build_chips(tiles, source, outlines, rules, cache=str(tmp_path / "chips"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        remote = build_chips(tiles, source, outlines, rules, client=client)
    assert len(local) == 2 and len(list((tmp_path / "chips").rglob("*.labels.tif"))) == 2
    for a, b, c in zip(local, cached, remote, strict=True):
        assert a.tile_id == b.tile_id == c.tile_id and a.item_ids == b.item_ids == c.item_ids
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.image, c.image)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.labels, c.labels)
        assert a.glacier_pixels() > 0


def test_stress_table_scores_every_method_on_the_same_held_out_pixels(trained) -> None:
    result, out, sample = trained
    base = Scene("HLS S30", sample.catalog, ("HLSS30_2.0",), sample.start, sample.end)
    l30 = Scene("HLS L30", sample.catalog, ("HLSL30_2.0",), sample.start, sample.end)
    shifts = [STRESS_SHIFTS[0], Shift("haze", "thick", {"level": 2.0}),
              Shift("resolution", "60 m", {"factor": 2})]
    rows = stress_test(str(out / "tiny-athabasca.json"), base, [l30], shifts=shifts)
    assert [(r.shift, r.level) for r in rows] == [("none", "unshifted"), ("haze", "thick"),
                                                 ("resolution", "60 m"), ("sensor", "HLS L30")]
    pooled = result.metrics["held_out"]["pooled"]
    # unshifted, the baselines score exactly as in the training evaluation: same pixels, engine
    assert rows[0].iou["band-ratio"] == pytest.approx(pooled["band-ratio (fixed threshold)"]["iou"])
    assert rows[0].iou["default"] == pytest.approx(
        pooled["U-Net under the physics floor (held-out folds)"]["iou"])
    assert all(0.0 < v <= 1.0 for r in rows for v in r.iou.values())
    doc = summary(rows)
    assert {"shifts", "default_mean_iou", "baseline_mean_iou", "worst_shift_margin"} <= set(doc)
    assert doc["worst_shift_margin"] == pytest.approx(min(r.margin for r in rows), abs=1e-4)
    assert markdown(rows).count("\n") == len(rows) + 1
