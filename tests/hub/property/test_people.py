"""Phones and ID numbers as kept and shown (pure)."""

from __future__ import annotations

import pytest

from hub.property.people import id_hash, mask_id, mask_phone, normalise_id, normalise_phone
from tests.hub.property.conftest import resident_id


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("13812345678", "13812345678"),
        ("+86 138-1234-5678", "13812345678"),
        ("021-62345678", "02162345678"),
        ("", ""),
    ],
)
def test_phones_are_kept_as_digits(text, kept):
    assert normalise_phone(text) == kept


@pytest.mark.parametrize("text", ["12345", "23812345678", "1381234567a", "138123456789"])
def test_what_is_not_a_phone(text):
    with pytest.raises(ValueError, match="not a phone number"):
        normalise_phone(text)


def test_id_numbers_check_digit_and_hash():
    good = resident_id("11010519491231002")
    assert normalise_id(good.lower()) == good.upper()
    wrong = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(ValueError, match="check digit"):
        normalise_id(wrong)
    with pytest.raises(ValueError, match="6 to 20"):
        normalise_id("12-34")
    assert normalise_id("E12345678") == "E12345678"  # a passport
    assert id_hash(b"k", good) == id_hash(b"k", good) != id_hash(b"other", good)
    assert len(id_hash(b"k", good)) == 64


def test_masks():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("02162345678") == "021****5678"
    assert mask_phone("") == ""
    assert mask_id("1234") == "****1234"
    assert mask_id("") == ""
