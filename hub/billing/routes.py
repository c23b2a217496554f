"""Fee billing over HTTP: fee items and prices, bindings, bill runs, closing months,
statements, desk payments with receipts, voids, and owners paying their bills online.

Who (every refusal a 403 with the reason; another site's object a 404):

| what | roles |
|---|---|
| fee items, prices, bindings | hq_admin, site_manager (write); finance, cashier (read) |
| bill runs, closing a month | hq_admin, site_manager, finance |
| desk payments | cashier, finance |
| voids | site_manager, finance |
| statements, bills, payments, receipts | hq_admin, site_manager, finance, cashier |
| own bills, paying them online, own receipts | owner (rooms he is recorded on) |

Engineers see no money.
"""

from __future__ import annotations

import threading
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from hub.api.deps import (
    BIGINT_MAX,
    CurrentUser,
    SessionDep,
    StaffUser,
    attachment,
    forbid_unless,
    not_found,
    row_id,
)
from hub.api.routes.payments import ChannelsDep
from hub.auth import Role, can_see_site
from hub.billing import adjust, fees, items, ledger, payments, refunds, runs
from hub.billing.allocation import Policy
from hub.billing.errors import BillingError, Conflict, MonthClosed, NotFound
from hub.billing.models import (
    Bill,
    BillRun,
    Category,
    ClosedMonth,
    FeeItem,
    Method,
    Payment,
    Refund,
)
from hub.billing.periods import Month, Timing
from hub.billing.receipts import receipt_pdf
from hub.models import User
from hub.payments import ChannelError, IdempotencyConflict, OrderNotPayable, prepare_payment
from hub.property import service as property_service
from hub.property.models import Premises

router = APIRouter(prefix="/api/v1", tags=["billing"])

CONFIGURE = {Role.HQ_ADMIN, Role.SITE_MANAGER}
RUN = {Role.HQ_ADMIN, Role.SITE_MANAGER, Role.FINANCE}
TAKE = {Role.CASHIER, Role.FINANCE}
VOID = {Role.SITE_MANAGER, Role.FINANCE}
READ = {Role.HQ_ADMIN, Role.SITE_MANAGER, Role.FINANCE, Role.CASHIER}


def _refuse(exc: BillingError) -> HTTPException:
    if isinstance(exc, NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, MonthClosed | Conflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


def _may(user: User, site: str, roles: set[Role], what: str) -> None:
    """404 for a site the user does not see; 403 with the reason for a role that may not."""
    if not can_see_site(user, site):
        raise not_found(f"site {site}")
    forbid_unless(Role(user.role) in roles, f"{what} (a {user.role} may not)")


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


def _premises(s: Session, user: User, premises_id: int, roles: set[Role], what: str) -> Premises:
    row_id(premises_id, "premises")
    p = s.get(Premises, premises_id)
    if p is None:
        raise not_found(f"premises {premises_id}")
    if user.role == Role.OWNER:
        mine = {x.id for x in property_service.premises_of_user(s, user.username)}
        if premises_id not in mine:
            raise not_found(f"premises {premises_id}")
        return p
    if not can_see_site(user, p.site_id):
        raise not_found(f"premises {premises_id}")
    forbid_unless(Role(user.role) in roles, f"{what} (a {user.role} may not)")
    return p


Fen = Annotated[int, Field(ge=0, le=payments.MAX_PAYMENT_FEN)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal(10**11), max_digits=18, decimal_places=4)]


# -- fee items ---------------------------------------------------------------------------------
class PriceIn(BaseModel):
    effective_from: date
    unit_fen: Money
    fixed_fen: Money = Decimal(0)


class FeeItemIn(BaseModel):
    code: Annotated[str, Field(min_length=1, max_length=32)]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    category: Category
    kind: fees.Kind
    prices: list[PriceIn] = Field(default_factory=list, max_length=100)
    cycle_months: int = 1
    timing: Timing = Timing.PREPAID
    advance_days: Annotated[int, Field(ge=0, le=366)] = 0
    due_days: Annotated[int, Field(ge=0, le=366)] = 0
    rounding: fees.Rounding = fees.Rounding.HALF_UP
    step: int = 1
    area_basis: fees.AreaBasis = fees.AreaBasis.BUILT
    refundable: bool = False
    late_fee_per_day: Annotated[Decimal, Field(ge=0, le=Decimal("0.01"))] = Decimal(0)
    late_fee_grace_days: Annotated[int, Field(ge=0, le=366)] = 0
    late_fee_cap: Annotated[Decimal | None, Field(ge=0, le=1)] = None
    vacant_discount_pct: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(0)


class PricePublic(BaseModel):
    effective_from: date
    unit_fen: Decimal
    fixed_fen: Decimal


class FeeItemPublic(BaseModel):
    id: int
    site_id: str
    code: str
    name: str
    category: str
    kind: str
    cycle_months: int
    timing: str
    advance_days: int
    due_days: int
    rounding: str
    step: int
    area_basis: str
    refundable: bool
    late_fee_per_day: Decimal
    late_fee_grace_days: int
    late_fee_cap: Decimal | None
    vacant_discount_pct: Decimal
    prices: list[PricePublic]


def _item_public(item: FeeItem, prices: list[Any]) -> FeeItemPublic:
    return FeeItemPublic(
        **item.model_dump(exclude={"created_by", "created_at"}),
        prices=[
            PricePublic(effective_from=p.effective_from, unit_fen=p.unit, fixed_fen=p.fixed)
            for p in sorted(prices, key=lambda p: p.effective_from)
        ],
    )


@router.get("/sites/{site}/fee-items")
def list_items(site: str, user: StaffUser, session: SessionDep) -> list[FeeItemPublic]:
    _may(user, site, READ, "fee items")
    rows = session.exec(
        select(FeeItem).where(FeeItem.site_id == site).order_by(col(FeeItem.code))
    ).all()
    prices = items.prices_of(session, [r.id for r in rows if r.id is not None])
    return [_item_public(r, prices[r.id or 0]) for r in rows]


@router.post("/sites/{site}/fee-items", status_code=status.HTTP_201_CREATED)
def create_item(site: str, body: FeeItemIn, user: StaffUser, session: SessionDep) -> FeeItemPublic:
    """A fee item with its prices; every price has an effective date (a missing one is 422)."""
    _may(user, site, CONFIGURE, "setting up fee items")
    new = items.NewItem(
        **body.model_dump(exclude={"prices"}),
        prices=tuple(
            items.NewPrice(p.effective_from, p.unit_fen, p.fixed_fen) for p in body.prices
        ),
    )
    try:
        item = items.create_item(session, site, new, user.username)
    except BillingError as exc:
        raise _refuse(exc) from exc
    assert item.id is not None
    return _item_public(item, items.prices_of(session, [item.id])[item.id])


@router.post("/sites/{site}/fee-items/{item_id}/prices", status_code=status.HTTP_201_CREATED)
def add_price(
    site: str, item_id: int, body: PriceIn, user: StaffUser, session: SessionDep
) -> FeeItemPublic:
    """A new price from a date on; a cycle across the date is split when billed."""
    _may(user, site, CONFIGURE, "changing prices")
    row_id(item_id, "fee item")
    try:
        items.add_price(
            session,
            site,
            item_id,
            items.NewPrice(body.effective_from, body.unit_fen, body.fixed_fen),
            user.username,
        )
        item = items.get_item(session, site, item_id)
    except BillingError as exc:
        raise _refuse(exc) from exc
    return _item_public(item, items.prices_of(session, [item_id])[item_id])


class BindIn(BaseModel):
    premises: list[Annotated[int, Field(ge=1, le=BIGINT_MAX)]] = Field(
        min_length=1, max_length=100_000
    )
    start: date
    until: date | None = None
    rent_monthly_fen: Money | None = None
    rent_step_pct: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(0)
    rent_every_months: Annotated[int, Field(ge=1, le=120)] = 12


@router.post("/sites/{site}/fee-items/{item_id}/bindings")
def bind(
    site: str, item_id: int, body: BindIn, user: StaffUser, session: SessionDep
) -> dict[str, int]:
    """Bill the item to these premises from ``start`` (缴费起始日期); bound ones stay."""
    _may(user, site, CONFIGURE, "binding fee items")
    row_id(item_id, "fee item")
    terms = items.Terms(
        body.start, body.until, body.rent_monthly_fen, body.rent_step_pct, body.rent_every_months
    )
    try:
        n = items.bind(session, site, item_id, body.premises, terms, user.username)
    except BillingError as exc:
        raise _refuse(exc) from exc
    return {"bound": n}


# -- bill runs ---------------------------------------------------------------------------------
class RunIn(BaseModel):
    month: Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")]


class RunPublic(BaseModel):
    id: int
    site_id: str
    month: str
    status: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    premises_total: int
    premises_done: int
    lines: int
    total_fen: int
    deducted_fen: int
    problems: list[dict[str, Any]]


_running: dict[int, threading.Thread] = {}


@router.post("/sites/{site}/bill-runs", status_code=status.HTTP_202_ACCEPTED)
def start_run(
    site: str,
    body: RunIn,
    request: Request,
    user: StaffUser,
    wait: Annotated[bool, Query(description="answer once the run has ended")] = False,
) -> RunPublic:
    """Start (or resume) the bill run of a month; it goes on in the background: follow it
    at ``GET /bill-runs/{id}``, or ask with ``wait=true`` to be answered when it has ended.
    409 for a closed month."""
    _may(user, site, RUN, "bill runs")
    engine: Engine = request.app.state.engine
    try:
        run_id = runs.open_run(engine, site, _month(body.month), user.username)
    except BillingError as exc:
        raise _refuse(exc) from exc
    thread = _running.get(run_id)
    if thread is None or not thread.is_alive():
        thread = threading.Thread(
            target=_background, args=(engine, run_id), name=f"bill-run-{run_id}", daemon=True
        )
        _running[run_id] = thread
        thread.start()
    if wait:
        thread.join()
    return RunPublic.model_validate(runs.get_run(engine, run_id), from_attributes=True)


def _background(engine: Engine, run_id: int) -> None:
    try:
        runs.continue_run(engine, run_id)
    except Exception:
        runs.log.exception("bill run %s failed", run_id)


@router.get("/bill-runs/{run_id}")
def get_run(run_id: int, user: StaffUser, session: SessionDep) -> RunPublic:
    row_id(run_id, "bill run")
    run = session.get(BillRun, run_id)
    if run is None or not can_see_site(user, run.site_id):
        raise not_found(f"bill run {run_id}")
    _may(user, run.site_id, RUN | READ, "bill runs")
    return RunPublic.model_validate(run, from_attributes=True)


@router.get("/sites/{site}/bill-runs")
def list_runs(site: str, user: StaffUser, session: SessionDep) -> list[RunPublic]:
    _may(user, site, RUN | READ, "bill runs")
    rows = session.exec(
        select(BillRun).where(BillRun.site_id == site).order_by(col(BillRun.id).desc()).limit(100)
    ).all()
    return [RunPublic.model_validate(r, from_attributes=True) for r in rows]


@router.post("/sites/{site}/months/{month}/close", status_code=status.HTTP_201_CREATED)
def close_month(site: str, month: str, user: StaffUser, session: SessionDep) -> dict[str, str]:
    """Close an accounting month (关账): no bill run adds to it afterwards."""
    _may(user, site, {Role.HQ_ADMIN, Role.FINANCE}, "closing months")
    m = _month(month)
    if session.get(ClosedMonth, (site, str(m))) is None:
        session.add(ClosedMonth(site_id=site, month=str(m), closed_by=user.username))
        session.commit()
    return {"site": site, "month": str(m), "status": "closed"}


# -- bills and statements ----------------------------------------------------------------------
class BillPublic(BaseModel):
    id: int
    premises_id: int
    item_id: int
    category: str
    kind: str
    period_start: date
    period_end: date
    month: str
    issued_on: date
    due_on: date
    amount_fen: int
    open_fen: int
    basis: dict[str, Any]


class PaymentPublic(BaseModel):
    id: int
    site_id: str
    receipt_no: str
    method: str
    amount_fen: int
    premises_id: int
    payer_name: str
    cashier: str
    paid_at: datetime
    paid_on: date
    reference: str
    note: str
    to_prepaid_fen: int
    refunded_fen: int
    voided_at: datetime | None
    voided_by: str | None
    void_reason: str


class StatementPublic(BaseModel):
    premises_id: int
    code: str
    billed_fen: int
    paid_fen: int
    waived_fen: int
    outstanding_fen: int
    prepaid: dict[str, int]
    bills: list[BillPublic]
    payments: list[PaymentPublic]


def _statement(s: Session, p: Premises) -> StatementPublic:
    assert p.id is not None
    st = ledger.statement(s, p.site_id, p.id)
    return StatementPublic(
        premises_id=p.id,
        code=p.code,
        billed_fen=st.totals.billed,
        paid_fen=st.totals.paid,
        waived_fen=st.totals.waived,
        outstanding_fen=st.totals.outstanding,
        prepaid=st.prepaid,
        bills=[BillPublic.model_validate(b, from_attributes=True) for b in st.bills],
        payments=[PaymentPublic.model_validate(x, from_attributes=True) for x in st.payments],
    )


@router.get("/premises/{premises_id}/statement")
def premises_statement(premises_id: int, user: CurrentUser, session: SessionDep) -> StatementPublic:
    """A premises' bills (with how each was computed), payments and balances."""
    return _statement(session, _premises(session, user, premises_id, READ, "statements"))


@router.get("/me/statements")
def my_statements(user: CurrentUser, session: SessionDep) -> list[StatementPublic]:
    """An owner's statements, one per premises he is recorded on."""
    forbid_unless(
        user.role == Role.OWNER, "owners' statements (staff read /premises/{id}/statement)"
    )
    return [
        _statement(session, p) for p in property_service.premises_of_user(session, user.username)
    ]


# -- payments ----------------------------------------------------------------------------------
class DeskIn(BaseModel):
    premises_id: Annotated[int, Field(ge=1, le=BIGINT_MAX)]
    method: Method
    amount_fen: Annotated[int, Field(ge=1, le=payments.MAX_PAYMENT_FEN)]
    bill_ids: list[Annotated[int, Field(ge=1, le=BIGINT_MAX)]] = Field(
        default_factory=list, max_length=1000
    )
    policy: Policy = Policy.OLDEST_FIRST
    to_prepaid: Annotated[str | None, Field(max_length=16)] = None
    payer_name: Annotated[str, Field(max_length=64)] = ""
    reference: Annotated[str, Field(max_length=64)] = ""
    note: Annotated[str, Field(max_length=200)] = ""


@router.post("/sites/{site}/payments", status_code=status.HTTP_201_CREATED)
def take_payment(
    site: str,
    body: DeskIn,
    user: StaffUser,
    session: SessionDep,
    idempotency_key: Annotated[str, Header(min_length=8, max_length=128)],
) -> PaymentPublic:
    """A payment at the front desk (cash, POS, transfer); its receipt is at
    ``/payments/{id}/receipt.pdf``. 409 when a bill was paid meanwhile (nothing taken); the
    same Idempotency-Key, the same payment."""
    _may(user, site, TAKE, "taking payments")
    p = payments.DeskPayment(
        body.premises_id,
        body.method,
        body.amount_fen,
        idempotency_key,
        tuple(body.bill_ids),
        body.policy,
        body.to_prepaid,
        body.payer_name,
        body.reference,
        body.note,
    )
    try:
        payment = payments.pay_at_desk(session, site, p, user.username)
    except BillingError as exc:
        raise _refuse(exc) from exc
    return PaymentPublic.model_validate(payment, from_attributes=True)


def _payment(s: Session, user: User, payment_id: int) -> Payment:
    row_id(payment_id, "payment")
    p = s.get(Payment, payment_id)
    if p is None:
        raise not_found(f"payment {payment_id}")
    _premises(s, user, p.premises_id, READ, "payments")
    return p


@router.get("/payments/{payment_id}/receipt.pdf", response_class=Response)
def receipt(payment_id: int, user: CurrentUser, session: SessionDep) -> Response:
    p = _payment(session, user, payment_id)
    return Response(
        receipt_pdf(session, p),
        media_type="application/pdf",
        headers=attachment(f"receipt-{p.receipt_no}.pdf", inline=True),
    )


class VoidIn(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=200)]


@router.post("/payments/{payment_id}/void")
def void(payment_id: int, body: VoidIn, user: StaffUser, session: SessionDep) -> PaymentPublic:
    """Void (作废) a payment taken by mistake: its bills are owed again (new entries)."""
    p = _payment(session, user, payment_id)
    _may(user, p.site_id, VOID, "voiding payments")
    try:
        voided = payments.void_payment(session, p.site_id, payment_id, user.username, body.reason)
    except BillingError as exc:
        raise _refuse(exc) from exc
    return PaymentPublic.model_validate(voided, from_attributes=True)


@router.get("/sites/{site}/payments")
def list_payments(
    site: str,
    user: StaffUser,
    session: SessionDep,
    on: date | None = None,
    cashier: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[PaymentPublic]:
    _may(user, site, READ, "payments")
    q = select(Payment).where(Payment.site_id == site)
    if on is not None:
        q = q.where(Payment.paid_on == on)
    if cashier is not None:
        q = q.where(Payment.cashier == cashier)
    rows = session.exec(q.order_by(col(Payment.id).desc()).limit(limit)).all()
    return [PaymentPublic.model_validate(p, from_attributes=True) for p in rows]


class OnlineIn(BaseModel):
    premises_id: Annotated[int, Field(ge=1, le=BIGINT_MAX)]
    bill_ids: list[Annotated[int, Field(ge=1, le=BIGINT_MAX)]] = Field(min_length=1, max_length=200)
    channel: Annotated[str, Field(min_length=1, max_length=32)]


class OrderOut(BaseModel):
    order_id: str
    amount_fen: int
    status: str
    pay: dict[str, Any]


@router.post("/me/bills/pay", status_code=status.HTTP_201_CREATED)
def pay_online(
    body: OnlineIn,
    user: CurrentUser,
    session: SessionDep,
    channels: ChannelsDep,
    idempotency_key: Annotated[str, Header(min_length=8, max_length=128)],
) -> OrderOut:
    """An owner pays chosen bills of his premises through a payment channel."""
    forbid_unless(
        user.role == Role.OWNER, "paying bills online (owners do; the desk takes the rest)"
    )
    p = _premises(session, user, body.premises_id, set(), "paying")
    ch = channels.get(body.channel)
    if ch is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no channel {body.channel!r}")
    try:
        order = payments.order_for_bills(
            session,
            p.site_id,
            body.premises_id,
            body.bill_ids,
            channel=body.channel,
            idempotency_key=idempotency_key,
            payer=user.username,
        )
    except BillingError as exc:
        raise _refuse(exc) from exc
    except IdempotencyConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ValueError as exc:  # nothing owed on those bills
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"nothing is owed on those bills ({exc})"
        ) from exc
    try:
        info = prepare_payment(session, ch, order)
    except OrderNotPayable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ChannelError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from exc
    return OrderOut(order_id=order.id, amount_fen=order.amount_fen, status=order.status, pay=info)


# -- adjustments -------------------------------------------------------------------------------
APPROVE = {Role.HQ_ADMIN, Role.SITE_MANAGER}


class WaiveIn(BaseModel):
    amount_fen: Annotated[int, Field(ge=1, le=payments.MAX_PAYMENT_FEN)]
    reason: Annotated[str, Field(min_length=1, max_length=200)]


@router.post("/bills/{bill_id}/waive", status_code=status.HTTP_201_CREATED)
def waive_bill(bill_id: int, body: WaiveIn, user: StaffUser, session: SessionDep) -> BillPublic:
    """A manager's waiver (减免) of part or all of what is open of a bill, with the reason."""
    row_id(bill_id, "bill")
    bill = session.get(Bill, bill_id)
    if bill is None or not can_see_site(user, bill.site_id):
        raise not_found(f"bill {bill_id}")
    _may(user, bill.site_id, APPROVE, "waivers (site managers approve them)")
    try:
        adjust.waive(session, bill.site_id, bill_id, body.amount_fen, body.reason, user.username)
    except BillingError as exc:
        raise _refuse(exc) from exc
    session.refresh(bill)
    return BillPublic.model_validate(bill, from_attributes=True)


class LateFeesIn(BaseModel):
    through: date
    premises_id: Annotated[int | None, Field(ge=1, le=BIGINT_MAX)] = None


@router.post("/sites/{site}/late-fees")
def late_fees(site: str, body: LateFeesIn, request: Request, user: StaffUser) -> dict[str, int]:
    """Bill the late fees (滞纳金) accrued through a date (all premises, or one, e.g. at the
    desk before taking a payment); again for the same date adds nothing."""
    _may(user, site, RUN | TAKE, "late fees")
    lines, fen = adjust.accrue_late_fees(
        request.app.state.engine, site, body.through, user.username, premises_id=body.premises_id
    )
    return {"lines": lines, "amount_fen": fen}


# -- refunds ------------------------------------------------------------------------------------
class RefundIn(BaseModel):
    amount_fen: Annotated[int, Field(ge=1, le=payments.MAX_PAYMENT_FEN)]
    reason: Annotated[str, Field(min_length=1, max_length=200)]
    bill_id: Annotated[int | None, Field(ge=1, le=BIGINT_MAX)] = (
        None  # None: from the payment's prepaid part
    )


class DecisionIn(BaseModel):
    note: Annotated[str, Field(max_length=200)] = ""


class RefundPublic(BaseModel):
    id: int
    site_id: str
    payment_id: int
    bill_id: int | None
    amount_fen: int
    reason: str
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str


@router.post("/payments/{payment_id}/refunds", status_code=status.HTTP_201_CREATED)
def ask_refund(
    payment_id: int, body: RefundIn, user: StaffUser, session: SessionDep
) -> RefundPublic:
    """Ask for a refund (退款) of part of a payment; it waits for a manager's approval."""
    p = _payment(session, user, payment_id)
    _may(user, p.site_id, TAKE | APPROVE, "asking for refunds")
    try:
        r = refunds.request_refund(
            session,
            p.site_id,
            payment_id,
            body.amount_fen,
            body.reason,
            user.username,
            bill_id=body.bill_id,
        )
    except BillingError as exc:
        raise _refuse(exc) from exc
    return RefundPublic.model_validate(r, from_attributes=True)


@router.post("/refunds/{refund_id}/{decision}")
def decide(
    refund_id: int, decision: str, body: DecisionIn, user: StaffUser, session: SessionDep
) -> RefundPublic:
    """``approve`` (books the credit note and the refund) or ``reject``; by a site manager or
    HQ who did not ask for it."""
    if decision not in ("approve", "reject"):
        raise not_found(f"decision {decision}")
    row_id(refund_id, "refund")
    r = session.get(Refund, refund_id)
    if r is None or not can_see_site(user, r.site_id):
        raise not_found(f"refund {refund_id}")
    _may(user, r.site_id, APPROVE, "deciding refunds (site managers approve them)")
    try:
        done = refunds.decide_refund(
            session, r.site_id, refund_id, decision == "approve", user.username, body.note
        )
    except BillingError as exc:
        raise _refuse(exc) from exc
    return RefundPublic.model_validate(done, from_attributes=True)


@router.get("/sites/{site}/refunds")
def list_refunds(
    site: str,
    user: StaffUser,
    session: SessionDep,
    state: Annotated[str | None, Query(pattern="^(requested|approved|rejected)$")] = None,
) -> list[RefundPublic]:
    _may(user, site, READ, "refunds")
    q = select(Refund).where(Refund.site_id == site)
    if state is not None:
        q = q.where(Refund.status == state)
    rows = session.exec(q.order_by(col(Refund.id).desc()).limit(500)).all()
    return [RefundPublic.model_validate(r, from_attributes=True) for r in rows]
