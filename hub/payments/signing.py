"""HMAC-SHA256 request signing shared by the hub and its payment channels (pure, no I/O).

The signed string is ``f"{timestamp}.".encode() + body``: the raw body bytes exactly as
sent, prefixed by the sender's Unix time in whole seconds. The signature is the lower-case
hex digest in ``X-Wuye-Signature``; the timestamp is in ``X-Wuye-Timestamp``. Including the
timestamp means a captured message cannot be re-dated without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from hub.payments.errors import SignatureError

SIGNATURE_HEADER = "X-Wuye-Signature"
TIMESTAMP_HEADER = "X-Wuye-Timestamp"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: bytes, headers: Mapping[str, str], body: bytes) -> int:
    """The signed timestamp if the signature over ``body`` is right; SignatureError if not.

    ``headers`` is looked up case-insensitively. The digest is compared in constant time.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    ts_text = lower.get(TIMESTAMP_HEADER.lower())
    given = lower.get(SIGNATURE_HEADER.lower())
    if ts_text is None or given is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    timestamp = int(ts_text)
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("ascii", "replace")):
        raise SignatureError("signature does not match")
    return timestamp
