"""The engine: windows, blending, NaN handling, small tiles, packing and streaming, determinism."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from glacierscale.config import InferConfig
from glacierscale.infer import Prediction, predict_tile, predict_tiles
from glacierscale.models import load_model, seeded_unet


def _reflectance(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 0.7, size=(2, *shape)).astype(np.float32)


def _band_ratio_prob(img: np.ndarray) -> np.ndarray:
    z = 4.0 * (np.log(img[0].astype(np.float64)) - np.log(img[1]) - np.log(2.8))
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("blend", ["gaussian", "cosine", "uniform"])
def test_skeleton_path_band_ratio_on_a_1152_tile(blend: str) -> None:
    """A pixel-wise model must come out of blending unchanged, NaN exactly where input is NaN."""
    img = _reflectance((1152, 1152))
    img[0, 100:140, 700:705] = np.nan
    img[1, 1151, 0] = np.nan
    pred = predict_tile(load_model("band-ratio"), img, InferConfig(blend=blend))  # type: ignore[arg-type]
    assert pred.prob.shape == (1152, 1152) and pred.prob.dtype == np.float32
    assert pred.uncertainty is None
    invalid = ~np.isfinite(img).all(axis=0)
    np.testing.assert_array_equal(np.isnan(pred.prob), invalid)
    np.testing.assert_allclose(pred.prob[~invalid], _band_ratio_prob(img)[~invalid], atol=2e-6)
    mask = pred.mask()
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1, 255}
    assert (mask[invalid] == 255).all()


def test_threshold_sits_exactly_on_the_ratio() -> None:
    swir = np.full((1, 64, 64), 0.1, dtype=np.float32)
    img = np.concatenate([swir * 2.8, swir])
    img[0, :, :32] *= 1.01
    pred = predict_tile(load_model("band-ratio"), img, InferConfig(window_px=32))
    assert np.allclose(pred.prob[:, 32:], 0.5, atol=1e-6)
    assert (pred.mask(0.5)[:, :32] == 1).all()
    assert pred.bands()[1] == ("probability",)


@pytest.mark.parametrize("shape", [(1, 1), (5, 300), (511, 513), (40, 40)])
def test_tiles_smaller_than_a_window_are_padded_by_reflection(shape: tuple[int, int]) -> None:
    img = _reflectance(shape, seed=1)
    pred = predict_tile(load_model("band-ratio"), img, InferConfig())
    assert pred.prob.shape == shape
    np.testing.assert_allclose(pred.prob, _band_ratio_prob(img), atol=2e-6)


def test_wrong_band_count_and_shape_name_the_fix() -> None:
    model = load_model("band-ratio")
    with pytest.raises(ValueError, match="band_indices"):
        predict_tile(model, np.zeros((7, 64, 64), np.float32), InferConfig())
    with pytest.raises(ValueError, match="bands, height, width"):
        predict_tile(model, np.zeros((64, 64), np.float32), InferConfig())


def test_all_nan_tile_gives_all_nan_without_failing() -> None:
    img = np.full((2, 700, 600), np.nan, dtype=np.float32)
    img[:, 650:, 550:] = 0.3
    pred = predict_tile(load_model("band-ratio"), img, InferConfig())
    valid = np.isfinite(pred.prob)
    assert valid.sum() == 50 * 50 and valid[650:, 550:].all()


class _LazyTile:
    """A tile read window by window (like a windowed COG reader), counting what it serves."""

    def __init__(self, data: np.ndarray) -> None:
        self._data, self.shape, self.pixels_read = data, data.shape, 0

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        out = self._data[key]
        self.pixels_read += out[0].size
        return out

    def __array__(self, *a: object, **k: object) -> np.ndarray:
        raise AssertionError("the engine materialised the whole tile")


def test_packing_streaming_and_lazy_reads() -> None:
    """Windows of several tiles share batches; results stream back in order, tile by tile, while
    the tile iterator is consumed lazily and inputs are read one window at a time."""
    model = load_model("band-ratio")
    cfg = InferConfig(window_px=64, overlap=0.5, batch_size=5)
    imgs = [_reflectance((100 + 7 * i, 90 + 13 * i), seed=i) for i in range(6)]
    lazies = [_LazyTile(im) for im in imgs]
    pulled: list[int] = []

    def tiles() -> Iterator[tuple[int, _LazyTile]]:
        for i, lz in enumerate(lazies):
            pulled.append(i)
            yield i, lz

    seen = []
    for key, pred in predict_tiles(model, tiles(), cfg):
        # Streaming: when tile `key` comes back, at most the next two tiles have been pulled
        # (its last batch may hold windows of following tiles), never the whole stream.
        assert len(pulled) <= key + 3, (key, pulled)
        np.testing.assert_allclose(pred.prob, _band_ratio_prob(imgs[key]), atol=2e-6)
        seen.append(key)
    assert seen == list(range(6))
    for lz in lazies:
        assert lz.pixels_read >= lz.shape[1] * lz.shape[2]  # read by windows, never whole


class _WindowReader:
    """A reader that decodes blocks straight into the engine's buffer (``read_into``)."""

    def __init__(self, data: np.ndarray) -> None:
        self._data, self.shape = data, data.shape
        self.rows: list[int] = []

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        raise AssertionError("read_into should have been used")

    def read_into(self, out: np.ndarray, row: int, col: int) -> None:
        self.rows.extend(range(row, row + out.shape[1]))
        out[...] = self._data[:, row:row + out.shape[1], col:col + out.shape[2]]


def test_window_readers_fill_the_engine_buffer_and_every_row_is_read_once() -> None:
    img = _reflectance((150, 130), seed=4)
    img[:, :64, :64] = np.nan  # a window with nothing valid is read, then skipped
    cfg = InferConfig(window_px=64, batch_size=3)
    reader = _WindowReader(img)
    model = load_model("band-ratio")
    a = predict_tile(model, reader, cfg).prob
    b = predict_tile(model, img, cfg).prob
    # 16 overlapping windows, yet each row is decoded once: shared rows are kept, not re-read.
    assert a.tobytes() == b.tobytes() and reader.rows == list(range(150))


def _smooth(channels: int, size: int, seed: int, card: object) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(1, channels, max(size // 32, 2), max(size // 32, 2), generator=gen)
    x = torch.nn.functional.interpolate(c, size=(size, size), mode="bilinear")[0].numpy()
    mean = np.asarray(card.mean, dtype=np.float32)[:, None, None]  # type: ignore[attr-defined]
    std = np.asarray(card.std, dtype=np.float32)[:, None, None]  # type: ignore[attr-defined]
    return (x * std + mean).astype(np.float32)


@pytest.fixture(scope="module")
def small_unet():  # type: ignore[no-untyped-def]
    return seeded_unet(bands=("green", "red", "swir16"), width=8, depth=3)


def test_gaussian_blending_has_no_seams_and_beats_uniform(small_unet) -> None:  # type: ignore[no-untyped-def]
    img = _smooth(3, 256, 0, small_unet.card)
    x = (torch.from_numpy(img)[None] - torch.tensor(small_unet.card.mean).view(1, 3, 1, 1)) \
        / torch.tensor(small_unet.card.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        whole = torch.sigmoid(small_unet.logits(x))[0, 0].numpy()
    errs = {}
    for blend in ("gaussian", "uniform"):
        pred = predict_tile(small_unet, img, InferConfig(window_px=128, blend=blend))  # type: ignore[arg-type]
        errs[blend] = float(np.abs(pred.prob - whole)[32:-32, 32:-32].mean())
    assert errs["gaussian"] < 1e-2 and errs["gaussian"] * 5 < errs["uniform"], errs


def test_packed_tiles_equal_tiles_run_alone(small_unet) -> None:  # type: ignore[no-untyped-def]
    cfg = InferConfig(window_px=64, batch_size=4)
    imgs = [_smooth(3, s, i, small_unet.card) for i, s in enumerate((96, 130, 64))]
    alone = [predict_tile(small_unet, im, cfg).prob for im in imgs]
    packed = [p.prob for _, p in predict_tiles(small_unet, enumerate(imgs), cfg)]
    for a, b in zip(alone, packed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


_DETERMINISM = """
import hashlib, sys, numpy as np, torch
from glacierscale.config import InferConfig
from glacierscale.infer import Runtime, predict_tile
from glacierscale.models import seeded_unet
torch.set_num_threads(2)
m = seeded_unet(bands=("green", "red", "swir16"), width=8, depth=3)
img = np.random.default_rng(5).uniform(0, 0.6, (3, 150, 170)).astype(np.float32)
p = predict_tile(m, img, InferConfig(window_px=64, batch_size=3), runtime=Runtime(threads=2))
sys.stdout.write(hashlib.sha256(p.prob.tobytes()).hexdigest())
"""


def test_cpu_results_are_bit_identical_run_to_run_and_process_to_process() -> None:
    """Same runtime (threads included: they set the reduction order), same bits. Threads are
    fixed here, as earlier tests of this process may have set others: the seeded model's batch
    norm statistics come from forward passes, and so depend on them too."""
    import torch

    from glacierscale.infer import Runtime

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = seeded_unet(bands=("green", "red", "swir16"), width=8, depth=3)
    finally:
        torch.set_num_threads(before)
    img = np.random.default_rng(5).uniform(0, 0.6, (3, 150, 170)).astype(np.float32)
    cfg = InferConfig(window_px=64, batch_size=3)
    first = predict_tile(m, img, cfg, runtime=Runtime(threads=2)).prob
    second = predict_tile(m, img, cfg, runtime=Runtime(threads=2)).prob
    assert first.tobytes() == second.tobytes()
    other = subprocess.run([sys.executable, "-c", _DETERMINISM], capture_output=True, text=True,
                           check=True, timeout=120).stdout
    assert other == hashlib.sha256(first.tobytes()).hexdigest()


def test_prediction_mask_and_bands() -> None:
    p = Prediction(np.array([[0.2, 0.7], [np.nan, 0.5]], np.float32),
                   np.array([[0.1, 0.1], [np.nan, 0.0]], np.float32), threshold=0.6)
    np.testing.assert_array_equal(p.mask(), [[0, 1], [255, 0]])
    np.testing.assert_array_equal(p.mask(0.5, nodata=9), [[0, 1], [9, 1]])
    stack, names = p.bands()
    assert stack.shape == (2, 2, 2) and names == ("probability", "uncertainty")


def test_device_tile_engine_is_bit_identical_to_the_host_engine(small_unet) -> None:  # type: ignore[no-untyped-def]
    """The CUDA default (tiles resident on the device, windows cut there) runs on the CPU too: its
    logic must give exactly the host engine's answer, NaNs, skipped windows and order included."""
    from glacierscale.infer import Runtime
    from glacierscale.models import Ensemble

    cfg = InferConfig(window_px=64, batch_size=3)
    imgs = [_smooth(3, s, i, small_unet.card) for i, s in enumerate((96, 40, 150))]
    imgs[0][1, 10:20, 30:35] = np.nan
    imgs[2][:, :70, :] = np.nan  # whole windows without a valid pixel are skipped
    imgs.insert(1, np.full((3, 70, 70), np.nan, np.float32))  # a tile with nothing to compute
    ens = Ensemble([small_unet.net, seeded_unet(bands=("green", "red", "swir16"), width=8,
                                                depth=3, seed=1).net], small_unet.card)
    for model in (small_unet, ens):
        host = list(predict_tiles(model, enumerate(imgs), cfg, runtime=Runtime(threads=2)))
        dev = list(predict_tiles(model, enumerate(imgs), cfg,
                                 runtime=Runtime(threads=2, device_windows=True, prefetch=1)))
        assert [k for k, _ in dev] == [k for k, _ in host] == [0, 1, 2, 3]
        for (_, a), (_, b) in zip(host, dev, strict=True):
            assert a.prob.tobytes() == b.prob.tobytes()
            if a.uncertainty is not None or b.uncertainty is not None:
                assert a.uncertainty is not None and b.uncertainty is not None
                assert a.uncertainty.tobytes() == b.uncertainty.tobytes()
        assert np.isnan(dev[1][1].prob).all() and np.isnan(dev[3][1].prob[:70]).all()


class _CountingUNet(torch.nn.Module):
    """A real U-Net that records the batch size of every forward pass."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.card = inner.card  # type: ignore[assignment]
        self.batches: list[int] = []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return self.inner.logits(x)  # type: ignore[operator, no-any-return]


def test_windows_of_many_tiles_fill_whole_batches(small_unet) -> None:  # type: ignore[no-untyped-def]
    from glacierscale.infer import Runtime

    model = _CountingUNet(small_unet)
    cfg = InferConfig(window_px=64, batch_size=4)
    imgs = [_smooth(3, 96, i, small_unet.card) for i in range(5)]  # 4 windows each: 20 in all
    # Unfolded, so the counting module itself runs (folding runs a copy of the network).
    out = list(predict_tiles(model, enumerate(imgs), cfg, runtime=Runtime(fold_bn=False)))
    assert [k for k, _ in out] == list(range(5)) and model.batches == [4] * 5


@pytest.mark.parametrize("device_windows", [False, True])
def test_a_tile_that_fails_to_read_drops_out_and_the_others_go_on(
        small_unet, device_windows: bool) -> None:  # type: ignore[no-untyped-def]
    """Deferred reads (callables) are run by the engine; a failing one is reported and skipped,
    whichever engine runs them (the device-tile engine reads on its prefetching thread)."""
    from glacierscale.infer import Runtime

    rt = Runtime(threads=2, device_windows=device_windows, prefetch=1 if device_windows else 0)
    cfg = InferConfig(window_px=64, batch_size=3)
    imgs = {k: _smooth(3, 100, i, small_unet.card) for i, k in enumerate("abcd")}

    def read(key: str):  # type: ignore[no-untyped-def]
        def load() -> np.ndarray:
            if key == "b":
                raise OSError("HTTP 503 reading tile b")
            return imgs[key]
        return load

    failed: dict[str, Exception] = {}
    got = dict(predict_tiles(small_unet, ((k, read(k)) for k in imgs), cfg, runtime=rt,
                             on_error=failed.__setitem__))
    assert sorted(got) == ["a", "c", "d"] and list(failed) == ["b"]
    assert isinstance(failed["b"], OSError)
    for k, pred in got.items():
        alone = predict_tile(small_unet, imgs[k], cfg, runtime=rt).prob
        assert pred.prob.tobytes() == alone.tobytes()
    with pytest.raises(OSError, match="tile b"):  # without on_error the failure propagates
        list(predict_tiles(small_unet, ((k, read(k)) for k in imgs), cfg, runtime=rt))


class _BrokenReader:
    """A lazy reader whose rows below ``fail_at`` cannot be read (a truncated file)."""

    def __init__(self, data: np.ndarray, fail_at: int) -> None:
        self._data, self.shape, self.fail_at = data, data.shape, fail_at

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        if key[1].stop > self.fail_at:
            raise OSError("truncated file")
        return self._data[key]


def test_a_tile_failing_halfway_leaves_the_tiles_batched_with_it_intact(small_unet) -> None:  # type: ignore[no-untyped-def]
    cfg = InferConfig(window_px=64, batch_size=5)
    imgs = [_smooth(3, s, i, small_unet.card) for i, s in enumerate((96, 200, 130))]
    tiles = [(0, imgs[0]), (1, _BrokenReader(imgs[1], fail_at=150)), (2, imgs[2])]
    failed: list[int] = []
    got = dict(predict_tiles(small_unet, tiles, cfg, on_error=lambda k, e: failed.append(k)))
    assert failed == [1] and sorted(got) == [0, 2]
    for k in (0, 2):
        # Batch neighbours differ from a run alone: convolution kernels may round differently.
        alone = predict_tile(small_unet, imgs[k], cfg).prob
        np.testing.assert_allclose(got[k].prob, alone, atol=1e-5, rtol=0)
