"""Readers behind one Protocol: odc-stac (default) and stackstac, onto the same tile grid.

Both take *groups* of items: every group becomes one time slice, its items fused first-valid-wins
(the scenes of one acquisition split across MGRS tiles, WRS rows or UTM zones), so a tile on a
granule border is never half empty. Both return a Dataset with dims ``(time, y, x)`` and one
variable per asset key, on exactly the requested GeoBox, lazily (Dask), with float outputs NaN
where nothing was read.

Users of either library feel at home: the odc-stac reader is ``odc.stac.load(geobox=...)``, the
stackstac reader is ``stackstac.stack(epsg=, resolution=, bounds=)`` + ``stackstac.mosaic``.
benchmarks/io_reads.py times both on the same tiles; the faster one is the default.

Both retry a chunk read that still fails after GDAL's own per-request retries (a dropped
connection, a failure GDAL cached), through :func:`read_with_retry` and the one error policy of
:mod:`glacierscale.core.faults`; a permanent fault (missing, denied, corrupt) fails at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import pystac
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.loader._rio import RioDriver, RioReader, rio_read
from stackstac.rio_reader import AutoParallelRioReader

from glacierscale.core import faults
from glacierscale.core.redact import redact_url
from glacierscale.io.cloud import to_gdal_path
from glacierscale.load.env import cloud_read_settings
from glacierscale.load.signing import fresh_href

T = TypeVar("T")

log = logging.getLogger(__name__)

#: First bytes of the raster formats a catalog asset may be in: a file starting otherwise is not
#: a raster GDAL can read (an HTML error page, a truncated upload, random bytes).
RASTER_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",  # TIFF, BigTIFF
                b"\x00\x00\x00\x0cjP  ", b"\xffO\xffQ",  # JPEG 2000 (jp2, j2k)
                b"\x89PNG", b"\xff\xd8\xff", b"\x89HDF", b"CDF\x01", b"CDF\x02")


def probe(uri: str) -> faults.Fault:
    """Settle an ambiguous GDAL failure by reading the object's first bytes with fsspec.

    GDAL reports a failed header request and a corrupt file with the same words (and caches the
    failure), so this asks the object itself, bypassing GDAL: an error answer is classified as
    usual (503: transient, 404: permanent); bytes of a raster format mean the file is fine and
    the read failed on the way (transient), unless it is a TIFF that ends before its last block
    (a truncated upload: no retry reads what is not there); other bytes mean a corrupt or
    foreign file.
    """
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(uri)
        head = bytes(fs.cat_file(path, start=0, end=16))
    except Exception as exc:
        verdict = faults.classify(exc)
        return faults.Fault.PERMANENT if verdict is faults.Fault.AMBIGUOUS else verdict
    if not head.startswith(RASTER_MAGIC):
        return faults.Fault.PERMANENT
    if head.startswith(RASTER_MAGIC[:4]) and _ends_before_its_blocks(uri, fs, path):
        return faults.Fault.PERMANENT
    return faults.Fault.TRANSIENT


def _ends_before_its_blocks(uri: str, fs: Any, path: str) -> bool:
    """Whether the TIFF at ``uri`` is shorter than the end of its last full-resolution block
    (overviews come first in a COG, so the full-resolution blocks reach its end). False when it
    cannot be told: the retries decide then."""
    try:
        size = int(fs.size(path))
        gdal_path = _gdal_path(uri)
        # The reads' own options (no side-car probing), asked afresh, once: the probe must not
        # itself wait out GDAL's retries.
        opts = {**cloud_read_settings(per_read=True), "GDAL_HTTP_MAX_RETRY": "0",
                "CPL_VSIL_CURL_NON_CACHED": gdal_path}
        with rasterio.Env(**opts), rasterio.open(gdal_path) as src:
            end = 0
            for bidx, (bh, bw) in zip(src.indexes, src.block_shapes, strict=True):
                for row in range(-(-src.height // bh)):
                    for col in range(-(-src.width // bw)):
                        offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=bidx)
                        length = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=bidx)
                        if offset and length:
                            end = max(end, int(offset) + int(length))
    except Exception:
        return False
    if end > size:
        log.warning("%s is %d bytes long, its blocks reach byte %d: a truncated file",
                    redact_url(uri), size, end)
        return True
    return False


def _gdal_path(uri: str) -> str:
    try:
        return to_gdal_path(uri)
    except ValueError:
        return uri


def read_with_retry(read: Callable[[], T], uri: str) -> T:
    """``read()`` of the asset at ``uri``, retried on transient faults (see the fault settings).

    GDAL remembers a failed request for a URL and would fail every later open at once, so each
    retry reads with ``CPL_VSIL_CURL_NON_CACHED`` set for that URL: GDAL asks the server again
    (and refreshes what it remembers). Ambiguous failures are settled by :func:`probe`. What
    fails for good raises :class:`~glacierscale.core.faults.FaultError` naming the asset.
    """
    fresh = [False]

    def attempt() -> T:
        if not fresh[0]:
            return read()
        with rasterio.Env(CPL_VSIL_CURL_NON_CACHED=_gdal_path(uri)):
            return read()

    def before_retry(_exc: BaseException) -> None:
        fresh[0] = True

    local = "://" not in uri or uri.startswith("file:")
    return faults.retry_call(attempt, site="read", what=redact_url(uri),
                             resolve=lambda _exc: probe(uri), before_retry=before_retry,
                             wrap=True, judge=_local_fault if local else _remote_fault)


#: GDAL's words for a block that arrived shorter than the file's header promised.
_SHORT_READ = re.compile(r"got \d+ bytes, expected \d+")


def _remote_fault(exc: BaseException) -> faults.Fault:
    """As :func:`~glacierscale.core.faults.classify`, except that a short block is ambiguous: a
    connection cut mid-answer (transient) and a truncated file (permanent) read alike, so
    :func:`probe` compares the object's size with its blocks."""
    if any(_SHORT_READ.search(str(e)) for e in faults.chain(exc)):
        return faults.Fault.AMBIGUOUS
    return faults.classify(exc)


def _local_fault(_exc: BaseException) -> faults.Fault:
    # A local disk does not flake: a short read there is a truncated file, not a lost packet.
    return faults.Fault.PERMANENT


@runtime_checkable
class Loader(Protocol):
    """Reads groups of STAC items onto a GeoBox as a lazy ``(time, y, x)`` Dataset."""

    name: str

    def read(
        self,
        groups: Sequence[Sequence[pystac.Item]],
        assets: Sequence[str],
        geobox: GeoBox,
        *,
        resampling: str,
        dtype: str | None,
        chunks: tuple[int, int],
    ) -> xr.Dataset:
        """One time slice per group, one variable per asset key, dims ``(time, y, x)``.

        ``dtype`` ``"float32"`` reads NaN where nothing was read; ``None`` keeps each asset's
        own data type (half the memory of float32 for 16-bit bands) and fills with its nodata.
        """
        ...


def _group_index(groups: Sequence[Sequence[pystac.Item]]) -> dict[tuple[str | None, str], int]:
    index: dict[tuple[str | None, str], int] = {}
    for g, items in enumerate(groups):
        for item in items:
            index[(item.collection_id, item.id)] = g
    return index


class _RetryingRioReader(RioReader):
    def read(self, cfg: Any, dst_geobox: GeoBox, *, dst: np.ndarray | None = None,
             selection: Any = None) -> tuple[tuple[slice, slice], np.ndarray]:
        # A failed attempt may have written part of dst; a successful one rewrites its region.
        return read_with_retry(
            lambda: rio_read(self._src, cfg, dst_geobox, dst=dst, selection=selection),
            self._src.uri)


class RetryingRioDriver(RioDriver):
    """odc-stac's rasterio driver, with each chunk read retried by :func:`read_with_retry`."""

    def open(self, src: Any, ctx: Any) -> RioReader:
        return _RetryingRioReader(src, ctx)


def _odc_driver() -> RetryingRioDriver:
    from odc.stac._mdtools import StacAuxReader

    # What odc-stac builds by default (its STAC metadata parser is filled in by odc.stac.load).
    return RetryingRioDriver(aux_reader=StacAuxReader())


class OdcStacLoader:
    """odc-stac: per-chunk reads with GDAL warp, overviews when shrinking, items fused per chunk."""

    name = "odc-stac"

    def __init__(self, patch_url: Callable[[str], str] | None = fresh_href) -> None:
        self.patch_url = patch_url

    def read(
        self,
        groups: Sequence[Sequence[pystac.Item]],
        assets: Sequence[str],
        geobox: GeoBox,
        *,
        resampling: str,
        dtype: str | None,
        chunks: tuple[int, int],
    ) -> xr.Dataset:
        import odc.stac

        index = _group_index(groups)
        items = [item for g in groups for item in g]

        def key(item: pystac.Item, _parsed: Any, _idx: int) -> int:
            return index[(item.collection_id, item.id)]

        kwargs: dict[str, Any] = {"dtype": dtype} if dtype else {}
        ds = odc.stac.load(
            items,
            bands=list(assets),
            geobox=geobox,
            chunks={"y": chunks[0], "x": chunks[1]},
            groupby=key,
            # Items of a group keep the caller's order, so the best-ranked granule wins overlaps.
            preserve_original_order=True,
            resampling=resampling,
            **kwargs,
            # NaN, not the items' declared nodata, marks pixels nothing was read for; the file's
            # own nodata still masks the source.
            nodata=float("nan") if dtype and np.dtype(dtype).kind == "f" else None,
            fail_on_error=True,
            patch_url=self.patch_url,
            driver=_odc_driver(),
        )
        if ds.sizes.get("time") != len(groups):
            raise RuntimeError(
                f"odc-stac returned {ds.sizes.get('time')} time slices for {len(groups)} groups; "
                "items of different groups share an id"
            )
        return ds


def _stackstac_dict(item: pystac.Item, patch_url: Callable[[str], str] | None) -> dict[str, Any]:
    """An item dict stackstac understands: it reads ``proj:epsg`` but not STAC 1.1 ``proj:code``."""
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    for holder in [d["properties"], *d["assets"].values()]:
        code = holder.get("proj:code")
        if code and "proj:epsg" not in holder and str(code).upper().startswith("EPSG:"):
            holder["proj:epsg"] = int(str(code).split(":")[1])
    for key, asset in d["assets"].items():
        href = item.assets[key].get_absolute_href() or asset["href"]
        asset["href"] = patch_url(href) if patch_url else href
    return d


class RetryingStackstacReader(AutoParallelRioReader):
    """stackstac's reader, with each window read (and the open before it) retried."""

    def read(self, window: Any, **kwargs: Any) -> np.ndarray:
        def once() -> np.ndarray:
            return AutoParallelRioReader.read(self, window, **kwargs)

        def reopen_then_read() -> np.ndarray:
            # The dataset (or its failed open) is dropped, so the retry opens the file anew.
            with self._dataset_lock:
                dataset: Any = getattr(self, "_dataset", None)
                if dataset is not None:
                    dataset.close()
                    self._dataset = None
            return once()

        first = [True]

        def attempt() -> np.ndarray:
            if first[0]:
                first[0] = False
                return once()
            return reopen_then_read()

        return read_with_retry(attempt, self.url)


class StackstacLoader:
    """stackstac: one Dask task per item, asset and chunk, GDAL warped VRT reads, then mosaic."""

    name = "stackstac"

    def __init__(self, patch_url: Callable[[str], str] | None = fresh_href) -> None:
        self.patch_url = patch_url

    def read(
        self,
        groups: Sequence[Sequence[pystac.Item]],
        assets: Sequence[str],
        geobox: GeoBox,
        *,
        resampling: str,
        dtype: str | None,
        chunks: tuple[int, int],
    ) -> xr.Dataset:
        import stackstac
        from rasterio.enums import Resampling
        from stackstac.rio_env import LayeredEnv

        epsg = geobox.crs.epsg if geobox.crs is not None else None
        if epsg is None:
            raise ValueError(f"stackstac needs an EPSG code; the tile CRS is {geobox.crs}")
        res = abs(geobox.resolution.x)
        b = geobox.boundingbox
        settings = cloud_read_settings(per_read=True)
        env = LayeredEnv(always=settings)
        # stackstac fills with a float NaN; integer quality bands are read as float32 and
        # turned back into integers by the mask code.
        out_dtype = np.dtype(dtype or "float32")
        if out_dtype.kind != "f":
            out_dtype = np.dtype("float32")
        slices = []
        for items in groups:
            arr = stackstac.stack(
                [_stackstac_dict(i, self.patch_url) for i in items],
                assets=list(assets),
                epsg=epsg,
                resolution=res,
                bounds=(b.left, b.bottom, b.right, b.top),
                snap_bounds=False,
                resampling=Resampling[resampling],
                chunksize=(1, 1, chunks[0], chunks[1]),
                dtype=out_dtype,
                fill_value=np.float32(np.nan) if out_dtype == np.float32 else np.nan,
                rescale=False,
                sortby_date=False,
                xy_coords="center",
                properties=False,
                band_coords=False,
                gdal_env=env,
                reader=RetryingStackstacReader,
            )
            # reverse=True: the first item (best ranked) is on top, as with odc-stac.
            slices.append(stackstac.mosaic(arr, dim="time", reverse=True))
        stacked = xr.concat(slices, dim="time", join="override")
        if stacked.shape[-2:] != geobox.shape:
            raise RuntimeError(
                f"stackstac returned a {stacked.shape[-2:]} grid for the {geobox.shape} tile grid"
            )
        ds = stacked.to_dataset(dim="band")
        return ds.drop_vars([c for c in ds.coords if c not in ("y", "x")])


#: Registered readers by name; benchmarks/io_reads.py measured odc-stac as the faster default.
LOADERS: Mapping[str, Callable[[], Loader]] = {
    "odc-stac": OdcStacLoader,
    "stackstac": StackstacLoader,
}
DEFAULT_LOADER = "odc-stac"


def get_loader(name: str | Loader | None = None) -> Loader:
    """A loader by name (``odc-stac`` or ``stackstac``), or the given instance unchanged."""
    if name is None:
        name = DEFAULT_LOADER
    if not isinstance(name, str):
        return name
    try:
        return LOADERS[name]()
    except KeyError:
        raise ValueError(f"unknown loader {name!r}; choose one of {sorted(LOADERS)}") from None
