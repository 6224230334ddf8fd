"""A run's inference runtime can be pinned in its config: it is part of the config token (so a
tile computed with another runtime is not taken for this run's), a malformed one is refused, and
the worker's held model is prepared for it. Unpinned, the run measures it once and records it in
its output, and the resume of the same settings reuses the record instead of measuring anew."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from distributed import Client, LocalCluster

from glacierscale.config import InferConfig, RunConfig
from glacierscale.infer import RuntimeChoice
from glacierscale.infer.worker import ModelPlugin, worker_model
from glacierscale.run import RUNTIME_KEY, fix_runtime


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



def test_a_run_s_runtime_equal_to_the_worker_s_static_one_prepares_nothing_again() -> None:
    """The plugin prepares the static choice at worker start; the run's measured choice is often
    that one, and its first tile must not prepare the model again."""
    plugin = ModelPlugin("band-ratio", InferConfig())
    plugin.setup(SimpleNamespace(name="w", address="inproc://w",
                                 state=SimpleNamespace(nthreads=1)))
    model, rt = worker_model("band-ratio", InferConfig())
    again = worker_model("band-ratio", InferConfig(), rt.choice().token())
    assert again[1] is rt and again[0] is model
    other = "cpu/fp32/nchw" if rt.layout == "channels_last" else "cpu/fp32/channels_last"
    assert worker_model("band-ratio", InferConfig(), other)[1].choice().token() == other


def test_an_unpinned_run_measures_once_and_its_resume_reuses_the_record(tmp_path: Path) -> None:
    cfg = _cfg(out=str(tmp_path), model="default")
    first = fix_runtime(cfg)
    choice = RuntimeChoice.parse(first.infer.runtime)
    record = json.loads((tmp_path / RUNTIME_KEY).read_text())
    assert record["config_token"] == cfg.token() and record["runtime"]["token"] == choice.token()
    assert record["runtime"]["evidence"]["probe_windows_per_s"]  # what was measured is kept
    assert first.token() != cfg.token()  # the choice is part of the run's token
    # The resume takes the record, whatever a probe would say now: make the record say
    # something a probe of this machine would not pick for it, and it is what comes back.
    other = "cpu/fp32/nchw" if choice.layout == "channels_last" else "cpu/fp32/channels_last"
    record["runtime"].update(zip(("device", "precision", "layout"), other.split("/"),
                                 strict=True))
    (tmp_path / RUNTIME_KEY).write_text(json.dumps(record))
    assert fix_runtime(cfg).infer.runtime == other
    # Other settings in the same output measure anew and replace the record.
    moved = _cfg(out=str(tmp_path), model="default", infer=InferConfig(window_px=256))
    again = fix_runtime(moved)
    assert json.loads((tmp_path / RUNTIME_KEY).read_text())["config_token"] == moved.token()
    assert again.infer.runtime and again.infer.window_px == 256


def test_a_pinned_runtime_is_kept_and_nothing_is_measured(tmp_path: Path) -> None:
    cfg = _cfg(out=str(tmp_path), infer=InferConfig(runtime="cpu/fp32/nchw"))
    assert fix_runtime(cfg) is cfg
    assert not (tmp_path / RUNTIME_KEY).exists()


def test_the_probe_runs_on_a_worker_of_the_run_s_cluster(tmp_path: Path) -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pinned = fix_runtime(_cfg(out=str(tmp_path), model="ndsi"), client)
        held = client.run(lambda: sorted(__import__("glacierscale.infer.worker",
                                                    fromlist=["x"])._MODELS))
    assert RuntimeChoice.parse(pinned.infer.runtime).device == "cpu"
    assert list(held.values()) == [["ndsi"]]  # the worker loaded the model to measure it


def test_an_unreadable_runtime_record_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / RUNTIME_KEY).write_text("{not json")
    pinned = fix_runtime(_cfg(out=str(tmp_path), model="ndsi"))
    record = json.loads((tmp_path / RUNTIME_KEY).read_text())
    assert record["runtime"]["token"] == pinned.infer.runtime and record["model"] == "ndsi"
