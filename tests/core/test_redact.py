"""The one redaction: signed URLs of S3, Azure and GCS, userinfo, AWS keys, bearer tokens, known
secret values; text around them survives, and log records are redacted whatever handler they reach.
"""

from __future__ import annotations

import io
import json
import logging
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glacierscale.core.redact import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_obj,
    redact_url,
    secret_values,
)

SIG = "Zq8vX2pLw9sT4nB7kD3mF6hJ"  # a signature-like value planted in every URL below

SIGNED = {
    "s3 presigned (SigV4)": (
        "https://bucket.s3.us-west-2.amazonaws.com/tiles/a.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-west-2%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        f"&X-Amz-Security-Token={SIG}tok&X-Amz-Signature={SIG}"),
    "s3 presigned (SigV2)": (
        f"https://bucket.s3.amazonaws.com/a.tif?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE"
        f"&Expires=1700000000&Signature={SIG}%3D"),
    "azure sas (planetary computer)": (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/10/T/ES/B04.tif?st=2024-01-01"
        f"&se=2024-01-02&sp=rl&sv=2021-06-08&sr=c&skoid=abc&sktid=def&sig={SIG}%2B%2F"),
    "gcs signed (V4)": (
        "https://storage.googleapis.com/bucket/a.tif?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        f"&X-Goog-Credential=sa%40proj.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage"
        f"&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
        f"&X-Goog-Signature={SIG}"),
    "gcs signed (V2)": (
        f"https://storage.googleapis.com/bucket/a.tif?GoogleAccessId=sa@proj.iam"
        f"&Expires=1700000000&Signature={SIG}"),
    "token query": f"https://stac.example.org/api/search?collections=s2&token={SIG}",
    "userinfo": f"https://glacier:{SIG}@stac.example.org/v1",
}


@pytest.mark.parametrize("url", SIGNED.values(), ids=SIGNED.keys())
def test_signed_urls_lose_their_secrets_and_keep_the_rest(url: str) -> None:
    clean = redact_url(url)
    assert SIG not in clean and "AKIAIOSFODNN7EXAMPLE" not in clean
    assert clean.split("?")[0].replace(f"glacier:{SIG}@", "") in url.replace(f"glacier:{SIG}@", "")
    # Non-secret parameters (expiry, permissions) stay: a reader can still tell what it was.
    for keep in ("X-Amz-Expires=3600", "se=2024-01-02", "X-Goog-Expires=900", "collections=s2"):
        if keep in url:
            assert keep in clean
    # The same URL inside a sentence (an exception message, a log line) is redacted alike.
    assert SIG not in redact(f"cannot open '{url}': 403 Forbidden.")
    assert redact(redact(url)) == redact(url)


def test_plain_urls_and_ordinary_text_are_untouched() -> None:
    for text in ("s3://bucket/tiles/32611_0046_0411/item.json",
                 "https://earth-search.aws.element84.com/v1",
                 "config_token=8f3a9b2c1d0e and model token: `8f3a9b2c1d0e`",
                 "tile 32611_0046_0411 failed: no valid pixels in the tile core",
                 "a key of the grid; the keyword sig is a word"):
        assert redact(text) == text


def test_keys_and_tokens_in_free_text() -> None:
    text = ("env AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG"
            " header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-part and "
            "password=hunter2hunter2 then ASIAY34FZKBOKMUTVV7A")
    clean = redact(text)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "eyJhbGciOiJIUzI1NiJ9", "hunter2",
                   "ASIAY34FZKBOKMUTVV7A"):
        assert secret not in clean
    assert clean.count(MASK) == 5 and "Authorization: Bearer ***" in clean


def test_the_sentence_around_a_redacted_url_keeps_its_punctuation() -> None:
    assert (redact("search http://127.0.0.1:9/stac?token=SECRET123456: APIError: refused")
            == "search http://127.0.0.1:9/stac?token=***: APIError: refused")
    assert redact("(see https://h/a.tif?sig=abcdefgh12).") == "(see https://h/a.tif?sig=***)."
    assert redact("api_key=abcdefgh1234, then") == "api_key=***, then"
    assert redact(redact("x https://h/p?token=abcdefgh12: y")) == "x https://h/p?token=***: y"


def test_known_secret_values_are_masked_wherever_they_appear(
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"  # an AWS secret: no pattern can know it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    assert redact(f"boto says {secret} is wrong") == "boto says *** is wrong"
    # URL-encoded, as it would appear inside a query string.
    assert redact("x?y=wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCY") == "x?y=***"
    opts = {"client_kwargs": {"endpoint_url": "http://h"}, "secret": "s3cr3t-value-12"}
    assert "s3cr3t-value-12" in secret_values(opts)
    assert redact("s3cr3t-value-12!", opts) == "***!"
    # Short values would mask ordinary words: they are not treated as secrets.
    assert "test" not in secret_values({"key": "test"}, environ={})


def test_redact_obj_keeps_json_documents_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", 'quote"and\\slash-secret')
    doc = {"catalog": SIGNED["userinfo"], "tiles": [{"reason": 'open quote"and\\slash-secret'}],
           "n": 3, "ok": None}
    clean = redact_obj(doc)
    text = json.dumps(clean)
    assert SIG not in text and "slash-secret" not in text
    assert json.loads(text)["n"] == 3 and clean["tiles"][0]["reason"] == "open ***"


ALNUM = string.ascii_letters + string.digits


@given(secret=st.text(ALNUM + "+/=-_", min_size=12, max_size=60),
       name=st.sampled_from(["sig", "X-Amz-Signature", "X-Goog-Signature", "token",
                             "X-Amz-Security-Token", "Signature", "access_token"]),
       before=st.text(ALNUM, max_size=10), after=st.text(ALNUM, max_size=10))
def test_no_signature_survives_in_any_query_position(secret: str, name: str, before: str,
                                                     after: str) -> None:
    url = f"https://h.example/p/{before}.tif?a={before}&{name}={secret}&b={after}"
    clean = redact(f"asset {url} failed")
    assert secret not in clean
    assert clean == f"asset https://h.example/p/{before}.tif?a={before}&{name}=***&b={after} failed"
    assert redact(clean) == clean


def test_log_records_are_redacted_for_every_handler() -> None:
    """The record factory redacts message, arguments and traceback before any handler sees them."""
    install_log_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("glacierscale.test_redact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning("reading %s", SIGNED["azure sas (planetary computer)"])
        try:
            raise OSError(f"403 on {SIGNED['s3 presigned (SigV4)']}")
        except OSError:
            logger.exception("tile failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert SIG not in out and "sig=***" in out and "X-Amz-Signature=***" in out
    assert "Traceback" in out  # the traceback is kept, only its secrets go


def test_the_filter_form_redacts_records_on_one_handler() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "url %s", (SIGNED["userinfo"],),
                               None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "url https://stac.example.org/v1"
