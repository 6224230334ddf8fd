"""Object-store plumbing shared by fsspec and GDAL: endpoints, GDAL paths, bucket checks.

botocore (and so s3fs) reads a custom S3 endpoint from ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` or the ``endpoint_url`` of the AWS config file; GDAL's /vsis3/ reads
``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING`` instead. ``gdal_env_for`` translates
the one into the other so both clients talk to the same server (MinIO, Ceph, moto, ...). Only
endpoint and region settings are returned: GDAL reads credentials from the environment and the
AWS credential files itself, so no secret ever passes through (or gets logged by) this module.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from glacierscale.core import faults
from glacierscale.io.store import redact_url

log = logging.getLogger(__name__)

_GDAL_PREFIX = {"s3": "/vsis3/", "s3a": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/",
                "az": "/vsiaz/", "abfs": "/vsiaz/", "http": "/vsicurl/", "https": "/vsicurl/"}


class BucketNotFoundError(FileNotFoundError):
    """The bucket of an output URL does not exist (the message says how to create it)."""


def s3_endpoint(storage_options: dict[str, Any] | None = None) -> str | None:
    """The S3 endpoint URL botocore would use, or None for AWS itself."""
    opts = storage_options or {}
    explicit = opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
    if explicit:
        return str(explicit)
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return _endpoint_from_aws_config()


def _endpoint_from_aws_config() -> str | None:
    """``endpoint_url`` from the AWS config file (profile or services section), via botocore."""
    try:
        import botocore.session
    except ImportError:  # pragma: no cover - s3fs always brings botocore
        return None
    try:
        session = botocore.session.get_session()
        # Dummy keys: resolving the endpoint must not need (or touch) real credentials.
        client = session.create_client("s3", region_name=session.get_config_variable("region")
                                       or "us-east-1", aws_access_key_id="x",
                                       aws_secret_access_key="x")
        url = str(client.meta.endpoint_url)
    except Exception:  # a broken AWS config must not stop local runs
        return None
    host = urlsplit(url).hostname or ""
    return None if host.endswith("amazonaws.com") else url


def gdal_env_for(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """GDAL configuration (``rasterio.Env(**...)``) to read/write ``url`` with /vsis3/ and co.

    For ``s3://`` URLs on a custom endpoint: ``AWS_S3_ENDPOINT`` (host:port), ``AWS_HTTPS`` and
    path-style addressing; plus the region when one is configured. Empty for local paths. Never
    contains credentials.
    """
    scheme = urlsplit(str(url)).scheme.lower()
    if scheme not in ("s3", "s3a"):
        return {}
    env: dict[str, str] = {}
    endpoint = s3_endpoint(storage_options)
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        host = parts.hostname or ""
        env["AWS_S3_ENDPOINT"] = f"{host}:{parts.port}" if parts.port else host
        env["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        # Self-hosted servers rarely have wildcard DNS for bucket.host names.
        env["AWS_VIRTUAL_HOSTING"] = "FALSE"
    region = (storage_options or {}).get("client_kwargs", {}).get("region_name") or \
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        env["AWS_REGION"] = str(region)
    if (storage_options or {}).get("anon"):
        env["AWS_NO_SIGN_REQUEST"] = "YES"
    return env


def to_gdal_path(url: str) -> str:
    """GDAL virtual path of a URL: ``s3://b/k`` -> ``/vsis3/b/k``; local paths unchanged."""
    url = str(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:  # "C:\..." has a one-letter scheme
        return parts.path if scheme == "file" else url
    if scheme in ("http", "https"):
        return "/vsicurl/" + url
    if scheme not in _GDAL_PREFIX:
        raise ValueError(
            f"GDAL cannot open {redact_url(url)!r} directly; use a local path or an "
            f"s3://, gs://, az:// or https:// URL (or read the bytes through Store)")
    return _GDAL_PREFIX[scheme] + parts.netloc + parts.path


def check_bucket(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise BucketNotFoundError (with the fix) if the bucket of an s3:// or gs:// URL is missing.

    Local and memory URLs always pass: their folders are created on first write.
    """
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in ("s3", "s3a", "gs", "gcs"):
        return
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"{redact_url(url)!r} names no bucket; use {scheme}://BUCKET/prefix")
    import fsspec

    try:
        fs = fsspec.filesystem(scheme, **(storage_options or {}))
    except ImportError as exc:
        raise ImportError(f"{scheme}:// needs the {'s3fs' if scheme.startswith('s3') else 'gcsfs'}"
                          f" package; install it with pip") from exc
    endpoint = s3_endpoint(storage_options) if scheme.startswith("s3") else None
    where = f" at {redact_url(endpoint)}" if endpoint else ""
    try:
        # A busy or briefly unreachable store is asked again (transient faults only).
        if scheme.startswith("s3"):
            faults.retry_call(lambda: fs.call_s3("head_bucket", Bucket=bucket), site="write",
                              what=f"{scheme}://{bucket}")
            return
        if faults.retry_call(lambda: fs.exists(bucket), site="write", what=f"{scheme}://{bucket}"):
            return
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        raise PermissionError(
            f"access to bucket {bucket!r}{where} was denied; check the credentials "
            "(AWS_PROFILE / AWS_ACCESS_KEY_ID) and the bucket policy") from exc
    except Exception as exc:  # botocore connection errors are not OSErrors
        raise OSError(
            f"cannot reach the object store{where} to check bucket {bucket!r} "
            f"({type(exc).__name__}); check AWS_ENDPOINT_URL and the network") from exc
    hint = (f"aws s3 mb s3://{bucket}" + (f" --endpoint-url {redact_url(endpoint)}"
                                          if endpoint else "")
            if scheme.startswith("s3") else f"gcloud storage buckets create gs://{bucket}")
    raise BucketNotFoundError(
        f"bucket {bucket!r} does not exist{where}; create it first ({hint}) "
        f"or pass an --out URL in an existing bucket")
