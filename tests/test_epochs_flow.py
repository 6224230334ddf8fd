"""The multi-epoch flow against a real Prefect server: one subflow run per epoch, then the change.

``global_inventory(..., epochs=[...])`` runs in its own process (as a deployment's flow run
would) against ``prefect server start`` on loopback; the server must then hold a parent flow
run, one child flow run per epoch named after it, and the change's artifacts; the outputs are
each epoch's inventory and the comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from glacierscale.demo import athabasca_sample
from glacierscale.testing.stack import prefect_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = ["2020-08-16..2020-08-16", "2020-09-09..2020-09-09"]
NAMES = ["20200816-20200816", "20200909-20200909"]


def test_the_flow_maps_each_epoch_as_a_subflow_and_publishes_the_change(
        tmp_path: Path, shared_data: Path, sample_cache: Path) -> None:
    sample = athabasca_sample(shared_data, sample_cache)
    out = tmp_path / "run"
    params = {"out": str(out), "catalog": sample.catalog,
              "bbox": ",".join(f"{v:g}" for v in sample.bbox),
              "sensors": list(sample.collections), "reference": sample.reference,
              "model": "band-ratio", "cluster": {"n_workers": 1}, "epochs": EPOCHS}
    code = ("import json, sys\n"
            "from glacierscale.orchestrate import global_inventory\n"
            "r = global_inventory(**json.loads(sys.argv[1]))\n"
            "print(json.dumps({'changes': sorted(r['changes'])}))\n")
    with prefect_server(tmp_path / "prefect") as server:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(params)],
                              env=server.env, capture_output=True, text=True, timeout=900,
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {
            "changes": [f"{NAMES[0]}_{NAMES[1]}"]}
        api = server.api_url
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        artifacts = httpx.post(f"{api}/artifacts/filter", json={}, timeout=30).json()
    by_name = {r["name"]: r for r in runs}
    children = [by_name[f"epoch {n}"] for n in NAMES]
    assert all(r["state_type"] == "COMPLETED" for r in children)
    parents = {r["parent_task_run_id"] for r in children}
    assert None not in parents, "each epoch runs as a subflow of the multi-epoch run"
    keys = {a["key"] for a in artifacts}
    assert {"glacierscale-change", "glacierscale-change-regions"} <= keys
    for name in NAMES:
        manifest = json.loads((out / "epochs" / name / "manifest.json").read_text())
        assert {t["status"] for t in manifest["tiles"]} == {"done"}
    change = json.loads((out / "change" / f"{NAMES[0]}_{NAMES[1]}" / "change.json").read_text())
    assert [list(e["sensors"]) for e in change["epochs"]] == [["HLSL30_2.0"], ["HLSS30_2.0"]]
