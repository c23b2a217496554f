"""Chinese vehicle plates (机动车号牌): syntax only.

A plate is a province character, the issuing authority's letter, then the serial:

- ordinary (blue/yellow): 5 letters or digits, ``浙A12345``, ``粤B8C9D2``;
- new energy (green), 6 characters: small vehicles D or F (electric or hybrid), then a
  letter or digit, then 4 digits, ``浙AD12345``; large vehicles 5 digits, then D or F,
  ``沪A12345D``;
- special: 4 letters or digits and a suffix character, ``京A1234学`` (driving school),
  ``粤B1234挂`` (trailer), also 警 港 澳 领 试 超.

Serials never use the letters I and O (they read as 1 and 0). A camera's misread is often
still a well-formed plate: this module can refuse garbage, not tell a wrong plate.
"""

from __future__ import annotations

import re
import string
from enum import StrEnum

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
SPECIAL_SUFFIXES = "学警挂港澳领试超"
_S = "[A-HJ-NP-Z0-9]"  # a serial character: no I, no O
_HEAD = f"[{PROVINCES}][A-Z]"


class PlateKind(StrEnum):
    ORDINARY = "ordinary"
    NEW_ENERGY = "new_energy"
    SPECIAL = "special"


_PATTERNS = (
    (PlateKind.ORDINARY, re.compile(f"{_HEAD}{_S}{{5}}")),
    (PlateKind.NEW_ENERGY, re.compile(f"{_HEAD}(?:[DF]{_S}[0-9]{{4}}|[0-9]{{5}}[DF])")),
    (PlateKind.SPECIAL, re.compile(f"{_HEAD}{_S}{{4}}[{SPECIAL_SUFFIXES}]")),
)


_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def normalise_plate(text: str) -> str:
    """The plate as stored: no spaces, no middle dot (``浙A·12345``), letters upper case.

    Only ASCII letters change case: ``str.upper`` would turn a long s (``ſ``) into S and a
    ligature (``ﬀ``) into FF, making a plate of garbage."""
    return "".join(text.split()).replace("·", "").replace("•", "").translate(_ASCII_UPPER)


def plate_kind(text: str) -> PlateKind:
    """The kind of the (normalised) plate ``text``; ValueError if it is not a plate."""
    for kind, pattern in _PATTERNS:
        if pattern.fullmatch(text):
            return kind
    raise ValueError(f"not a Chinese plate: {text!r}")


def check_plate(text: str) -> str:
    """``text`` normalised if it is a well-formed plate; ValueError otherwise."""
    plate = normalise_plate(text)
    plate_kind(plate)
    return plate
