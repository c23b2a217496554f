"""People's personal data as the registry keeps and shows it (pure, no I/O).

A phone is kept (reminders need it) but shown masked in lists and exports: ``138****5678``.
Of an ID number only the last four characters and a keyed hash are kept: the hash lets a
later import recognise the same person without the number being stored anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_MOBILE = re.compile(r"1[3-9]\d{9}")  # mainland mobile
_LANDLINE = re.compile(r"0\d{2,3}\d{7,8}")  # area code + number, dashes removed
_ID = re.compile(r"[0-9A-Z]{6,20}")  # resident ID, passport, HK/Macau/Taiwan permits
_RESIDENT_ID = re.compile(r"\d{17}[\dX]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def normalise_phone(text: str) -> str:
    """A mobile (``13812345678``, ``+86 138-1234-5678``) or landline (``021-62345678``) as
    digits; "" for blank. ValueError for anything else."""
    raw = text.strip()
    if not raw:
        return ""
    digits = re.sub(r"[\s\-()]", "", raw)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if _MOBILE.fullmatch(digits) or _LANDLINE.fullmatch(digits):
        return digits
    raise ValueError(f"{raw!r} is not a phone number (11-digit mobile or area code + number)")


def normalise_id(text: str) -> str:
    """An ID number upper-cased without spaces; "" for blank. ValueError if it cannot be
    one; an 18-character resident ID must have its check digit right (GB 11643)."""
    raw = re.sub(r"\s", "", text).upper()
    if not raw:
        return ""
    if not _ID.fullmatch(raw):
        raise ValueError("an ID number is 6 to 20 letters and digits")
    if _RESIDENT_ID.fullmatch(raw):
        total = sum(int(c) * w for c, w in zip(raw[:17], _ID_WEIGHTS, strict=True))
        if _ID_CHECK[total % 11] != raw[17]:
            raise ValueError("the check digit of this resident ID number is wrong")
    return raw


def id_hash(key: bytes, id_number: str) -> str:
    """HMAC-SHA256 of a normalised ID number, hex (64 characters)."""
    return hmac.new(key, id_number.encode(), hashlib.sha256).hexdigest()


def mask_phone(phone: str) -> str:
    """``13812345678`` -> ``138****5678``; a short number shows its last two digits only."""
    if len(phone) >= 8:
        return f"{phone[:3]}****{phone[-4:]}"
    return f"****{phone[-2:]}" if phone else ""


def mask_id(last4: str) -> str:
    """The ID number as shown: ``****1234`` (only the last four are kept anyway)."""
    return f"****{last4}" if last4 else ""
