import json

import orjson
import pytest

from protocols.errors import MessageError
from protocols.mqtt import Data, Kind, Topic, parse


def test_topic_round_trip():
    t = Topic("sunny-garden", "gw-01", Kind.DATA, "em-101")
    assert str(t) == "wuye/v1/sunny-garden/gw-01/data/em-101"
    assert Topic.parse(str(t)) == t


@pytest.mark.parametrize(
    "topic",
    [
        "wuye/v2/s/g/data/d",
        "wuye/v1/s/g/weather",
        "wuye/v1/s/g/data",  # data needs a device
        "wuye/v1/s/g/birth/d",  # birth has none
        "wuye/v1/S!/g/birth",
        "wuye/v1/s/+/birth",
    ],
)
def test_bad_topics_are_refused(topic):
    with pytest.raises(MessageError):
        Topic.parse(topic)


def data(**kw):
    base = {"v": 1, "gw": "gw-01", "seq": 7, "ts": 1, "dev": "em-1", "values": {"kwh": 1.5}}
    return json.dumps({**base, **kw}).encode()  # json: integers past 64 bits too


def test_parse_accepts_a_data_message():
    topic, msg = parse("wuye/v1/s/gw-01/data/em-1", data())
    assert isinstance(msg, Data) and msg.seq == 7 and not msg.hist
    assert topic.device == "em-1"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (data(v=2), "unknown schema version"),
        (data(seq=0), "seq"),
        (data(values={"kwh": "lots"}), "values.kwh"),
        (data(gw="gw-02"), "published on 'gw-01'"),  # a gateway speaking for another
        (data(dev="em-2"), "published on 'em-1'"),
        (data(extra=1), "extra"),
    ],
)
def test_parse_refuses_bad_payloads(payload, why):
    with pytest.raises(MessageError, match=why):
        parse("wuye/v1/s/gw-01/data/em-1", payload)


# Exactly the contract's types and ranges: a value that is not is refused, never coerced.
# (Before, seq "7" or true was taken as 7 or 1, so the real message 1 arriving later was
# dropped as a duplicate; a seq past 64 bits or a ts past year 9999 killed ingest.)
@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"seq": True}, "seq"),
        ({"seq": "7"}, "seq"),
        ({"seq": 7.0}, "seq"),
        ({"seq": 2**53}, "seq"),
        ({"seq": 2**64}, "seq"),
        ({"seq": 10**30}, "seq"),  # orjson reads it as a float
        ({"ts": "1795334400000"}, "ts"),
        ({"ts": 253_402_300_800_000}, "ts"),  # year 10000
        ({"ts": -1}, "ts"),
        ({"hist": "yes"}, "hist"),
        ({"hist": 1}, "hist"),
        ({"values": {"kwh": "220.5"}}, "values.kwh"),
        ({"values": {"kwh": None}}, "values.kwh"),
        ({"v": True}, "version"),
    ],
)
def test_parse_refuses_what_is_not_exactly_the_contracts_type(fields, where):
    with pytest.raises(MessageError, match=where):
        parse("wuye/v1/s/gw-01/data/em-1", data(**fields))


def test_the_contracts_extremes_are_accepted():
    _, msg = parse(
        "wuye/v1/s/gw-01/data/em-1",
        data(seq=2**53 - 1, ts=253_402_300_799_999, values={"a": 1, "b": 2.5, "c": True}),
    )
    assert msg.seq == 2**53 - 1 and msg.values == {"a": 1, "b": 2.5, "c": True}
    assert type(msg.values["a"]) is int and type(msg.values["c"]) is bool


@pytest.mark.parametrize(
    ("kind", "payload", "where"),
    [
        (
            "birth",
            {
                "gw": "gw-01",
                "site": "s",
                "bdseq": 2**63,
                "stream": "x",
                "ts": 1,
                "agent": "a",
                "devices": [],
            },
            "bdseq",
        ),
        (
            "birth",
            {
                "gw": "gw-01",
                "site": "s",
                "bdseq": 1,
                "stream": "x",
                "ts": 10**17,
                "agent": "a",
                "devices": [],
            },
            "ts",
        ),
        ("death", {"gw": "gw-01", "bdseq": "3"}, "bdseq"),
        ("status", {"gw": "gw-01", "ts": 10**17, "metrics": {}, "devices": {}}, "ts"),
        ("status", {"gw": "gw-01", "ts": 1, "metrics": {"a": "1"}, "devices": {}}, "metrics"),
    ],
)
def test_births_deaths_and_status_are_strict_too(kind, payload, where):
    with pytest.raises(MessageError, match=where):
        parse(f"wuye/v1/s/gw-01/{kind}", orjson.dumps({"v": 1, **payload}))
