"""Fresh URLs at read time: re-sign Planetary Computer SAS tokens that expired since the search.

A global run searches the catalog long before a worker reads the pixels; Planetary Computer
signs asset URLs with SAS tokens valid for about an hour, so a queued tile would read with an
expired token and fail with HTTP 403. The readers pass every URL through :func:`fresh_href`
just before opening it: unexpired URLs and URLs of other hosts are returned unchanged (no network
call), expired or nearly expired ones get a fresh token from the ``planetary-computer`` package,
which caches one token per storage container.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse, urlunparse

_BLOB_DOMAIN = ".blob.core.windows.net"
#: Re-sign when less than this remains, so a read that starts now also finishes in time.
MARGIN = timedelta(minutes=5)


def sas_expiry(href: str) -> datetime | None:
    """The ``se`` (signed expiry) time of an Azure SAS-signed URL, or None when not signed."""
    qs = parse_qs(urlparse(href).query)
    values = qs.get("se")
    if not values:
        return None
    text = values[0].replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def needs_signing(href: str, now: datetime | None = None) -> bool:
    """Whether ``href`` is a Planetary Computer blob URL that is unsigned or about to expire."""
    parsed = urlparse(href)
    if not parsed.netloc.endswith(_BLOB_DOMAIN):
        return False
    expiry = sas_expiry(href)
    if expiry is None:
        return "sig=" not in parsed.query
    now = now or datetime.now(UTC)
    return expiry - now < MARGIN


def fresh_href(href: str) -> str:
    """``href`` with a valid SAS token when it points to Planetary Computer storage."""
    if not needs_signing(href):
        return href
    import planetary_computer

    parsed = urlparse(href)
    bare = urlunparse(parsed._replace(query=""))
    return str(planetary_computer.sign_url(bare))
