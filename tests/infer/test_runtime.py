"""Device and precision selection, including every GPU branch, and graceful CPU fallback here."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from glacierscale.config import InferConfig
from glacierscale.infer import (
    Capabilities,
    Runtime,
    choose_runtime,
    predict_tile,
    probe_capabilities,
    resolve_runtime,
)
from glacierscale.infer.prepared import bf16_accuracy, prepare
from glacierscale.infer.runtime import set_cpu_threads
from glacierscale.models import load_model, seeded_unet

NO_GPU = Capabilities(cuda_devices=0, cpu_threads=2, cpu_avx512_bf16=True)
H100 = Capabilities(cuda_devices=2, cuda_bf16=True, cpu_threads=32)
T4 = Capabilities(cuda_devices=1, cuda_bf16=False, cpu_threads=8)


def _cfg(**kw: object) -> InferConfig:
    return InferConfig.model_validate(kw)


def test_gpu_choices() -> None:
    rt, notes = choose_runtime(_cfg(), H100)
    assert (rt.device, rt.precision, rt.channels_last, rt.pin_memory) == ("cuda:0", "bf16", True,
                                                                          True)
    assert rt.prefetch > 0 and rt.precision_auto and rt.device_windows and not notes
    rt, _ = choose_runtime(_cfg(device="cuda:1", precision="fp16"), H100)
    assert (rt.device, rt.precision) == ("cuda:1", "fp16")
    rt, notes = choose_runtime(_cfg(device="cuda:5"), H100)
    assert rt.device == "cuda:0" and "only 2 GPU" in notes[0][1]
    rt, _ = choose_runtime(_cfg(), T4)
    assert rt.precision == "fp16"
    rt, notes = choose_runtime(_cfg(precision="bf16"), T4)
    assert rt.precision == "fp16" and "no bf16" in notes[0][1]
    rt, _ = choose_runtime(_cfg(device="cpu"), H100)
    assert rt.device == "cpu" and rt.threads == 32 and not rt.pin_memory
    rt, _ = choose_runtime(_cfg(), H100, compile=True)
    assert rt.compile is True


def test_cpu_choices_and_fallbacks() -> None:
    rt, notes = choose_runtime(_cfg(device="cuda"), NO_GPU)
    assert rt.device == "cpu" and notes[0][0] == logging.WARNING
    assert "no CUDA GPU is visible" in notes[0][1] and "falling back to CPU" in notes[0][1]
    rt, notes = choose_runtime(_cfg(), NO_GPU)
    assert (rt.device, rt.precision, rt.channels_last) == ("cpu", "fp32", True) and not notes
    assert not rt.device_windows, "CPU reads lazy inputs window by window"
    amx = Capabilities(cpu_amx_bf16=True, cpu_avx512_bf16=True, cpu_threads=4)
    rt, _ = choose_runtime(_cfg(), amx)
    assert rt.precision == "bf16" and rt.precision_auto
    rt, notes = choose_runtime(_cfg(precision="fp16"), NO_GPU)
    assert rt.precision == "fp32" and "fp16" in notes[0][1]
    rt, notes = choose_runtime(_cfg(precision="bf16"), Capabilities())
    assert rt.precision == "fp32" and "AVX512-BF16" in notes[0][1]
    rt, _ = choose_runtime(_cfg(precision="bf16"), NO_GPU)
    assert rt.precision == "bf16" and not rt.precision_auto
    with pytest.raises(ValueError, match="cuda:N"):
        choose_runtime(_cfg(device="gpu0"), NO_GPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")
def test_asking_for_cuda_without_a_gpu_logs_one_line_and_runs_on_cpu(
        caplog: pytest.LogCaptureFixture) -> None:
    assert probe_capabilities().cuda_devices == 0
    cfg = _cfg(device="cuda:0", window_px=32)
    img = np.random.default_rng(0).uniform(0.05, 0.5, (2, 40, 40)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="glacierscale.infer"):
        p1 = predict_tile(load_model("band-ratio"), img, cfg)
        p2 = predict_tile(load_model("band-ratio"), img, cfg)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 1  # one line per process (it may have been logged by an earlier test)
    assert resolve_runtime(cfg).device == "cpu"
    np.testing.assert_array_equal(p1.prob, p2.prob)


def test_baselines_stay_fp32_and_bf16_accuracy_is_measured() -> None:
    rt = Runtime(precision="bf16", precision_auto=True, threads=2)
    prep = prepare(load_model("band-ratio"), rt, 32, "gaussian")
    assert prep.rt.precision == "fp32"
    unet = seeded_unet(bands=("green", "red", "swir16"), width=8, depth=2)
    diff, flips = bf16_accuracy(unet.logits, 3, torch.device("cpu"))
    assert 0 < diff < 0.5 and 0 <= flips < 0.5
    # Auto-chosen CPU bf16 is kept only when accurate enough; an explicit request is honoured.
    prep = prepare(unet, rt, 32, "gaussian")
    assert prep.rt.precision == ("bf16" if diff <= 5e-3 and flips <= 1e-3 else "fp32")
    assert prepare(unet, Runtime(precision="bf16"), 32, "gaussian").rt.precision == "bf16"


def test_explicit_cpu_bf16_runs_and_stays_close_to_fp32() -> None:
    unet = seeded_unet(bands=("green", "red", "swir16"), width=8, depth=2)
    img = np.random.default_rng(1).uniform(0.05, 0.5, (3, 64, 64)).astype(np.float32)
    cfg = _cfg(window_px=64)
    p32 = predict_tile(unet, img, cfg, runtime=Runtime(threads=2))
    p16 = predict_tile(unet, img, cfg, runtime=Runtime(precision="bf16", threads=2))
    assert 0 < np.abs(p16.prob - p32.prob).mean() < 0.05


def test_prefetch_thread_and_nchw_give_the_same_answer() -> None:
    unet = seeded_unet(bands=("green", "red", "swir16"), width=8, depth=2)
    img = np.random.default_rng(2).uniform(0.05, 0.5, (3, 100, 70)).astype(np.float32)
    cfg = _cfg(window_px=64, batch_size=2)
    base = predict_tile(unet, img, cfg, runtime=Runtime(threads=2)).prob
    pre = predict_tile(unet, img, cfg, runtime=Runtime(threads=2, prefetch=2)).prob
    assert base.tobytes() == pre.tobytes()
    nchw = predict_tile(unet, img, cfg, runtime=Runtime(threads=2, channels_last=False)).prob
    np.testing.assert_allclose(nchw, base, atol=1e-5)


def test_compiled_forward_gives_the_same_answer() -> None:
    """torch.compile is optional; the eager backend exercises the path without a C++ toolchain."""
    br = load_model("band-ratio")
    img = np.random.default_rng(3).uniform(0.05, 0.5, (2, 70, 70)).astype(np.float32)
    cfg = _cfg(window_px=32)
    base = predict_tile(br, img, cfg, runtime=Runtime(threads=2)).prob
    eager = predict_tile(br, img, cfg, runtime=Runtime(threads=2, compile="eager")).prob
    np.testing.assert_allclose(eager, base, atol=1e-6)


def test_prefetch_errors_reach_the_caller() -> None:
    def tiles():  # type: ignore[no-untyped-def]
        yield "a", np.zeros((2, 40, 40), np.float32)
        raise OSError("read failed")

    rt = Runtime(threads=2, prefetch=2)
    from glacierscale.infer import predict_tiles

    with pytest.raises(OSError, match="read failed"):
        list(predict_tiles(load_model("band-ratio"), tiles(), _cfg(window_px=32), runtime=rt))


def test_thread_count_is_fixed_by_the_runtime() -> None:
    before = torch.get_num_threads()
    try:
        predict_tile(load_model("band-ratio"), np.ones((2, 8, 8), np.float32), _cfg(window_px=8),
                     runtime=Runtime(threads=1))
        assert torch.get_num_threads() == 1
        set_cpu_threads(1)
        assert resolve_runtime(_cfg(device="cpu")).threads == 1
    finally:
        set_cpu_threads(None)
        torch.set_num_threads(before)
    assert resolve_runtime(_cfg(device="cpu")).threads == probe_capabilities().cpu_threads


def test_cpu_threads_never_exceed_what_the_process_was_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's worker processes start with OMP_NUM_THREADS=1: torch must not widen that to every
    core (a local cluster would run workers x cores threads on its cores)."""
    import os

    from glacierscale.infer.runtime import _cpu_threads, available_cores

    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    monkeypatch.delenv("GLACIERSCALE_TORCH_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _cpu_threads() == 1
    monkeypatch.setenv("GLACIERSCALE_TORCH_THREADS", str(cores + 7))
    assert _cpu_threads() == cores, "never more threads than cores"
    monkeypatch.delenv("GLACIERSCALE_TORCH_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _cpu_threads() == cores
    gdal_before, torch_before = os.environ.get("GDAL_NUM_THREADS"), torch.get_num_threads()
    set_cpu_threads(1)
    try:
        assert os.environ["GDAL_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
    finally:
        set_cpu_threads(None)
        torch.set_num_threads(torch_before)
    assert os.environ.get("GDAL_NUM_THREADS") == gdal_before
