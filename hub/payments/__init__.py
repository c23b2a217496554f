"""Payment orders, payment channels and idempotent crediting of the channels' notifications.

Other modules (parking, property fees) create orders with :func:`create_order`, hand the
payer what :func:`prepare_payment` returns, and credit their subject in a handler given to
:func:`register_on_paid`.
"""

from hub.payments.channels import Notification, PaymentChannel, SandboxChannel, build_channels
from hub.payments.errors import (
    ChannelError,
    IdempotencyConflict,
    MalformedNotification,
    OrderNotFound,
    OrderNotPayable,
    PaymentError,
    SignatureError,
)
from hub.payments.models import (
    NotificationOutcome,
    PaymentNotification,
    PaymentOrder,
    PaymentStatus,
)
from hub.payments.service import (
    OnPaid,
    Outcome,
    close_order,
    create_order,
    get_order,
    handle_notification,
    list_orders,
    notification_counts,
    prepare_payment,
    register_on_paid,
)

__all__ = [
    "ChannelError",
    "IdempotencyConflict",
    "MalformedNotification",
    "Notification",
    "NotificationOutcome",
    "OnPaid",
    "OrderNotFound",
    "OrderNotPayable",
    "Outcome",
    "PaymentChannel",
    "PaymentError",
    "PaymentNotification",
    "PaymentOrder",
    "PaymentStatus",
    "SandboxChannel",
    "SignatureError",
    "build_channels",
    "close_order",
    "create_order",
    "get_order",
    "handle_notification",
    "list_orders",
    "notification_counts",
    "prepare_payment",
    "register_on_paid",
]
