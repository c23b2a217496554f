"""Payment channels: what the hub needs from a provider, and the sandbox provider.

A channel registers an order with the provider (``prepare``: what the payer needs, a pay
URL or a QR payload) and authenticates the provider's asynchronous notifications
(``verify``). Crediting is not the channel's business: :mod:`hub.payments.service` does it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.payments import signing
from hub.payments.errors import ChannelError, MalformedNotification
from hub.payments.models import PaymentOrder
from hub.settings import HubSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notification:
    """A verified "paid" notification, as the channel states it."""

    order_id: str
    channel_txn_id: str
    amount_fen: int
    currency: str
    paid_at: datetime
    signed_at: datetime  # when the channel signed this copy (each resend is signed anew)


class PaymentChannel(Protocol):
    name: str

    def prepare(self, order: PaymentOrder) -> dict[str, Any]:
        """Register the order with the provider; what the payer needs (pay URL, QR payload).

        Calling it again for the same order is harmless. Raises ChannelError.
        """
        ...

    def verify(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """The notification in ``body`` if it is authentic and well formed.

        Raises SignatureError (not from the provider) or MalformedNotification.
        """
        ...


class _NotificationBody(BaseModel):
    """The sandbox's notification body (version 1), parsed once."""

    model_config = ConfigDict(extra="ignore", strict=True)
    v: Literal[1]
    event: Literal["payment.succeeded"]
    order_id: str = Field(min_length=1, max_length=64)
    txn_id: str = Field(min_length=1, max_length=128)
    amount_fen: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    paid_at: datetime = Field(strict=False)


class SandboxChannel:
    """The development provider, ``python -m simulators.paychannel``, over HTTP.

    Requests to it and notifications from it are signed with the shared secret (see
    :mod:`hub.payments.signing`).
    """

    name = "sandbox"

    def __init__(
        self, base_url: str, secret: bytes, notify_url: str, *, timeout_s: float = 5.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.notify_url = notify_url
        self.timeout_s = timeout_s

    def prepare(self, order: PaymentOrder) -> dict[str, Any]:
        body = json.dumps(
            {
                "order_id": order.id,
                "amount_fen": order.amount_fen,
                "currency": order.currency,
                "subject": f"{order.subject_kind}:{order.subject_id}",
                "notify_url": self.notify_url,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            **signing.signed_headers(self.secret, int(time.time()), body),
        }
        req = urllib.request.Request(
            f"{self.base_url}/orders", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            raise ChannelError(
                f"sandbox refused order {order.id}: HTTP {exc.code} {detail}",
                refused=400 <= exc.code < 500,
            ) from exc
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad JSON
            raise ChannelError(f"sandbox at {self.base_url} unreachable: {exc}") from exc
        return {"channel": self.name, "pay_url": answer["pay_url"], "qr": answer["qr"]}

    def verify(self, headers: Mapping[str, str], body: bytes) -> Notification:
        signed = signing.verify(self.secret, headers, body)
        try:
            msg = _NotificationBody.model_validate_json(body)
        except ValidationError as exc:
            raise MalformedNotification(f"not a v1 payment notification: {exc}") from exc
        if msg.paid_at.tzinfo is None:
            raise MalformedNotification("paid_at needs a timezone")
        return Notification(
            order_id=msg.order_id,
            channel_txn_id=msg.txn_id,
            amount_fen=msg.amount_fen,
            currency=msg.currency,
            paid_at=msg.paid_at.astimezone(UTC),
            signed_at=datetime.fromtimestamp(signed, UTC),
        )


def build_channels(settings: HubSettings) -> dict[str, PaymentChannel]:
    """The channels the settings enable, by name (the sandbox only when its URL is set)."""
    channels: dict[str, PaymentChannel] = {}
    if settings.pay_sandbox_url:
        base = settings.pay_notify_url or f"http://{settings.api_host}:{settings.api_port}"
        channels["sandbox"] = SandboxChannel(
            settings.pay_sandbox_url,
            settings.pay_secret().encode(),
            f"{base.rstrip('/')}/api/v1/payments/notify/sandbox",
        )
    return channels
