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
    return orjson.dumps({**base, **kw})


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
