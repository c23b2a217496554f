"""Payment errors: each class has one meaning, and the API maps each to one status code."""

from __future__ import annotations

from protocols.errors import WuyeError


class PaymentError(WuyeError):
    """Base of the payment errors."""


class IdempotencyConflict(PaymentError):
    """The idempotency key was already used for a different request (HTTP 409)."""


class OrderNotFound(PaymentError):
    """No payment order with that id (HTTP 404)."""


class OrderNotPayable(PaymentError):
    """The order is already paid, failed or closed (HTTP 409)."""


class SignatureError(PaymentError):
    """A notification without a valid signature, or signed too long ago (HTTP 401)."""


class MalformedNotification(PaymentError):
    """A correctly signed notification whose body does not follow the contract (HTTP 400)."""


class ChannelError(PaymentError):
    """The payment channel could not be reached or refused a request.

    ``refused`` is True when the channel answered and said no (the order cannot be paid
    through it); False for a transport failure worth retrying.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
