"""The errors of fee billing; each says what is wrong in words a cashier can act on."""

from __future__ import annotations


class BillingError(ValueError):
    """A request billing refuses (bad input or a rule): 400/422, nothing written."""


class NotFound(BillingError):
    """No such fee item, bill, payment or premises at this site (404)."""


class MonthClosed(BillingError):
    """The accounting month is closed: nothing more is booked into it (409)."""


class Conflict(BillingError):
    """Someone else changed it first (a bill paid meanwhile, a refund already made): 409."""
