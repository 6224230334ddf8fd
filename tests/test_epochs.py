"""Multi-epoch runs: parsing epochs, one config per epoch, and ``run --epochs`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from glacierscale.config import RunConfig
from glacierscale.demo import athabasca_sample
from glacierscale.epochs import Epoch, change_out, epoch_config, epoch_out, parse_epochs


def test_years_and_windows_parse_and_bad_ones_are_named() -> None:
    epochs = parse_epochs("2016, 2020,2024-08-01..2024-09-30")
    assert epochs == [Epoch("2016", year=2016), Epoch("2020", year=2020),
                      Epoch("20240801-20240930", start=date(2024, 8, 1), end=date(2024, 9, 30))]
    for bad, words in (("2020", "two or more"), ("2020,2020", "distinct"),
                       ("2020,20x1", "'20x1'"), ("2020,2024-09-30..2024-08-01", "starts after"),
                       ("2020,2024-02-30..2024-03-01", "day is out of range")):
        with pytest.raises(ValueError, match=words):
            parse_epochs(bad)


def test_an_epoch_changes_the_dates_and_the_output_only() -> None:
    cfg = RunConfig(aoi="-117.32,52.156,-117.232,52.21", catalog="c", out="s3://b/run",
                    start=date(2020, 8, 1), end=date(2020, 9, 30), model="default")
    a, b = parse_epochs("2016,2020-08-01..2020-08-31")
    ca, cb = epoch_config(cfg, a), epoch_config(cfg, b)
    assert (ca.out, ca.year, ca.start, ca.end) == ("s3://b/run/epochs/2016", 2016, None, None)
    assert (cb.out, cb.start, cb.end) == (epoch_out("s3://b/run", b), b.start, b.end)
    assert change_out("s3://b/run/", a, b) == "s3://b/run/change/2016_20200801-20200831"
    keep = {"model", "grid", "infer", "collections", "aoi", "catalog", "reference"}
    assert {k: getattr(ca, k) for k in keep} == {k: getattr(cfg, k) for k in keep}


@pytest.mark.integration
def test_run_with_epochs_maps_each_date_then_compares(tmp_path: Path, shared_data: Path,
                                                      sample_cache: Path) -> None:
    sample = athabasca_sample(shared_data, sample_cache)
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("glacierscale")), "run",
           "--aoi=" + ",".join(f"{v:g}" for v in sample.bbox), "--catalog", sample.catalog,
           "--collections", ",".join(sample.collections), "--reference", sample.reference,
           "--model", "band-ratio", "--workers", "1", "--out", str(out),
           "--epochs", "2020-08-16..2020-08-16,2020-09-09..2020-09-09"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("20200816-20200816", "20200909-20200909"):
        manifest = json.loads((out / "epochs" / name / "manifest.json").read_text())
        assert {t["status"] for t in manifest["tiles"]} == {"done"}
    change = out / "change" / "20200816-20200816_20200909-20200909"
    summary = json.loads((change / "change.json").read_text())
    assert [list(e["sensors"]) for e in summary["epochs"]] == [["HLSL30_2.0"], ["HLSS30_2.0"]]
    assert (change / "glaciers.parquet").exists() and (change / "regions.csv").exists()
    assert "change 20200816-20200816 -> 20200909-20200909" in done.stdout
