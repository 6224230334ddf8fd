"""Redaction of secrets in text and URLs: the one place every output and log line passes through.

A run handles secrets a user may put in many places: ``user:password@`` in a catalog or output URL,
signed asset hrefs (S3 presigned ``X-Amz-Signature``, Azure SAS ``sig``, GCS ``X-Goog-Signature``),
``?token=`` query parameters, AWS keys in the environment, bearer tokens in error messages of HTTP
clients. Console output, logs, ``manifest.json``, ``report.md``, Prefect artifacts, STAC items and
COG tags all go through :func:`redact`, so one rule set decides what never leaves the process.

Pure string code (standard library only, no I/O library), so every layer may import it. What is
recognised:

- URL userinfo (``scheme://user:pass@host``): dropped;
- query parameters that carry a signature, credential or token (:data:`SECRET_PARAMS`): the value
  becomes ``***``, the name stays, so a reader still sees that the URL was signed;
- AWS access key ids (``AKIA...``/``ASIA...``) and ``Bearer``/``Basic`` credentials anywhere;
- ``NAME=value`` pairs whose name is a known secret (``AWS_SECRET_ACCESS_KEY=...``, ``password=``);
- the literal values of secret environment variables and storage options (:func:`secret_values`),
  which catches an AWS secret key that no pattern could tell from other text.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

#: What a secret is replaced by.
MASK = "***"

#: Environment variables whose values are secrets and must never reach a log, tag or output.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_CLIENT_SECRET", "PC_SDK_SUBSCRIPTION_KEY",
    "GDAL_HTTP_BEARER", "GDAL_HTTP_USERPWD", "PREFECT_API_KEY", "GLACIERSCALE_STAC_TOKEN",
)

#: Query parameters (lower case) whose values are signatures, credentials or tokens:
#: S3 presigned URLs (SigV4 and SigV2), Azure SAS, GCS signed URLs (V4 and V2), and the usual
#: API token names. ``X-Amz-Credential`` holds the access key id, so it goes too.
SECRET_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "awsaccesskeyid", "signature",
    "sig",
    "x-goog-signature", "x-goog-credential", "googleaccessid",
    "token", "access_token", "id_token", "refresh_token", "sas_token", "session_token",
    "security_token", "auth", "api_key", "apikey", "api-key", "key", "subscription-key",
    "subscription_key", "password", "passwd", "pwd", "secret", "client_secret",
})

#: Names of ``NAME=value`` pairs in free text (environment dumps, CLI echoes, exception messages)
#: whose value is secret; matched case-insensitively as a whole word.
_SECRET_NAMES = (
    "aws_secret_access_key", "aws_session_token", "aws_security_token", "aws_access_key_id",
    "secret_access_key", "secret_key", "access_key_id", "azure_storage_key",
    "azure_storage_sas_token", "azure_client_secret", "client_secret", "password", "passwd",
    "access_token", "refresh_token", "id_token", "sas_token", "session_token", "api_key",
    "apikey", "token", "secret", "sig", "signature", "x-amz-signature", "x-amz-credential",
    "x-amz-security-token", "x-goog-signature", "x-goog-credential", "accountkey",
    "sharedaccesssignature",
)
# Option names (storage options, connection dicts) whose string values are secrets.
_SECRET_OPTION_WORDS = ("secret", "token", "key", "password", "credential", "sas", "sig")
# Shorter "secrets" (e.g. "test") would redact ordinary words; real credentials are long.
_MIN_SECRET_LEN = 8

# scheme://user[:password]@ : userinfo never contains "/", "@" or whitespace.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]+@")
# NAME=value in a query string or free text; the look-behind keeps e.g. "config_token=" intact.
_PAIR = re.compile(
    r"(?P<name>(?<![\w-])(?:" + "|".join(re.escape(n) for n in
                                        sorted({*_SECRET_NAMES, *SECRET_PARAMS} - {"key", "auth"},
                                               key=len, reverse=True))
    + r"))(?P<sep>\s*=\s*|%3[dD])(?P<value>[^\s&;,'\"<>|)\]}`]*[^\s&;,'\"<>|)\]}`.:])",
    re.IGNORECASE)
# AWS access key ids: a four-letter kind prefix and 16 upper-case letters or digits.
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|AKPA|ABIA|ACCA)"
                         r"[A-Z0-9]{16}(?![A-Z0-9])")
# HTTP Authorization credentials: "Bearer <token>", "Basic <base64>", "token <gh token>".
_AUTH_SCHEME = re.compile(r"(?P<scheme>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9\-._~+/]{8,}=*",
                          re.IGNORECASE)
# URLs in free text, to redact their query parameters by name (including "key" and "auth",
# which are too common as words to redact outside a query string). Neither a URL nor a value
# ends in the punctuation of the sentence around it ("...?token=abc: error" keeps its colon).
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,:;)\]}]")


def redact_url(url: str) -> str:
    """``url`` without userinfo and with the values of secret query parameters masked.

    >>> redact_url("https://user:pw@example.org:9000/a.tif?se=2030&sig=abc%2Bdef&x=1")
    'https://example.org:9000/a.tif?se=2030&sig=***&x=1'
    >>> redact_url("s3://bucket/key.tif")
    's3://bucket/key.tif'
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host: fall back to the text rules
        return _redact_patterns(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            # Rebuilt by hand: urlencode would also re-encode the values that stay.
            query = "&".join(_masked_pair(piece) for piece in query.split("&"))
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _masked_pair(piece: str) -> str:
    name, eq, _value = piece.partition("=")
    if eq and unquote_plus(name).lower() in SECRET_PARAMS:
        return f"{name}={MASK}"
    return piece


def secret_values(storage_options: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret strings known to this process (environment and storage options), longest first.

    ``environ`` defaults to ``os.environ``. Values shorter than 8 characters are left out: they
    would mask ordinary words, and no real credential is that short.
    """
    env = os.environ if environ is None else environ
    found = [env.get(k, "") for k in SECRET_ENV]

    def walk(opts: Any) -> None:
        if isinstance(opts, Mapping):
            for k, v in opts.items():
                if isinstance(v, str) and any(w in str(k).lower() for w in _SECRET_OPTION_WORDS):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(opts, list | tuple):
            for v in opts:
                walk(v)

    walk(storage_options or {})
    values = {s for s in found if len(s) >= _MIN_SECRET_LEN}
    # A secret also appears URL-encoded inside hrefs and query strings.
    values |= {quote(s, safe="") for s in values}
    return sorted(values, key=len, reverse=True)


def _url_in_text(match: re.Match[str]) -> str:
    url = match.group(0)
    # Punctuation that ends a sentence or closes a bracket is not part of the URL.
    core = url.rstrip(".,;:)]}!?")
    return redact_url(core) + url[len(core):]


def _redact_patterns(text: str) -> str:
    text = _URL.sub(_url_in_text, text)
    text = _USERINFO.sub(r"\g<scheme>", text)
    text = _PAIR.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')}{MASK}", text)
    return _AWS_KEY_ID.sub(MASK, text)


def redact(text: str, storage_options: Mapping[str, Any] | None = None,
           extra: Iterable[str] = ()) -> str:
    """``text`` with every secret it holds masked as ``***``.

    Known secret values (environment, ``storage_options``, ``extra``) are replaced wherever they
    appear; then URLs lose userinfo and signed query values, and key ids, bearer tokens and
    ``NAME=secret`` pairs are masked. Idempotent: redacting twice changes nothing more.
    """
    if not text:
        return text
    for s in (*secret_values(storage_options), *sorted(
            (e for e in extra if len(e) >= _MIN_SECRET_LEN), key=len, reverse=True)):
        if s in text:
            text = text.replace(s, MASK)
    return _redact_patterns(text)


def redact_obj(value: Any, storage_options: Mapping[str, Any] | None = None) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted.

    For documents written as JSON (manifest, STAC items): redacting the values, not the
    serialised text, keeps the document valid whatever a secret contains.
    """
    if isinstance(value, str):
        return redact(value, storage_options)
    if isinstance(value, Mapping):
        return {k: redact_obj(v, storage_options) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v, storage_options) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message, arguments and traceback in place.

    Attach it to a handler (``handler.addFilter``); :func:`install_log_redaction` instead redacts
    every record this process creates, whichever logger or handler it later reaches.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place: the formatted message, and the traceback text if any."""
    if getattr(record, "_glacierscale_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it for the handler to report
        return record
    clean = redact(message)
    if clean != message or record.args:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        # Formatted once here, so every handler prints the redacted text (Formatter reuses it).
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._glacierscale_redacted = True
    return record


_installed = False


def install_log_redaction() -> None:
    """Redact every log record this process creates from now on (idempotent).

    Done in the record factory rather than a handler filter, so records that reach handlers added
    later (Prefect's API log handler, Dask's) are redacted too.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True


class ConsoleFormatter(logging.Formatter):
    """One redacted line per record for a console; tracebacks only when ``debug``.

    What a user reads on the console is the message (which names the fix); the traceback of an
    expected failure is noise there and goes to the debug log instead.
    """

    def __init__(self, debug: bool = False, fmt: str | None = None) -> None:
        super().__init__(fmt or ("%(asctime)s %(levelname)s %(name)s: %(message)s" if debug
                                 else "%(levelname)s %(name)s: %(message)s"))
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        if self.debug:
            return super().format(record)
        # Formatted without the traceback, restored after: other handlers (a debug log file)
        # still get the whole record.
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
