"""Channels to message providers that charge per message: SMS and WeChat template messages.

Unlike the webhook (one notification, one request), these send a *batch*: one SMS request
carries many phones, each with its own template parameters; WeChat has no batch call, so a
batch is sent message by message with one access token. A channel makes one attempt at a
batch and says, per message, how it went; claiming, re-checking, retrying with back-off and
recording are the caller's (:mod:`hub.billing.reminders`).

**SMS** (modelled on the HMAC-signed HTTP APIs of Chinese SMS platforms, e.g. Aliyun's
SendBatchSms and Tencent Cloud's SendSms)::

    POST {base}/sms/v1/batch-send
    X-Sms-Key: <access key id>   X-Sms-Timestamp: <unix s>   X-Sms-Nonce: <random, once>
    X-Sms-Signature: hex(HMAC-SHA256(access secret,
                         "POST\\n/sms/v1/batch-send\\n{timestamp}\\n{nonce}\\n{hex(SHA-256(body))}"))
    {"sign_name": "...", "template_id": "...", "out_id": "...",
     "messages": [{"phone": "13800000001", "params": {"name": "...", ...}}, ...]}

answered ``200 {"code": "OK", "request_id": ..., "results": [{"phone", "code", "message",
"message_id", "fee"}]}`` (``fee``: billed segments; a per-phone ``code`` other than ``OK``
is that phone refused for good), or a non-200 with ``{"code", "message"}`` for the whole
request (``SignatureDoesNotMatch``, ``RequestExpired``, ``NonceReused``, ``Throttling``,
``ServiceUnavailable`` ...), which sends nothing and is retried.

**WeChat** (the official-account API as documented by Tencent)::

    GET  {base}/cgi-bin/token?grant_type=client_credential&appid=APPID&secret=APPSECRET
         -> {"access_token": "...", "expires_in": 7200} | {"errcode": 40013, "errmsg": ...}
    POST {base}/cgi-bin/message/template/send?access_token=TOKEN
         {"touser": OPENID, "template_id": ID, "data": {"thing1": {"value": "..."}, ...}}
         -> {"errcode": 0, "errmsg": "ok", "msgid": 200228332}

always HTTP 200; ``errcode`` 40001 (token invalid or not the latest) or 42001 (expired) get
a new token and the message is sent once more; 43004 (not following), 40003 (bad openid)
refuse that person for good; anything else fails the attempt, to be retried.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

SMS_PATH = "/sms/v1/batch-send"
TOKEN_ERRORS = {40001, 42001}  # the token: get another and send again
PERSON_ERRORS = {40003, 43004, 43101}  # this person: never again for this message


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a batch: its outbox id, address (phone or openid) and parameters."""

    nid: int
    to: str
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one message went: sent (and billed ``units``), refused for good, or to retry."""

    nid: int
    sent: bool
    final: bool  # sent, or refused for this recipient: no retry
    status: int | None  # the HTTP status (None: no answer)
    detail: str = ""
    units: int = 0  # what the provider billed (SMS segments)
    message_id: str = ""


class BatchChannel(Protocol):
    name: str
    batch_max: int  # the provider's limit of messages per call

    def send_batch(self, template: str, batch: Sequence[Outgoing]) -> list[Outcome]:
        """One attempt at ``batch`` with template ``template`` (a reminder kind); an
        outcome per message, never raising for the provider's failures."""
        ...


def _call(req: urllib.request.Request, timeout_s: float) -> tuple[int | None, dict[str, Any], str]:
    """(HTTP status or None, the JSON answer or {}, a short reason)."""
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
        return None, {}, f"{type(exc).__name__}: {exc}"[:200]
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, {}, f"not JSON: {raw[:80]!r}"
    return status, answer if isinstance(answer, dict) else {}, ""


def sms_signature(secret: bytes, timestamp: int, nonce: str, body: bytes) -> str:
    text = f"POST\n{SMS_PATH}\n{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


class SmsChannel:
    """A batch of phones per request to an HMAC-signed SMS API."""

    name = "sms"

    def __init__(
        self,
        url: str,
        key_id: str,
        secret: bytes,
        sign_name: str,
        templates: Mapping[str, str],
        *,
        batch_max: int = 100,
        timeout_s: float = 10.0,
    ) -> None:
        self.url, self.key_id, self.secret = url.rstrip("/"), key_id, secret
        self.sign_name, self.templates = sign_name, dict(templates)
        self.batch_max, self.timeout_s = batch_max, timeout_s

    def send_batch(self, template: str, batch: Sequence[Outgoing]) -> list[Outcome]:
        body = orjson.dumps(
            {
                "sign_name": self.sign_name,
                "template_id": self.templates[template],
                "out_id": f"wuye-{batch[0].nid}-{len(batch)}",
                "messages": [{"phone": m.to, "params": dict(m.params)} for m in batch],
            }
        )
        ts, nonce = int(time.time()), secrets.token_hex(16)  # a retry is a new request
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wuye-hub-sms/1",
            "X-Sms-Key": self.key_id,
            "X-Sms-Timestamp": str(ts),
            "X-Sms-Nonce": nonce,
            "X-Sms-Signature": sms_signature(self.secret, ts, nonce, body),
        }
        req = urllib.request.Request(self.url + SMS_PATH, body, headers, method="POST")
        status, answer, reason = _call(req, self.timeout_s)
        if status != 200 or answer.get("code") != "OK":
            why = reason or f"{answer.get('code', '')}: {answer.get('message', '')}"
            return [Outcome(m.nid, False, False, status, why[:200]) for m in batch]
        results = {r.get("phone"): r for r in answer.get("results", []) if isinstance(r, dict)}
        out = []
        for m in batch:
            r = results.get(m.to)
            if r is None:  # the provider said nothing of it: it was not sent
                out.append(Outcome(m.nid, False, False, status, "no result for this phone"))
            elif r.get("code") == "OK":
                fee = int(r.get("fee", 1))
                out.append(Outcome(m.nid, True, True, status, "", fee, str(r.get("message_id"))))
            else:
                why = f"{r.get('code')}: {r.get('message', '')}"[:200]
                out.append(Outcome(m.nid, False, True, status, why))
        return out


@dataclass
class _Token:
    value: str = ""
    until: float = 0.0  # time.monotonic()
    lock: threading.Lock = field(default_factory=threading.Lock)


class WechatChannel:
    """Template messages (模板消息) of an official account, one request each."""

    name = "wechat"

    def __init__(
        self,
        url: str,
        appid: str,
        secret: str,
        templates: Mapping[str, str],
        *,
        batch_max: int = 100,
        timeout_s: float = 10.0,
    ) -> None:
        self.url, self.appid, self.secret = url.rstrip("/"), appid, secret
        self.templates, self.batch_max, self.timeout_s = dict(templates), batch_max, timeout_s
        self._token = _Token()
        self.tokens_fetched = 0

    def _access_token(self, stale: str = "") -> tuple[str, str]:
        """(a token, "") or ("", why not). ``stale``: the provider refused this one."""
        t = self._token
        with t.lock:  # one refresh at a time: a new token makes the old one "not latest"
            if t.value and t.value != stale and time.monotonic() < t.until:
                return t.value, ""
            q = urllib.parse.urlencode(
                {"grant_type": "client_credential", "appid": self.appid, "secret": self.secret}
            )
            status, answer, reason = _call(
                urllib.request.Request(f"{self.url}/cgi-bin/token?{q}"), self.timeout_s
            )
            token = answer.get("access_token")
            if status != 200 or not isinstance(token, str):
                return "", reason or f"token: {answer.get('errcode')} {answer.get('errmsg', '')}"
            self.tokens_fetched += 1
            # renew five minutes early: the provider's clock and ours differ
            t.value, t.until = token, time.monotonic() + int(answer.get("expires_in", 7200)) - 300
            return token, ""

    def _post(self, token: str, body: bytes) -> tuple[int | None, dict[str, Any], str]:
        q = urllib.parse.urlencode({"access_token": token})
        req = urllib.request.Request(
            f"{self.url}/cgi-bin/message/template/send?{q}",
            body,
            {"Content-Type": "application/json", "User-Agent": "wuye-hub-wechat/1"},
            method="POST",
        )
        return _call(req, self.timeout_s)

    def send_batch(self, template: str, batch: Sequence[Outgoing]) -> list[Outcome]:
        return [self._send(template, m) for m in batch]

    def _send(self, template: str, m: Outgoing) -> Outcome:
        body = orjson.dumps(
            {
                "touser": m.to,
                "template_id": self.templates[template],
                "data": {k: {"value": v} for k, v in m.params.items()},
            }
        )
        stale = ""
        for _ in range(2):  # once more with a new token if the old one was refused
            token, why = self._access_token(stale)
            if not token:
                return Outcome(m.nid, False, False, None, why[:200])
            status, answer, reason = self._post(token, body)
            code = answer.get("errcode")
            if status == 200 and code == 0:
                return Outcome(m.nid, True, True, status, "", 1, str(answer.get("msgid", "")))
            if code not in TOKEN_ERRORS:
                why = reason or f"{code}: {answer.get('errmsg', '')}"
                return Outcome(m.nid, False, code in PERSON_ERRORS, status, why[:200])
            stale = token
        return Outcome(m.nid, False, False, status, f"{code}: token refused twice")
