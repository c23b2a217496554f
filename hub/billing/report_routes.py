"""Billing reports over HTTP (``?format=json`` or ``xlsx``).

| what | who |
|---|---|
| collection, aging, detail, summary, vouchers of a site | hq_admin, site_manager, finance |
| a cashier's daily close | those, and the cashier himself (his own only) |
| today's collections (``/reports/live``) | hq_admin (all sites); site_manager, finance (theirs) |

Engineers and owners are refused (403, with the reason); another site's report is 404.
Amounts are fen in JSON and 元 in xlsx; "as of" defaults to today (Shanghai).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import CurrentUser, SessionDep, SettingsDep, attachment, forbid_unless
from hub.auth import Role
from hub.billing import exports, reports, vouchers
from hub.billing.errors import BillingError
from hub.billing.periods import local_date
from hub.billing.routes import PaymentPublic, _may, _month
from hub.models import User, utcnow

router = APIRouter(prefix="/api/v1", tags=["billing reports"])

REPORT = {Role.HQ_ADMIN, Role.SITE_MANAGER, Role.FINANCE}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
Format = Annotated[Literal["json", "xlsx"], Query(description="json (fen) or xlsx (元)")]
AsOf = Annotated[date | None, Query(description="entries booked on or before (default today)")]


def _reader(user: User, site: str, what: str) -> None:
    forbid_unless(user.role != Role.OWNER, f"{what} (billing reports are for staff)")
    _may(user, site, REPORT, what)


def _today() -> date:
    return local_date(utcnow())


def _xlsx(data: bytes, name: str) -> Response:
    return Response(data, media_type=XLSX, headers=attachment(name))


def _refuse(exc: BillingError) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _fen(name: str) -> Any:
    return Field(validation_alias=name)


class SumsOut(_Out):
    bills: int
    billed_fen: int = _fen("billed")
    received_fen: int = _fen("received")
    waived_fen: int = _fen("waived")
    outstanding_fen: int = _fen("outstanding")
    rate_pct: str | None = Field(validation_alias="rate", description="received/(billed-waived)")


class ArrearsOut(_Out):
    bills: int
    opening_fen: int = _fen("opening")
    received_fen: int = _fen("received")
    waived_fen: int = _fen("waived")
    outstanding_fen: int = _fen("outstanding")
    rate_pct: str | None = Field(validation_alias="rate", description="received/opening")


class RowOut(_Out):
    key: str
    name: str
    sums: SumsOut
    arrears: ArrearsOut


class CollectionOut(_Out):
    site: str
    month: str
    as_of: date
    total: RowOut
    buildings: list[RowOut]
    items: list[RowOut]


@router.get("/sites/{site}/reports/collection", response_model=CollectionOut)
def collection(
    site: str,
    month: str,
    user: CurrentUser,
    session: SessionDep,
    as_of: AsOf = None,
    format: Format = "json",
) -> Any:
    """收费率 of an accounting month: its bills and the arrears brought forward."""
    _reader(user, site, "collection reports")
    m = _month(month)
    try:
        c = reports.collection(session, site, m, as_of or _today())
    except BillingError as exc:
        raise _refuse(exc) from exc
    if format == "xlsx":
        return _xlsx(exports.collection_xlsx(c), f"collection-{site}-{m}.xlsx")
    return CollectionOut.model_validate(c)


class AgingRowOut(_Out):
    key: str
    name: str
    building: str
    buckets: list[int] = Field(description=f"fen, in the order {', '.join(reports.BUCKETS)}")
    total_fen: int = _fen("total")


class AgingOut(_Out):
    site: str
    as_of: date
    buckets: list[str] = list(reports.BUCKETS)
    total: AgingRowOut
    buildings: list[AgingRowOut]
    premises: list[AgingRowOut]


@router.get("/sites/{site}/reports/aging", response_model=AgingOut)
def aging(
    site: str, user: CurrentUser, session: SessionDep, as_of: AsOf = None, format: Format = "json"
) -> Any:
    """账龄 of what is outstanding at the end of ``as_of``, by days past the due date."""
    _reader(user, site, "aging reports")
    a = reports.aging(session, site, as_of or _today())
    if format == "xlsx":
        return _xlsx(exports.aging_xlsx(a), f"aging-{site}-{a.as_of}.xlsx")
    return AgingOut.model_validate(a)


class DetailLineOut(_Out):
    bill_id: int
    premises: str
    building: str
    item: str
    item_name: str
    category: str
    kind: str
    period_start: date
    period_last: date
    due_on: date
    billed_fen: int = _fen("billed")
    received_fen: int = _fen("received")
    waived_fen: int = _fen("waived")
    outstanding_fen: int = _fen("outstanding")


class DetailOut(BaseModel):
    site: str
    month: str
    as_of: date
    lines: list[DetailLineOut]


@router.get("/sites/{site}/reports/detail", response_model=DetailOut)
def detail(
    site: str,
    month: str,
    user: CurrentUser,
    session: SessionDep,
    as_of: AsOf = None,
    format: Format = "json",
) -> Any:
    """收费明细: every bill line of the month with what was paid, waived and is open."""
    _reader(user, site, "fee detail")
    m = _month(month)
    day = as_of or _today()
    try:
        lines = reports.detail(session, site, m, day)
    except BillingError as exc:
        raise _refuse(exc) from exc
    if format == "xlsx":
        return _xlsx(exports.detail_xlsx(lines), f"detail-{site}-{m}.xlsx")
    return DetailOut(
        site=site,
        month=str(m),
        as_of=day,
        lines=[DetailLineOut.model_validate(x) for x in lines],
    )


class SummaryRowOut(_Out):
    key: str
    name: str
    sums: SumsOut


class SummaryOut(_Out):
    site: str
    month: str
    as_of: date
    total: SummaryRowOut
    items: list[SummaryRowOut]
    categories: list[SummaryRowOut]


@router.get("/sites/{site}/reports/summary", response_model=SummaryOut)
def summary(
    site: str,
    month: str,
    user: CurrentUser,
    session: SessionDep,
    as_of: AsOf = None,
    format: Format = "json",
) -> Any:
    """收费汇总: the month's bills per fee item and per category."""
    _reader(user, site, "fee summaries")
    m = _month(month)
    try:
        sm = reports.summary(session, site, m, as_of or _today())
    except BillingError as exc:
        raise _refuse(exc) from exc
    if format == "xlsx":
        return _xlsx(exports.summary_xlsx(sm), f"summary-{site}-{m}.xlsx")
    return SummaryOut.model_validate(sm)


class MethodOut(_Out):
    method: str
    count: int
    fen: int


class ClosePaymentOut(_Out):
    receipt_no: str
    method: str
    amount_fen: int
    premises_id: int
    paid_at: Any
    voided_at: Any
    voided_by: str | None
    void_reason: str
    entries_fen: int


class DailyCloseOut(_Out):
    site: str
    day: date
    cashier: str
    methods: list[MethodOut]
    count: int
    total_fen: int
    entries_fen: int
    balanced: bool
    mismatches: list[str]
    first_receipt: str | None
    last_receipt: str | None
    receipts: int
    gap_free: bool
    gaps: list[str]
    others: list[str]
    voided: list[ClosePaymentOut]
    payments: list[ClosePaymentOut]


@router.get("/sites/{site}/reports/daily-close", response_model=DailyCloseOut)
def daily_close(
    site: str,
    user: CurrentUser,
    session: SessionDep,
    day: Annotated[date | None, Query(description="Payment.paid_on (default today)")] = None,
    cashier: Annotated[str | None, Query(max_length=64)] = None,
    format: Format = "json",
) -> Any:
    """日结 of a cashier's day (a cashier: his own; without ``cashier=``, his)."""
    if user.role == Role.CASHIER:
        _may(user, site, {Role.CASHIER}, "daily closes")
        forbid_unless(
            cashier in (None, user.username),
            "another cashier's daily close (a cashier reads his own)",
        )
        cashier = user.username
    else:
        _reader(user, site, "daily closes")
        if cashier is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "say whose: cashier=")
    d = reports.daily_close(session, site, day or _today(), cashier)
    if format == "xlsx":
        return _xlsx(exports.daily_close_xlsx(d), f"daily-close-{site}-{d.day}-{cashier}.xlsx")
    return DailyCloseOut.model_validate(d)


class VoucherLineOut(_Out):
    account: str
    summary: str
    debit_fen: int
    credit_fen: int


class VoucherOut(_Out):
    day: date
    voucher_no: str
    business: str
    summary: str
    debit_fen: int
    credit_fen: int
    lines: list[VoucherLineOut]


class VouchersOut(BaseModel):
    site: str
    start: date
    end: date
    accounts: dict[str, str]
    vouchers: list[VoucherOut]


@router.get("/sites/{site}/reports/vouchers", response_model=VouchersOut)
def voucher_export(
    site: str,
    start: date,
    end: date,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    format: Format = "json",
) -> Any:
    """记账凭证 of the entries booked from ``start`` through ``end``, by the chart of
    WUYE_HUB_BILLING_ACCOUNTS; each voucher balances."""
    _reader(user, site, "vouchers")
    try:
        vs = vouchers.vouchers(session, site, start, end, settings.billing_accounts)
    except BillingError as exc:
        raise _refuse(exc) from exc
    if format == "xlsx":
        return _xlsx(exports.vouchers_xlsx(vs), f"vouchers-{site}-{start}-{end}.xlsx")
    return VouchersOut(
        site=site,
        start=start,
        end=end,
        accounts=settings.billing_accounts,
        vouchers=[VoucherOut.model_validate(v) for v in vs],
    )


class SiteTodayOut(_Out):
    site: str
    count: int
    total_fen: int
    methods: list[MethodOut]
    voided: int


class LiveOut(BaseModel):
    day: date
    sites: list[SiteTodayOut]
    count: int
    total_fen: int
    methods: list[MethodOut]
    latest: list[PaymentPublic]


@router.get("/reports/live")
def live_collections(
    user: CurrentUser,
    session: SessionDep,
    latest: Annotated[int, Query(ge=0, le=200)] = 20,
    day: Annotated[date | None, Query(description="Payment.paid_on (default today)")] = None,
) -> LiveOut:
    """Today's (Shanghai) payments of every site the user sees, as committed: per site and
    method, the grand total, and the latest ``latest`` payments. ``day`` for another day."""
    forbid_unless(Role(user.role) in REPORT, f"live collections (a {user.role} may not)")
    sites = None if user.role == Role.HQ_ADMIN else list(user.sites)
    lv = reports.live(session, day or _today(), sites, latest)
    return LiveOut(
        day=lv.day,
        sites=[SiteTodayOut.model_validate(x) for x in lv.sites],
        count=lv.count,
        total_fen=lv.total_fen,
        methods=[MethodOut.model_validate(m) for m in lv.methods],
        latest=[PaymentPublic.model_validate(p, from_attributes=True) for p in lv.latest],
    )
