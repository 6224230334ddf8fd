"""The run's runtime: measured once, small and serialisable, the same on every worker."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glacierscale.config import InferConfig
from glacierscale.infer import Runtime, RuntimeChoice, predict_tile, select_runtime
from glacierscale.infer.probe import (
    BF16_MAX_FLIPS,
    BF16_MAX_MEAN_DIFF,
    normalised_sample,
    reduced_precision_accuracy,
)
from glacierscale.models import load_model, seeded_unet

BANDS = ("green", "red", "swir16")


def test_choice_round_trips_through_token_and_json() -> None:
    choice = RuntimeChoice("cpu", "bf16", "nchw", {"windows_per_s": {"x": 1.0}})
    assert choice.token() == "cpu/bf16/nchw"
    assert RuntimeChoice.parse(choice.token()) == choice  # evidence is not part of equality
    back = RuntimeChoice.from_dict(json.loads(json.dumps(choice.to_dict())))
    assert back == choice and back.evidence == {"windows_per_s": {"x": 1.0}}
    assert hash(back) == hash(choice)
    with pytest.raises(ValueError, match="device/precision/layout"):
        RuntimeChoice.parse("cpu-fp32")
    with pytest.raises(ValueError, match="not a runtime choice"):
        RuntimeChoice.parse("tpu/fp32/nchw")


def test_a_choice_becomes_this_process_runtime() -> None:
    cfg = InferConfig(window_px=64)
    rt = RuntimeChoice("cpu", "fp32", "nchw").runtime(cfg, threads=1)
    assert (rt.device, rt.precision, rt.channels_last, rt.threads) == ("cpu", "fp32", False, 1)
    assert not rt.precision_auto, "a recorded choice is never second-guessed by the engine"
    assert rt.choice() == RuntimeChoice("cpu", "fp32", "nchw")
    if not torch.cuda.is_available():
        # A GPU run's choice on a worker without a GPU: the CPU, in full precision.
        rt = RuntimeChoice("cuda", "bf16", "channels_last").runtime(cfg)
        assert (rt.device, rt.precision) == ("cpu", "fp32")


def test_select_runtime_measures_layouts_and_gates_reduced_precision() -> None:
    unet = seeded_unet(bands=BANDS, width=8, depth=2)
    cfg = InferConfig(window_px=64)
    choice = select_runtime(unet, cfg, budget_s=0.5)
    ev = choice.evidence
    assert choice.device == "cpu" and choice.layout in ("channels_last", "nchw")
    assert {"cpu/fp32/channels_last", "cpu/fp32/nchw"} <= set(ev["probe_windows_per_s"])
    assert all(v > 0 for v in ev["probe_windows_per_s"].values())
    assert ev["probe_px"] == 64 and ev["accuracy_input"] == "random field"
    for p, acc in ev["accuracy"].items():  # bf16 where the CPU has it, judged by both gates
        passed = (acc["mean_abs_prob_diff"] <= BF16_MAX_MEAN_DIFF
                  and acc["decision_flips"] <= BF16_MAX_FLIPS)
        assert acc["passed"] == passed
        assert (f"cpu/{p}/channels_last" in ev["probe_windows_per_s"]) == passed
    assert choice.precision == "fp32" or ev["accuracy"][choice.precision]["passed"]
    # The model is left in the chosen layout; the choice runs as a runtime.
    conv = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (
        choice.layout == "channels_last")
    img = np.random.default_rng(0).uniform(0.05, 0.5, (3, 80, 80)).astype(np.float32)
    assert predict_tile(unet, img, cfg, runtime=choice.runtime(cfg)).prob.shape == (80, 80)


def test_gates_use_the_run_sample_when_given() -> None:
    unet = seeded_unet(bands=BANDS, width=8, depth=2)
    sample = np.random.default_rng(1).uniform(0.05, 0.5, (3, 300, 300)).astype(np.float32)
    sample[0, :10] = np.nan  # no data is filled like the engine fills it
    x = normalised_sample(unet, sample, size=128)
    assert x.shape == (1, 3, 128, 128) and torch.isfinite(x).all()
    choice = select_runtime(unet, InferConfig(window_px=64), budget_s=0.3, sample=sample)
    assert choice.evidence["accuracy_input"] == "run sample"
    diff, flips = reduced_precision_accuracy(unet, x, torch.bfloat16)
    assert 0 < diff < 0.5 and 0 <= flips < 0.5


def test_explicit_and_impossible_precisions() -> None:
    # Band arithmetic never runs in reduced precision; only the layout is measured.
    ratio = select_runtime(load_model("band-ratio"), InferConfig(window_px=32), budget_s=0.2)
    assert ratio.precision == "fp32" and ratio.evidence["accuracy"] == {}
    unet = seeded_unet(bands=BANDS, width=8, depth=2)
    fixed = select_runtime(unet, InferConfig(window_px=64, precision="fp32"), budget_s=0.2)
    rates = fixed.evidence["probe_windows_per_s"]
    assert fixed.precision == "fp32" and all("/fp32/" in k for k in rates)


def test_the_engine_keeps_a_recorded_choice() -> None:
    """A runtime from a choice is used as is: no accuracy probe moves it (same tiles on resume)."""
    unet = seeded_unet(bands=BANDS, width=8, depth=2)
    img = np.random.default_rng(2).uniform(0.05, 0.5, (3, 64, 64)).astype(np.float32)
    cfg = InferConfig(window_px=64)
    rt = RuntimeChoice("cpu", "bf16", "channels_last").runtime(cfg, threads=2)
    p16 = predict_tile(unet, img, cfg, runtime=rt).prob
    p32 = predict_tile(unet, img, cfg, runtime=Runtime(threads=2)).prob
    assert 0 < np.abs(p16 - p32).mean() < 0.05


def test_a_cached_preparation_puts_the_model_back_in_its_layout_only_when_moved() -> None:
    from glacierscale.infer.prepared import prepare
    from glacierscale.infer.probe import set_layout

    unet = seeded_unet(bands=BANDS, width=8, depth=2)
    cfg = InferConfig(window_px=64)
    rt = RuntimeChoice("cpu", "fp32", "channels_last").runtime(cfg, threads=1)
    conv = next(m for m in unet.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    first = prepare(unet, rt, 64, "gaussian")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    set_layout(unet, channels_last=False)  # what preparing it for another runtime does
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert prepare(unet, rt, 64, "gaussian") is first
    assert conv.weight.is_contiguous(memory_format=torch.channels_last), "left as moved"
    img = np.random.default_rng(2).uniform(0.05, 0.5, (3, 80, 80)).astype(np.float32)
    np.testing.assert_array_equal(predict_tile(unet, img, cfg, runtime=rt).prob,
                                  predict_tile(unet, img, cfg, runtime=rt).prob)
