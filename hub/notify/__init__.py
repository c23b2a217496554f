"""Notifications: subscriptions by role and site, a durable outbox, channels (webhook).

Code that causes an event calls :func:`publish` in its transaction; the :class:`Sender`
(started by the API process) delivers what was committed, retrying until a 2xx.
"""

from hub.notify.channels import Attempt, Channel, WebhookChannel, build_channels
from hub.notify.models import DeliveryStatus, Notification, Subscription
from hub.notify.sender import Sender, wake_senders
from hub.notify.service import EVENTS, Event, NotifyError, publish

__all__ = [
    "EVENTS",
    "Attempt",
    "Channel",
    "DeliveryStatus",
    "Event",
    "Notification",
    "NotifyError",
    "Sender",
    "Subscription",
    "WebhookChannel",
    "build_channels",
    "publish",
    "wake_senders",
]
