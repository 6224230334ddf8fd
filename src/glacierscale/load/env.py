"""GDAL settings for reading COGs over HTTP or object storage, kept in one place.

Each setting saves requests or bytes on a tile read:

- ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: never list a "directory" looking for side-car files
  (one avoided LIST or GET per open).
- ``CPL_VSIL_CURL_USE_HEAD`` stays at GDAL's default (YES): with NO, GDAL learns a file's size
  from a whole-file GET that it aborts after the headers, which transfers megabytes on a fast
  link (measured in benchmarks/io_reads.py); one HEAD per file is cheaper.
- ``GDAL_INGESTED_BYTES_AT_OPEN``: read the COG header (IFDs, tile offsets) in one GET.
- ``GDAL_HTTP_MULTIRANGE`` / ``GDAL_HTTP_MERGE_CONSECUTIVE_RANGES``: fetch the blocks of a window
  in as few GETs as possible, merging neighbouring blocks into one range.
- ``CPL_VSIL_CURL_CACHE_SIZE`` / ``VSI_CACHE``: keep downloaded header and block ranges in memory,
  so a file opened again by the next chunk of the same tile does not fetch its header again.
- ``GDAL_HTTP_MAX_RETRY`` / ``GDAL_HTTP_RETRY_DELAY`` / ``GDAL_HTTP_TIMEOUT``: GDAL retries a
  throttled or failed request (429, 5xx, timeouts, resets) with back-off, per request; their values
  come from the fault settings (:class:`glacierscale.core.faults.FaultSettings`). What still fails
  (a dropped connection, a cached failure) is retried around the whole read by the readers.

Environment variables of the same name set by the user win, so a deployment can tune them
without code changes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from glacierscale.core import faults

#: The defaults applied by :func:`configure_cloud_reads`.
CLOUD_READ_DEFAULTS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    # the retry options, at the defaults of the fault settings (see _retry_options)
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
    "CPL_VSIL_CURL_CACHE_SIZE": str(256 * 1024 * 1024),
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024 * 1024),
    "GDAL_CACHEMAX": "512",
}

_lock = threading.Lock()
_applied: dict[str, str] | None = None


#: Read by GDAL once per process (from the environment); rasterio's Env would take an integer
#: number of *bytes* for it, so it is never passed through rasterio/odc-stac/stackstac envs.
_PROCESS_ONLY = ("GDAL_CACHEMAX",)


def _retry_options() -> dict[str, str]:
    """GDAL's per-request retry options from the fault settings in force."""
    s = faults.settings()
    return {"GDAL_HTTP_MAX_RETRY": str(s.gdal_http_retries),
            "GDAL_HTTP_RETRY_DELAY": f"{s.gdal_http_retry_delay_s:g}",
            "GDAL_HTTP_TIMEOUT": f"{s.gdal_http_timeout_s:g}"}


#: Values this module wrote into the environment itself (not a user's), by key.
_written: dict[str, str] = {}


def _user_value(key: str) -> str | None:
    """The environment's value of ``key`` unless it is one this module set itself."""
    value = os.environ.get(key)
    if value is None or _written.get(key) == value:
        return None
    return value


def cloud_read_settings(per_read: bool = False) -> dict[str, str]:
    """The effective settings: the defaults and fault settings, overridden by the environment.

    ``per_read=True`` leaves out the process-wide options that only the environment can set,
    giving the options a reader passes to ``rasterio.Env`` around each read.
    """
    merged = {**CLOUD_READ_DEFAULTS, **_retry_options()}
    out = {k: _user_value(k) or v for k, v in merged.items()}
    if per_read:
        for key in _PROCESS_ONLY:
            out.pop(key, None)
    return out


def configure_cloud_reads() -> None:
    """Apply the cloud-read GDAL settings in this process (idempotent; call on every worker).

    Sets them as environment variables, which GDAL consults for any option not set otherwise and
    which worker processes started later inherit, and registers them with odc-stac, which carries
    them inside its Dask graph to whichever worker runs a read. On a running Dask cluster call
    ``client.run(configure_cloud_reads)`` as well, so options GDAL reads only once are set early.
    """
    global _applied
    with _lock:
        settings = cloud_read_settings()
        if _applied == settings:
            return
        for key, value in settings.items():
            if _user_value(key) is None:
                # Ours, so a later change of the fault settings may replace it.
                os.environ[key] = _written[key] = value
        # Imported here so that merely importing the load package stays cheap.
        import odc.stac

        opts: dict[str, Any] = dict(cloud_read_settings(per_read=True))
        odc.stac.configure_rio(cloud_defaults=True, **opts)
        _applied = settings
