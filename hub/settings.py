"""Hub settings: environment variables ``WUYE_HUB_*`` (or a ``.env`` file outside the repo).

Built by :func:`load_settings` in a process's entry point, never at import time. Outside
development the JWT secret must be given; in development (the demo) one is generated at
first run and kept in ``var/`` so tokens survive restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy.secrets import read_or_create_secret
from hub.workorders.lifecycle import DEFAULT_SLA, SlaPolicy
from protocols.alarms.model import Severity
from protocols.errors import ConfigError

# device profile -> the skill its alarms' work orders need (WUYE_HUB_WORKORDER_SKILLS, JSON)
DEFAULT_SKILLS = {
    "pump-station": "plumbing",
    "water-meter": "plumbing",
    "lift": "lift",
    "em-1p": "electrical",
    "em-3p": "electrical",
}


# billing vouchers (记账凭证) for finance software: role -> account code
# (WUYE_HUB_BILLING_ACCOUNTS, JSON; keys left out keep these; see docs/BILLING.md "Reports")
DEFAULT_ACCOUNTS = {
    "cash": "1001",  # 库存现金
    "pos": "1002",  # 银行存款
    "transfer": "1002",
    "online": "1002",
    "money": "1001",  # money in or out that no payment names the method of
    "receivable": "1122",  # 应收账款
    "prepaid": "2203",  # 预收账款
    "revenue.property": "6001",  # 主营业务收入
    "revenue.parking": "6001",
    "revenue.rent": "6051",  # 其他业务收入
    "revenue.utilities": "2241",  # 其他应付款: collected at cost, passed on
    "revenue.deposit": "2241",  # deposits are owed back
    "revenue.other": "6051",
    "waiver": "",  # '' = against the revenue account of the bill's category; or e.g. 5601
}


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WUYE_HUB_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///var/hub.db"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    ingest_group: str = "wuye-ingest"  # shared-subscription group: processes split the load
    ingest_batch: int = Field(500, ge=1, le=10_000)  # messages per transaction at most
    ingest_linger_ms: int = Field(50, ge=0, le=5000)  # wait for a batch to fill
    max_payload: int = Field(256 * 1024, ge=1024)  # larger payloads are dead letters
    # every this often each online gateway is told what the hub holds of its stream (as
    # after every commit), so an edge learns of a tail the broker lost; gaps younger than
    # the grace are not yet asked for again (another ingest process may hold them)
    watermark_interval_s: float = Field(5.0, gt=0, le=3600)
    gap_grace_s: float = Field(2.0, ge=0, le=3600)
    # test hook: a message on this exact topic kills the ingest thread (never set in
    # production; the suite and the demo's supervisor check use it)
    test_die_topic: str = ""
    silence_s: float = 60.0  # a gateway quiet this long (and no death) counts as offline
    # telemetry: a v2 write endpoint (InfluxDB 2.x/3.x, VictoriaMetrics), or SQL when unset
    influx_url: str | None = None
    influx_token: str = ""
    influx_org: str = "wuye"
    influx_bucket: str = "wuye"
    spill_dir: Path = Path("var/spill")
    telemetry_retention_days: int = Field(30, ge=1)  # SQL telemetry only
    seen_retention_days: int = Field(14, ge=1)  # how long a (gateway, seq) is remembered
    jwt_secret: str | None = None
    jwt_ttl_s: int = 8 * 3600
    secret_file: Path = Path("var/hub-secret")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    embedded_ingest: bool = True  # `serve` also runs ingest in the same process
    # payments: the sandbox provider (python -m simulators.paychannel), development only
    pay_sandbox_url: str | None = None  # unset: no sandbox channel
    pay_sandbox_secret: str | None = None  # shared with the sandbox; else pay_secret_file
    pay_secret_file: Path = Path("var/pay-sandbox-secret")
    pay_notify_url: str | None = None  # base URL channels reach the hub at (default: API)
    pay_notify_max_age_s: int = Field(300, ge=1)  # older signatures may not credit
    # work orders: alarms at or above this severity open one; skills by device profile
    workorder_min_severity: Severity = Severity.MAJOR
    workorder_skills: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SKILLS))
    workorder_sla: SlaPolicy = DEFAULT_SLA  # JSON: {"terms": {"urgent": {"accept": "PT15M", ...
    workorder_auto_assign: bool = True  # round-robin among engineers on duty
    attachments_dir: Path = Path("var/attachments")
    attachment_max_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    attachment_max_files: int = Field(6, ge=1, le=50)  # per work order
    # notifications: a webhook (signed POST, retried until 2xx)
    notify_webhook_url: str | None = None  # unset: notifications wait in the outbox
    notify_webhook_secret: str | None = None  # else notify_secret_file
    notify_secret_file: Path = Path("var/notify-webhook-secret")
    notify_retry_first_s: float = Field(1.0, gt=0)  # doubling after each failure ...
    notify_retry_cap_s: float = Field(300.0, gt=0)  # ... up to this
    notify_timeout_s: float = Field(10.0, gt=0)  # no answer within this is a failure
    notify_give_up_s: int = Field(86400, ge=60)  # undelivered this long after it was made
    notify_poll_s: float = Field(1.0, gt=0)  # the sender looks for due notifications
    # property registry: of an ID number only its last 4 and HMAC-SHA256(key, number) are
    # kept, so the same person is recognised in a later import; every hub process of one
    # database needs the same key (a lost key only loses that recognition)
    person_id_key: str | None = None  # else person_key_file
    person_key_file: Path = Path("var/person-id-key")
    # reminders (催费): SMS and WeChat template messages, each off until its URL is set;
    # secrets given, or generated once into their files (the local peers read the same)
    sms_url: str | None = None  # the SMS platform's base URL
    sms_key_id: str = "wuye-hub"  # access key id
    sms_secret: str | None = None  # access key secret; else sms_secret_file
    sms_secret_file: Path = Path("var/sms-access-secret")
    sms_sign_name: str = "物业服务中心"  # the approved signature (签名) in 【】
    sms_templates: dict[str, str] = Field(
        default_factory=lambda: {"arrears": "SMS_ARREARS", "warning": "SMS_WARNING"}
    )
    sms_price_fen: int = Field(10, ge=0)  # what one billed segment costs
    wechat_url: str | None = None  # the official-account API (https://api.weixin.qq.com)
    wechat_appid: str = ""
    wechat_secret: str | None = None  # AppSecret; else wechat_secret_file
    wechat_secret_file: Path = Path("var/wechat-app-secret")
    wechat_templates: dict[str, str] = Field(
        default_factory=lambda: {"arrears": "TPL_ARREARS", "warning": "TPL_WARNING"}
    )
    reminder_batch: int = Field(100, ge=1, le=1000)  # messages per provider call
    reminder_warning_days: int = Field(7, ge=0, le=90)  # warn of bills due this soon
    billing_accounts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ACCOUNTS))

    @field_validator("billing_accounts")
    @classmethod
    def _accounts(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(DEFAULT_ACCOUNTS))
        if unknown:
            raise ValueError(f"unknown account roles {unknown}; known: {sorted(DEFAULT_ACCOUNTS)}")
        merged = {**DEFAULT_ACCOUNTS, **{k: c.strip() for k, c in v.items()}}
        empty = sorted(k for k, c in merged.items() if not c and k != "waiver")
        if empty:
            raise ValueError(f"account roles without a code: {empty}")
        return merged

    @model_validator(mode="after")
    def _secret(self) -> HubSettings:
        if self.jwt_secret is None and self.environment == "production":
            raise ConfigError("environment", "WUYE_HUB_JWT_SECRET", "required in production")
        if self.pay_sandbox_url and self.environment == "production":
            # anyone could "pay" through a sandbox: free parking
            raise ConfigError("environment", "WUYE_HUB_PAY_SANDBOX_URL", "development only")
        return self

    def secret(self) -> str:
        """The JWT signing secret; in development, generated once and kept in secret_file."""
        if self.jwt_secret:
            return self.jwt_secret
        return read_or_create_secret(self.secret_file)

    def pay_secret(self) -> str:
        """The sandbox channel's shared secret; if not given, generated once in its file.

        The sandbox reads the same file (``--secret-file``); whichever starts first makes it.
        """
        if self.pay_sandbox_secret:
            return self.pay_sandbox_secret
        return read_or_create_secret(self.pay_secret_file)

    def person_key(self) -> bytes:
        """The key of the ID numbers' keyed hash; if not given, generated once in its file."""
        return (self.person_id_key or read_or_create_secret(self.person_key_file)).encode()

    def notify_secret(self) -> str:
        """The webhook signing secret; if not given, generated once in its file."""
        if self.notify_webhook_secret:
            return self.notify_webhook_secret
        return read_or_create_secret(self.notify_secret_file)

    def sms_access_secret(self) -> str:
        """The SMS access key secret; if not given, generated once in its file."""
        return self.sms_secret or read_or_create_secret(self.sms_secret_file)

    def wechat_app_secret(self) -> str:
        """The WeChat AppSecret; if not given, generated once in its file."""
        return self.wechat_secret or read_or_create_secret(self.wechat_secret_file)


def load_settings(**overrides: object) -> HubSettings:
    return HubSettings(**overrides)  # type: ignore[arg-type]
