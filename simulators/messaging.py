"""Local message providers for the hub's reminders: an SMS platform and WeChat's
official-account API, answering as their documentation says, over real HTTP.

**SMS** (an HMAC-signed batch API, modelled on Chinese SMS platforms such as Aliyun's
SendBatchSms / Tencent Cloud's SendSms). ``POST /sms/v1/batch-send`` with headers
``X-Sms-Key`` (access key id), ``X-Sms-Timestamp`` (unix seconds, at most 300 s off),
``X-Sms-Nonce`` (never used before) and ``X-Sms-Signature`` = hex(HMAC-SHA256(secret,
"POST\\n/sms/v1/batch-send\\n{timestamp}\\n{nonce}\\n{hex(SHA-256(body))}")), checked here
independently of the hub; body ``{"sign_name", "template_id", "out_id", "messages":
[{"phone", "params"}]}`` (1 to 1000 messages). Answers: 200 ``{"code": "OK", "request_id",
"results": [{"phone", "code", "message", "message_id", "fee"}]}`` (``fee``: segments
billed, 70 characters for one, 67 each when longer; a malformed phone is
``InvalidPhoneNumber`` with fee 0), or for the whole request 401
``MissingAuthorization`` / ``InvalidAccessKeyId`` / ``SignatureDoesNotMatch`` /
``RequestExpired`` / ``NonceReused``, 400 ``InvalidParameter`` / ``InvalidTemplate``,
503 ``ServiceUnavailable`` (when told to fail), all ``{"code", "message", "request_id"}``.

**WeChat** (as https://developers.weixin.qq.com documents it). ``GET /cgi-bin/token?
grant_type=client_credential&appid=&secret=`` gives ``{"access_token", "expires_in": 7200}``
or ``{"errcode": 40013 | 40125 | 40002, "errmsg"}``; a new token leaves the previous one
valid for five more minutes. ``POST /cgi-bin/message/template/send?access_token=`` with
``{"touser", "template_id", "url"?, "data": {keyword: {"value"}}}`` answers (always HTTP
200) ``{"errcode": 0, "errmsg": "ok", "msgid"}``, or errcode 41001 (no token), 40001
(invalid or not latest), 42001 (expired), 40003 (invalid openid), 43004 (not following),
40037 (invalid template_id), 47003 (a keyword missing), -1 (system busy, when told to).

    python -m simulators.messaging sms --port 8092 --secret-file var/sms-access-secret
    python -m simulators.messaging wechat --port 8093 --secret-file var/wechat-app-secret
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self

import typer
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy.secrets import read_or_create_secret

SMS_PATH = "/sms/v1/batch-send"
SMS_TEMPLATES = {  # as approved on the platform (模板)
    "SMS_ARREARS": "尊敬的{name}，您的房屋{rooms}截至{date}欠费{amount}元，请尽快缴纳。",
    "SMS_WARNING": "尊敬的{name}，您的房屋{rooms}有{amount}元费用将于{due}到期，请按时缴纳。",
}
WECHAT_TEMPLATES = {  # template id -> its keywords
    "TPL_ARREARS": ("thing1", "amount2", "time3", "thing4"),
    "TPL_WARNING": ("thing1", "amount2", "time3", "thing4"),
}
_MOBILE = re.compile(r"1[3-9]\d{9}")


class _QuietServer(uvicorn.Server):
    """No signal handling of its own: the owner decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Peer:
    """Serves ``self.app`` on a free port as an async context manager; ``wait_for`` waits
    for a state change (no polling)."""

    app: FastAPI

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._changed = asyncio.Condition()
        self._server: _QuietServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, log_level="warning"
        )
        self._server = _QuietServer(config)
        self._serving = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"{type(self).__name__}-http"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._serving is not None
        self._server.should_exit = True
        await self._serving

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _touch(self) -> None:
        async with self._changed:
            self._changed.notify_all()


# -- SMS ---------------------------------------------------------------------------------------
@dataclass
class SmsRequest:
    """One batch request as it arrived and how it was answered."""

    status: int
    code: str
    body: dict[str, Any] | None
    phones: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sms:
    phone: str
    text: str
    template_id: str
    params: dict[str, str]
    fee: int
    message_id: str


def segments(text: str) -> int:
    """Billed segments of a Chinese SMS: 70 characters in one, else 67 each."""
    return 1 if len(text) <= 70 else math.ceil(len(text) / 67)


class SmsPlatform(_Peer):
    def __init__(
        self,
        secret: bytes,
        *,
        key_id: str = "wuye-hub",
        templates: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_age_s: int = 300,
    ) -> None:
        super().__init__(host, port)
        self.secret, self.key_id, self.max_age_s = secret, key_id, max_age_s
        self.templates = dict(SMS_TEMPLATES if templates is None else templates)
        self.requests: list[SmsRequest] = []
        self.sent: list[Sms] = []
        self.fail = 0  # answer the next N well-signed requests 503, sending nothing
        self.on_request: Callable[[SmsRequest], None] | None = None  # before answering
        self._nonces: set[str] = set()
        self.app = self._make_app()

    def _refuse(self, headers: dict[str, str], raw: bytes) -> tuple[int, str] | None:
        ts, nonce = headers.get("x-sms-timestamp", ""), headers.get("x-sms-nonce", "")
        given, key = headers.get("x-sms-signature", ""), headers.get("x-sms-key", "")
        if not (ts and nonce and given and key):
            return 401, "MissingAuthorization"
        if key != self.key_id:
            return 401, "InvalidAccessKeyId"
        text = f"POST\n{SMS_PATH}\n{ts}\n{nonce}\n{hashlib.sha256(raw).hexdigest()}"
        want = hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, given):
            return 401, "SignatureDoesNotMatch"
        if not ts.isdigit() or abs(time.time() - int(ts)) > self.max_age_s:
            return 401, "RequestExpired"
        if nonce in self._nonces:
            return 401, "NonceReused"
        self._nonces.add(nonce)
        return None

    def _batch(self, body: Any) -> tuple[int, dict[str, Any]]:
        msgs = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(msgs, list) or not 1 <= len(msgs) <= 1000:
            return 400, {"code": "InvalidParameter", "message": "1 to 1000 messages"}
        template = self.templates.get(str(body.get("template_id")))
        if template is None:
            return 400, {"code": "InvalidTemplate", "message": "unknown template_id"}
        sign_name, results, texts = str(body.get("sign_name", "")), [], []
        for m in msgs:
            try:
                texts.append(f"【{sign_name}】" + template.format(**m["params"]))
            except (KeyError, TypeError) as exc:
                return 400, {"code": "InvalidParameter", "message": f"template param {exc}"}
        for m, text in zip(msgs, texts, strict=True):
            phone = str(m.get("phone", ""))
            if not _MOBILE.fullmatch(phone):
                results.append(
                    {"phone": phone, "code": "InvalidPhoneNumber", "message": "bad", "fee": 0}
                )
                continue
            sms = Sms(
                phone, text, body["template_id"], m["params"], segments(text), secrets.token_hex(8)
            )
            self.sent.append(sms)
            results.append(
                {
                    "phone": phone,
                    "code": "OK",
                    "message": "OK",
                    "message_id": sms.message_id,
                    "fee": sms.fee,
                }
            )
        return 200, {"code": "OK", "message": "OK", "results": results}

    async def _receive(self, request: Request) -> JSONResponse:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        refused = self._refuse(headers, raw)
        if refused is not None:
            status, answer = refused[0], {"code": refused[1], "message": refused[1]}
        elif self.fail > 0:
            self.fail -= 1
            status, answer = 503, {"code": "ServiceUnavailable", "message": "try again later"}
        else:
            status, answer = self._batch(body)
        phones = [str(m.get("phone")) for m in (body or {}).get("messages", []) or []]
        req = SmsRequest(status, answer["code"], body, phones)
        if self.on_request is not None:
            self.on_request(req)
        self.requests.append(req)
        await self._touch()
        return JSONResponse(answer | {"request_id": secrets.token_hex(8)}, status_code=status)

    def _make_app(self) -> FastAPI:
        app = FastAPI(title="wuye SMS platform (local)")

        @app.post(SMS_PATH)
        async def send(request: Request) -> JSONResponse:
            return await self._receive(request)

        @app.get("/sms/v1/sent")
        async def sent() -> list[dict[str, Any]]:
            return [s.__dict__ for s in self.sent]

        return app


# -- WeChat ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateMessage:
    touser: str
    template_id: str
    data: dict[str, str]
    msgid: int


class WechatPlatform(_Peer):
    def __init__(
        self,
        appid: str,
        secret: str,
        *,
        templates: dict[str, tuple[str, ...]] | None = None,
        unfollowed: set[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl_s: int = 7200,
    ) -> None:
        super().__init__(host, port)
        self.appid, self.secret, self.token_ttl_s = appid, secret, token_ttl_s
        self.templates = dict(WECHAT_TEMPLATES if templates is None else templates)
        self.unfollowed = unfollowed or set()
        self.tokens: dict[str, float] = {}  # token -> valid until (time.time())
        self.token_requests = 0
        self.answers: list[int] = []  # errcode of every send, in order
        self.sent: list[TemplateMessage] = []
        self.fail = 0  # answer the next N sends errcode -1
        self._msgid = 200228332
        self.app = self._make_app()

    def expire_tokens(self) -> None:
        """Every token issued so far is past its expires_in: sends get 42001."""
        self.tokens = dict.fromkeys(self.tokens, 0.0)

    def _token(self, grant: str, appid: str, secret: str) -> dict[str, Any]:
        if grant != "client_credential":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        if appid != self.appid:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        now = time.time()
        self.token_requests += 1
        # the previous token stays valid five more minutes (WeChat's documented overlap)
        self.tokens = {t: min(until, now + 300) for t, until in self.tokens.items()}
        token = secrets.token_urlsafe(48)
        self.tokens[token] = now + self.token_ttl_s
        return {"access_token": token, "expires_in": self.token_ttl_s}

    def _send(self, token: str | None, body: Any) -> dict[str, Any]:
        if not token:
            return {"errcode": 41001, "errmsg": "access_token missing"}
        until = self.tokens.get(token)
        if until is None:
            return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        if until <= time.time():
            return {"errcode": 42001, "errmsg": "access_token expired"}
        if self.fail > 0:
            self.fail -= 1
            return {"errcode": -1, "errmsg": "system error"}
        if not isinstance(body, dict):
            return {"errcode": 47001, "errmsg": "data format error"}
        touser, tid, data = body.get("touser"), body.get("template_id"), body.get("data")
        if not isinstance(touser, str) or not touser.startswith("o"):
            return {"errcode": 40003, "errmsg": "invalid openid"}
        if touser in self.unfollowed:
            return {"errcode": 43004, "errmsg": "require subscribe"}
        keywords = self.templates.get(str(tid))
        if keywords is None:
            return {"errcode": 40037, "errmsg": "invalid template_id"}
        values = {k: v.get("value") for k, v in (data or {}).items() if isinstance(v, dict)}
        if any(not isinstance(values.get(k), str) for k in keywords):
            return {"errcode": 47003, "errmsg": "argument invalid! data.value missing"}
        self._msgid += 1
        self.sent.append(
            TemplateMessage(touser, str(tid), {k: str(v) for k, v in values.items()}, self._msgid)
        )
        return {"errcode": 0, "errmsg": "ok", "msgid": self._msgid}

    def _make_app(self) -> FastAPI:
        app = FastAPI(title="wuye WeChat official-account API (local)")

        @app.get("/cgi-bin/token")
        async def token(grant_type: str = "", appid: str = "", secret: str = "") -> dict[str, Any]:
            answer = self._token(grant_type, appid, secret)
            await self._touch()
            return answer

        @app.post("/cgi-bin/message/template/send")
        async def send(request: Request, access_token: str | None = None) -> dict[str, Any]:
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = None
            answer = self._send(access_token, body)
            self.answers.append(int(answer["errcode"]))
            await self._touch()
            return answer

        return app


# -- command line ------------------------------------------------------------------------------
app = typer.Typer(add_completion=False, help="Local SMS and WeChat providers for the hub.")


async def _serve(peer: _Peer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with peer:
        print("READY " + json.dumps({"url": peer.url, "pid": os.getpid()}), flush=True)
        await stop.wait()


@app.command()
def sms(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (see the READY line)")] = 8092,
    key_id: str = "wuye-hub",
    secret_file: Annotated[
        Path, typer.Option(help="shared with the hub (WUYE_HUB_SMS_SECRET_FILE)")
    ] = Path("var/sms-access-secret"),
) -> None:
    """The SMS platform, until SIGINT or SIGTERM."""
    secret = read_or_create_secret(secret_file).encode()
    asyncio.run(_serve(SmsPlatform(secret, key_id=key_id, host=host, port=port)))


@app.command()
def wechat(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (see the READY line)")] = 8093,
    appid: str = "wx-wuye-dev",
    secret_file: Annotated[
        Path, typer.Option(help="shared with the hub (WUYE_HUB_WECHAT_SECRET_FILE)")
    ] = Path("var/wechat-app-secret"),
) -> None:
    """WeChat's official-account API, until SIGINT or SIGTERM."""
    secret = read_or_create_secret(secret_file)
    asyncio.run(_serve(WechatPlatform(appid, secret, host=host, port=port)))


if __name__ == "__main__":
    app()
