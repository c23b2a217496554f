"""Notification channels: how a notification leaves the hub. The webhook channel for now.

A channel makes one attempt and says how it went; retrying, back-off and remembering what
was delivered are the sender's. A webhook body is JSON, signed like the payment channels'
requests (:mod:`hub.payments.signing`): ``X-Wuye-Timestamp`` and ``X-Wuye-Signature:
hex(HMAC-SHA256(secret, f"{timestamp}." + body))``. ``X-Wuye-Delivery`` carries the
notification's id, the same on every attempt: a receiver that got an attempt whose answer
was lost (the hub crashed before recording it) recognises the resend by it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hub.notify.models import Notification
from hub.payments import signing
from hub.settings import HubSettings

DELIVERY_HEADER = "X-Wuye-Delivery"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt got: the HTTP status (None: no answer) and a short reason."""

    status: int | None
    detail: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Channel(Protocol):
    name: str

    def send(self, n: Notification) -> Attempt:
        """One attempt to deliver ``n``; never raises for the peer's failures."""
        ...


def body_of(n: Notification) -> dict[str, Any]:
    """The JSON a receiver gets (version 1)."""
    return {
        "v": 1,
        "id": n.id,
        "key": n.key,
        "event": n.event,
        "site": n.site_id,
        "severity": n.severity,
        "to": {"username": n.recipient, "role": n.role},
        "created_at": n.created_at.isoformat(),
        "data": n.payload,
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # a redirected POST becomes a GET without the body: that is no delivery
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


class WebhookChannel:
    """HTTP POST of the signed JSON body to one URL (a bot gateway, a paging service)."""

    name = "webhook"

    def __init__(self, url: str, secret: bytes, timeout_s: float = 10.0) -> None:
        self.url, self.secret, self.timeout_s = url, secret, timeout_s

    def send(self, n: Notification) -> Attempt:
        body = orjson.dumps(body_of(n))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wuye-hub-notify/1",
            DELIVERY_HEADER: str(n.id),
            **signing.signed_headers(self.secret, int(time.time()), body),
        }
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with _opener.open(req, timeout=self.timeout_s) as resp:
                return Attempt(resp.status)
        except urllib.error.HTTPError as exc:
            return Attempt(exc.code, exc.reason if isinstance(exc.reason, str) else "")
        except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:200])


def build_channels(settings: HubSettings) -> dict[str, Channel]:
    """The channels these settings configure (none without NOTIFY_WEBHOOK_URL)."""
    out: dict[str, Channel] = {}
    if settings.notify_webhook_url:
        out["webhook"] = WebhookChannel(
            settings.notify_webhook_url,
            settings.notify_secret().encode(),
            settings.notify_timeout_s,
        )
    return out
