"""A day of one parking lot: cars arrive and leave through real gates, readers and cameras.

    plan = plan_day(seed=7, in_gates=["in1", "in2"], out_gates=["out1", "out2"], start=T0)
    clock = DayClock(plan.start)
    day = LotDay(plan, agent.parking, lanes, clock, policy=policy, hub_url=..., lot="north",
                 paychannel=sandbox, world=world)
    ledger = await day.run()       # every car: entered, left, owed, paid (online, booth), how

Passes on plates and on IC cards (CardReaderSimulator), a few passes that end during the
stay, temporary cars (some pay online through the hub's visitor API and the sandbox
provider before leaving, the others at the booth with ``ParkingSite.booth_payment``), plates
misread at the entry camera and corrected at the booth (``ParkingService.correct_plate``),
deny-listed cars turned away. A ``World`` given by the caller stops the hub for a while
(``outage``) and cuts the edge off the broker for a while (``cut``): visitors who pay online
during the cut and then meet the booth pay twice, which the hub must show as a refund.

**Time.** Fees depend on the length of a stay, so a day cannot simply run faster than the
clock the gate and the hub read. Here every party that prices a stay reads one virtual
clock, :class:`DayClock`: the edge's ``ParkingService`` (its ``clock``, set by
:meth:`LotDay.run`), the hub's quote path (the caller points ``hub.parking.service.utcnow``
at :meth:`DayClock.now`), and the sandbox provider, which stamps ``paid_at`` with it
(:class:`ClockedPayChannel`). The clock does not flow: it stands at each event's instant
(whole minutes of the day) until every event of that instant is over (the car through the
gate, the payment notified), then jumps to the next. So an entry at 09:14 is recorded at
09:14:00.000 exactly, however long the machine took, and the ledger knows every time and
fee to the fen; concurrent events are the ones of one instant on different lanes. ``speed``
(virtual seconds per real second) paces the jumps so that a day takes a chosen real time;
without it the day runs as fast as the lot can take the cars. Timers that are about the
machinery and not the stay (sync resends, ask timeouts, rate limits, signature ages) stay on
real time. (The other way, a fee rule with minute-long periods on the wall clock, would make
every stay a few minutes long and leave the hours, tiers and caps of a real rule untested.)
The ledger prices each stay with ``protocols.parking.quote`` from its own facts: the times
it chose, the payments it made, and which of them the gate could know of.

**What the simulation assumes.** Between paying online and reaching the exit, a visitor
takes long enough for the hub's sync to reach the edge, so the exit waits (with a deadline)
until the edge holds the payment: except for the ``ask`` visit, whose syncs are held back so
that the exit must ask the hub, and while the edge is cut off. Before the hub stops and
before the edge is cut off, ``World.settle`` lets what is in flight arrive. The lot's policy
sends unpaid cars to the booth when the hub cannot be asked (``offline_exit: booth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from protocols.mqtt import Kind
from protocols.parking import parse_rule, quote
from protocols.parking.frames import ArmState
from protocols.parking.messages import Action, OfflineExit, Policy
from simulators.parking.camera import PlateCamera
from simulators.parking.gate import GateSimulator
from simulators.parking.reader import CardReaderSimulator
from simulators.paychannel import PayChannelSimulator, SimOrder, _PayIn

if TYPE_CHECKING:
    from edge.parking.lot import Verdict
    from edge.parking.site import ParkingSite

MIN = timedelta(minutes=1)
POLL = 0.002  # s: state polled with a deadline where no event exists to wait on
_SERIAL = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O on Chinese plates


class DayClock:
    """Virtual time: stands still until :meth:`set` moves it forward."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("the day's clock needs a timezone-aware start")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def ms(self) -> int:
        return int(self._now.timestamp() * 1000)

    def set(self, at: datetime) -> None:
        at = at.astimezone(UTC)
        if at < self._now:
            raise ValueError(f"time only moves forward ({at} < {self._now})")
        self._now = at


class ClockedPayChannel(PayChannelSimulator):
    """The sandbox provider, stamping payments with the day's clock instead of the wall's."""

    def __init__(self, secret: bytes, clock: DayClock, **kw: Any) -> None:
        super().__init__(secret, **kw)
        self.clock = clock

    def pay(self, order_id: str, req: _PayIn) -> SimOrder:
        order = super().pay(order_id, req)
        # the notification is built when its task runs, after this returns
        order.paid_at = self.clock.now().isoformat(timespec="seconds")
        return order


# -- the plan ------------------------------------------------------------------------------
class CarKind(StrEnum):
    PASS = "pass"  # a monthly pass on the plate
    CARD = "card"  # a monthly pass on an IC card: in and out by card
    EXPIRING = "expiring"  # a plate pass that ends during the stay
    TEMPORARY = "temporary"
    DENIED = "denied"  # on the deny list: turned away at the entry


@dataclass(frozen=True, slots=True)
class Car:
    id: str
    kind: CarKind
    plate: str | None
    card: str | None = None
    pass_end: datetime | None = None  # EXPIRING: when its pass ends


@dataclass(frozen=True, slots=True)
class Visit:
    car: Car
    n: int  # 1, 2: the car's visits of the day
    arrive: datetime
    leave: datetime | None  # None: turned away at the entry
    entry_gate: str
    exit_gate: str
    pay_at: datetime | None = None  # pays online then
    misread: bool = False  # the entry camera reads a wrong plate
    ask: bool = False  # pays online at the exit; the edge has not heard of it and asks


@dataclass(frozen=True, slots=True)
class DayPlan:
    start: datetime
    cars: tuple[Car, ...]
    visits: tuple[Visit, ...]
    outage: tuple[datetime, datetime] | None  # the hub is down
    cut: tuple[datetime, datetime] | None  # the edge cannot reach the broker

    def pass_requests(self) -> list[dict[str, Any]]:
        """Bodies for ``POST /api/v1/lots/{lot}/passes``, one per pass holder."""
        start = (self.start - timedelta(days=30)).isoformat()
        return [
            {
                "plate": car.plate,
                "card": car.card,
                "start": start,
                "end": (car.pass_end or self.start + timedelta(days=30)).isoformat(),
            }
            for car in self.cars
            if car.kind in (CarKind.PASS, CarKind.CARD, CarKind.EXPIRING)
        ]

    def denied_plates(self) -> list[str]:
        return [c.plate for c in self.cars if c.kind is CarKind.DENIED and c.plate]


def plan_day(
    seed: int,
    in_gates: list[str],
    out_gates: list[str],
    start: datetime,
    *,
    temporary: int = 200,
    passes: int = 40,
    cards: int = 10,
    expiring: int = 4,
    denied: int = 3,
    online_share: float = 0.35,
    misread_share: float = 0.04,
    outage: tuple[timedelta, timedelta] | None = (timedelta(hours=5), timedelta(hours=7)),
    cut: tuple[timedelta, timedelta] | None = (timedelta(hours=9), timedelta(hours=10)),
    cut_payers: int = 4,
) -> DayPlan:
    """A seeded day from ``start`` (arrivals over 15 h, everyone gone 18 h later)."""
    rng = random.Random(seed)
    end = start + timedelta(hours=17, minutes=50)
    plates = _plates(rng, temporary + passes + expiring + denied)
    cars: list[Car] = []
    cars += [Car(f"p{i:03d}", CarKind.PASS, plates.pop()) for i in range(passes)]
    uids = rng.sample(range(1 << 28, 1 << 32), cards)
    cars += [Car(f"k{i:03d}", CarKind.CARD, None, f"{u:08X}") for i, u in enumerate(uids)]
    cars += [Car(f"t{i:03d}", CarKind.TEMPORARY, plates.pop()) for i in range(temporary)]
    cars += [Car(f"d{i:03d}", CarKind.DENIED, plates.pop()) for i in range(denied)]

    def minute(lo: timedelta, hi: timedelta) -> datetime:
        return start + MIN * rng.randrange(int(lo / MIN), int(hi / MIN))

    def visit(car: Car, n: int, arrive: datetime, leave: datetime | None) -> Visit:
        return Visit(car, n, arrive, leave, rng.choice(in_gates), rng.choice(out_gates))

    def stay_of(kind: CarKind) -> timedelta:
        if kind is CarKind.TEMPORARY:
            lo, hi = rng.choices([(3, 15), (16, 180), (180, 600)], [15, 55, 30])[0]
        else:
            lo, hi = 60, 600
        return MIN * rng.randint(lo, hi)

    visits: list[Visit] = []
    for car in cars:
        if car.kind is CarKind.DENIED:
            visits.append(visit(car, 1, minute(MIN, 15 * 60 * MIN), None))
            continue
        arrive = minute(MIN, 15 * 60 * MIN)
        many = car.kind is CarKind.PASS or (car.kind is CarKind.TEMPORARY and rng.random() < 0.1)
        for n in (1, 2) if many else (1,):
            leave = min(arrive + stay_of(car.kind), end)
            if leave <= arrive + MIN:
                break
            visits.append(visit(car, n, arrive, leave))
            arrive = leave + MIN * rng.randint(10, 120)
            if arrive >= end - 30 * MIN:
                break
    for car in [c for c in cars if c.kind is CarKind.PASS][:expiring]:
        # these passes end half-way through the car's first stay; it has no second one
        first = next(v for v in visits if v.car is car)
        assert first.leave is not None
        half = (first.leave - first.arrive) / 2
        expired = replace(car, kind=CarKind.EXPIRING, pass_end=first.arrive + MIN * (half // MIN))
        cars[cars.index(car)] = expired
        visits = [replace(first, car=expired)] + [v for v in visits if v.car is not car]

    windows = [(start + a, start + b) for a, b in (w for w in (outage, cut) if w is not None)]
    visits = [_payments(rng, v, online_share, misread_share) for v in visits]
    if cut is not None:
        visits = _cut_payers(rng, visits, start + cut[0], start + cut[1], cut_payers)
    visits = _one_ask(visits, start + timedelta(hours=2), windows)
    return DayPlan(
        start,
        tuple(cars),
        tuple(sorted(visits, key=lambda v: (v.arrive, v.car.id))),
        (start + outage[0], start + outage[1]) if outage else None,
        (start + cut[0], start + cut[1]) if cut else None,
    )


def _plates(rng: random.Random, n: int) -> list[str]:
    """Distinct ``浙A`` plates, any two differing in 3 or more serial characters, so that a
    one-character misread is never another car's plate (nor another car's misread)."""
    out: list[str] = []
    while len(out) < n:
        serial = "".join(rng.choice(_SERIAL) for _ in range(5))
        if all(sum(a != b for a, b in zip(serial, p[2:], strict=True)) >= 3 for p in out):
            out.append("浙A" + serial)
    return out


def _payments(rng: random.Random, v: Visit, online: float, misread: float) -> Visit:
    if v.car.kind is not CarKind.TEMPORARY or v.leave is None:
        return v
    stay = v.leave - v.arrive
    if stay > 20 * MIN and rng.random() < online:
        if stay > 120 * MIN and rng.random() < 0.15:  # pays, then stays past the grace
            return replace(v, pay_at=v.leave - MIN * rng.randint(30, 90))
        return replace(v, pay_at=v.leave - MIN * rng.randint(1, 12))
    return replace(v, misread=rng.random() < misread)


def _cut_payers(
    rng: random.Random, visits: list[Visit], cut_from: datetime, cut_to: datetime, n: int
) -> list[Visit]:
    """``n`` temporary cars in the lot well before the cut pay during it, and leave in it."""
    once = Counter(v.car.id for v in visits)
    picked = 0
    out = []
    for v in visits:
        fit = (
            picked < n
            and v.car.kind is CarKind.TEMPORARY
            and once[v.car.id] == 1
            and not v.misread
            and v.leave is not None
            and v.arrive < cut_from - 30 * MIN
        )
        if fit:
            leave = cut_from + MIN * rng.randint(8, int((cut_to - cut_from) / MIN) - 2)
            v = replace(v, leave=leave, pay_at=leave - MIN * rng.randint(1, 6))
            picked += 1
        out.append(v)
    return out


def _one_ask(
    visits: list[Visit], after: datetime, windows: list[tuple[datetime, datetime]]
) -> list[Visit]:
    """The first temporary car leaving after ``after``, and half an hour before the first
    outage or cut, pays at the exit (the edge must not be treating the hub as silent)."""
    before = min((a for a, _ in windows), default=after + timedelta(days=1)) - 30 * MIN
    for i, v in enumerate(visits):
        if (
            v.car.kind is CarKind.TEMPORARY
            and v.leave is not None
            and after < v.leave < before
            and v.leave - v.arrive > 20 * MIN
            and not v.misread
        ):
            visits[i] = replace(v, pay_at=v.leave, ask=True)
            return visits
    raise ValueError("no visit fits the ask scenario")


# -- the ledger ----------------------------------------------------------------------------
@dataclass(slots=True)
class Stay:
    """One visit as it really happened: the ground truth the hub's records are held to."""

    car: str
    visit: int
    kind: CarKind
    plate: str | None
    card: str | None
    entry_at: datetime | None = None
    exit_at: datetime | None = None
    refused: bool = False
    misread_as: str | None = None
    owed_fen: int = 0  # the stay's fee by the rule, with the payments the gate knew of
    paid_online_fen: int = 0
    paid_booth_fen: int = 0
    refund_fen: int = 0  # paid beyond the fee: online while the edge was cut off, then booth
    unpaid_fen: int = 0
    orders: list[str] = field(default_factory=list)
    payments: list[tuple[datetime, int, bool]] = field(default_factory=list)  # (at, fen, cut)
    how: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str | None, datetime | None]:
        return (self.plate or self.card, self.entry_at)


@dataclass(slots=True)
class Ledger:
    stays: list[Stay] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the lot did not do what the rule says
    opens: Counter[str] = field(default_factory=Counter)  # OPEN decisions per gate

    def totals(self) -> dict[str, int]:
        s = self.stays
        return {
            "cars": len({x.car for x in s}),
            "stays": len(s),
            "entered": sum(x.entry_at is not None for x in s),
            "refused": sum(x.refused for x in s),
            "owed_fen": sum(x.owed_fen for x in s),
            "online_fen": sum(x.paid_online_fen for x in s),
            "online_count": sum(len(x.orders) for x in s),
            "booth_fen": sum(x.paid_booth_fen for x in s),
            "booth_count": sum(x.paid_booth_fen > 0 for x in s),
            "refund_fen": sum(x.refund_fen for x in s),
            "unpaid_fen": sum(x.unpaid_fen for x in s),
        }


# -- the run -------------------------------------------------------------------------------
class World(Protocol):
    """What the simulation cannot do itself: the hub and the network around the edge."""

    async def settle(self) -> None: ...  # what is in flight (records, syncs) has arrived

    async def hub_down(self) -> None: ...

    async def hub_up(self) -> None: ...

    async def cut_edge(self) -> None: ...

    async def restore_edge(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Lanes:
    gates: Mapping[str, GateSimulator]
    readers: Mapping[str, CardReaderSimulator]
    cameras: Mapping[str, PlateCamera]


@dataclass(frozen=True, slots=True)
class _Event:
    at: datetime
    lane: str
    run: Callable[[], Awaitable[None]]


class LotDay:
    """Drives ``plan`` through the lot's devices; :meth:`run` returns the ledger."""

    def __init__(
        self,
        plan: DayPlan,
        site: ParkingSite,
        lanes: Lanes,
        clock: DayClock,
        *,
        policy: Policy,
        hub_url: str,
        lot: str,
        paychannel: PayChannelSimulator,
        world: World | None = None,
        speed: float | None = None,
        timeout: float = 10.0,
        operator: str = "booth-1",
    ) -> None:
        if policy.offline_exit is not OfflineExit.BOOTH:
            raise ValueError("the ledger expects unpaid cars at the booth when offline")
        if world is None and (plan.outage or plan.cut):
            raise ValueError("an outage or a cut needs a World to carry it out")
        self.plan, self.site, self.lanes, self.clock = plan, site, lanes, clock
        self.rule, self.grace = parse_rule(policy.rule, "lot policy"), policy.grace_minutes
        self.hub_url, self.lot, self.paychannel = hub_url, lot, paychannel
        self.world, self.speed, self.timeout, self.operator = world, speed, timeout, operator
        self.ledger = Ledger()
        self.hub_is_down = False
        self.edge_is_cut = False
        self._http: httpx.AsyncClient | None = None

    @property
    def service(self) -> Any:
        return self.site.service

    async def run(self) -> Ledger:
        """The whole day; TimeoutError (naming the car) if the lot stops answering."""
        self.service.clock = self.clock.ms
        events = defaultdict(list)
        for e in self._events():
            events[e.at].append(e)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with httpx.AsyncClient(trust_env=False, timeout=self.timeout) as self._http:
            for at in sorted(events):
                if self.speed:
                    ahead = began + (at - self.plan.start).total_seconds() / self.speed
                    await asyncio.sleep(max(0.0, ahead - loop.time()))  # the day's pace
                self.clock.set(at)
                controls = [e for e in events[at] if e.lane == ""]
                for c in controls:
                    await c.run()
                by_lane: dict[str, list[_Event]] = defaultdict(list)
                for e in events[at]:
                    if e.lane:
                        by_lane[e.lane].append(e)
                async with asyncio.TaskGroup() as tg:
                    for lane, todo in by_lane.items():
                        tg.create_task(self._lane(todo), name=f"lane-{lane}")
        return self.ledger

    async def _lane(self, todo: list[_Event]) -> None:
        for e in todo:
            await e.run()

    def _events(self) -> Iterable[_Event]:
        p = self.plan
        if p.outage:
            yield _Event(p.outage[0], "", self._hub_down)
            yield _Event(p.outage[1], "", self._hub_up)
        if p.cut:
            yield _Event(p.cut[0], "", self._cut)
            yield _Event(p.cut[1], "", self._restore)
        for v in p.visits:
            stay = Stay(v.car.id, v.n, v.car.kind, v.car.plate, v.car.card)
            self.ledger.stays.append(stay)
            yield _Event(v.arrive, v.entry_gate, partial(self._entry, v, stay))
            if v.pay_at is not None and not v.ask:
                yield _Event(v.pay_at, f"phone-{v.car.id}", partial(self._pay, v, stay))
            if v.leave is not None:
                yield _Event(v.leave, v.exit_gate, partial(self._exit, v, stay))

    # -- the world ---------------------------------------------------------------------------
    async def _hub_down(self) -> None:
        assert self.world is not None
        await self.world.settle()
        await self.world.hub_down()
        self.hub_is_down = True

    async def _hub_up(self) -> None:
        assert self.world is not None
        await self.world.hub_up()
        self.hub_is_down = False

    async def _cut(self) -> None:
        assert self.world is not None
        await self.world.settle()
        await self.world.cut_edge()
        self.edge_is_cut = True

    async def _restore(self) -> None:
        assert self.world is not None
        await self.world.restore_edge()
        self.edge_is_cut = False

    # -- cars ------------------------------------------------------------------------------
    async def _entry(self, v: Visit, stay: Stay) -> None:
        gate = v.entry_gate
        shown = v.car.plate

        async def show() -> None:
            nonlocal shown
            if v.car.card:
                await self.lanes.readers[gate].present(v.car.card)
                return
            assert v.car.plate is not None
            r = await self.lanes.cameras[gate].recognize(v.car.plate, misread=v.misread)
            if r.status != 200:
                raise RuntimeError(f"camera push refused: {r.status} {r.body}")
            shown = json.loads(r.sent)["plate"]

        verdict = await self._at_gate(gate, show, f"{v.car.id} entering")
        if v.misread:
            stay.misread_as = shown
        want = Action.REFUSE if v.car.kind is CarKind.DENIED else Action.OPEN
        if verdict.action is not want:
            self._problem(stay, f"entry {verdict.action} ({verdict.reason}), expected {want}")
        if verdict.action is Action.OPEN:
            stay.entry_at = self.clock.now()
            await self._drive_through(gate, stay)
        else:
            stay.refused = True
            stay.how.append(f"refused: {verdict.reason}")
            await self.lanes.gates[gate].car_leaves()  # backs away

    async def _pay(self, v: Visit, stay: Stay) -> None:
        """The visitor's phone: quote by plate, an order, paid at the sandbox provider."""
        assert self._http is not None and v.car.plate is not None
        base = f"{self.hub_url}/api/v1/parking/{self.lot}"
        phone = {"X-Forwarded-For": _address(v.car.id)}  # each visitor his own address
        try:
            q = await self._found(
                lambda: self._http.get(  # type: ignore[union-attr]
                    f"{base}/quote", params={"plate": v.car.plate}, headers=phone
                )
            )
            if q is None:
                stay.how.append("online: the hub did not know the car in time")
                return
            if q["due_fen"] == 0:
                return
            key = f"visitor-{v.car.id}-{v.n}-{len(stay.orders)}"
            r = await self._http.post(
                f"{base}/pay",
                json={"plate": v.car.plate},
                headers={**phone, "Idempotency-Key": key},
            )
        except httpx.TransportError:
            stay.how.append("online: hub unreachable")
            return
        if r.status_code != 201:
            self._problem(stay, f"pay: {r.status_code} {r.text}")
            return
        order = r.json()
        paid = await self._http.post(
            f"{self.paychannel.url}/orders/{order['order_id']}/pay", json={"faults": {}}
        )
        if paid.status_code != 200:
            self._problem(stay, f"sandbox pay: {paid.status_code} {paid.text}")
            return
        sim = self.paychannel.order(order["order_id"])
        await self.paychannel.wait_for(lambda: sim.settled, self.timeout)
        if not sim.acknowledged:
            self._problem(stay, f"order {sim.order_id}: the hub never acknowledged")
        stay.orders.append(order["order_id"])
        stay.payments.append((self.clock.now(), order["amount_fen"], self.edge_is_cut))
        stay.paid_online_fen += order["amount_fen"]
        stay.how.append("online" + (" while the edge was cut off" if self.edge_is_cut else ""))

    async def _found(self, get: Callable[[], Awaitable[httpx.Response]]) -> dict[str, Any] | None:
        """The quote, waiting (with a deadline) while the hub has not heard of the car."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            r = await get()
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
            # 404: the entry has not reached the hub yet; 429: too quick for the rate limit
            if r.status_code not in (404, 429) or asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.1)

    async def _exit(self, v: Visit, stay: Stay) -> None:
        gate = v.exit_gate
        if stay.entry_at is None:
            self._problem(stay, "never entered, cannot leave")
            return

        async def show() -> None:
            if v.car.card:
                await self.lanes.readers[gate].present(v.car.card)
            else:
                assert v.car.plate is not None
                r = await self.lanes.cameras[gate].recognize(v.car.plate)
                if r.status != 200:
                    raise RuntimeError(f"camera push refused: {r.status} {r.body}")

        if v.ask:
            async with self._syncs_held():
                await self._pay(v, stay)
                asks = self.service.asks
                verdict = await self._at_gate(gate, show, f"{v.car.id} leaving (ask)")
            if self.service.asks == asks:
                self._problem(stay, "the exit did not ask the hub")
            stay.how.append("asked the hub")
        else:
            await self._edge_knows(stay)
            verdict = await self._at_gate(gate, show, f"{v.car.id} leaving")
        if verdict.action is Action.BOOTH and stay.misread_as and verdict.entry_at is None:
            # the booth finds the entry by its photo, corrects it and reads the plate again
            inside = self.service.state.inside(stay.misread_as, None)
            if inside is None:
                self._problem(stay, f"no car inside as {stay.misread_as}")
            else:
                await self.service.correct_plate(inside.session, v.car.plate, self.operator)
                stay.how.append(f"corrected from {stay.misread_as}")
                verdict = await self._at_gate(gate, show, f"{v.car.id} read again")
        want_due, want_owed = self._expected(v, stay)
        if verdict.action is Action.BOOTH:
            if verdict.due_fen != want_due:
                self._problem(stay, f"booth asks {verdict.due_fen}, the rule says {want_due}")
            stay.paid_booth_fen += verdict.due_fen
            stay.how.append(f"booth {verdict.due_fen}")
            verdict = await self.site.booth_payment(gate, verdict.due_fen, self.operator)
        elif want_due:
            self._problem(stay, f"exit {verdict.action} ({verdict.reason}), {want_due} due")
        if verdict.action is not Action.OPEN:
            self._problem(stay, f"not let out: {verdict.action} ({verdict.reason})")
            return
        stay.owed_fen = want_owed
        if verdict.fee_fen != want_owed:
            self._problem(stay, f"exit fee {verdict.fee_fen}, the rule says {want_owed}")
        paid = stay.paid_online_fen + stay.paid_booth_fen
        stay.refund_fen = max(0, paid - want_owed)
        stay.unpaid_fen = verdict.unpaid_fen
        stay.exit_at = self.clock.now()
        await self._drive_through(gate, stay)

    def _expected(self, v: Visit, stay: Stay) -> tuple[int, int]:
        """(due at the exit, the stay's fee) by the rule, from the ledger's own facts."""
        if v.car.kind in (CarKind.PASS, CarKind.CARD):
            return 0, 0
        assert stay.entry_at is not None
        at = self.clock.now()
        start = stay.entry_at
        if v.car.pass_end is not None:
            start = max(start, v.car.pass_end)
        known = [
            (max(t, start), fen)
            for t, fen, cut in stay.payments
            if not (cut and self.edge_is_cut)  # paid while cut off, leaving still cut off
        ]
        first = quote(self.rule, start, at, known, grace_minutes=self.grace)
        if first.due_fen == 0:
            return 0, first.total_fen
        then = quote(self.rule, start, at, [*known, (at, first.due_fen)], grace_minutes=self.grace)
        return first.due_fen, then.total_fen

    async def _edge_knows(self, stay: Stay) -> None:
        """Minutes pass between paying and the exit: the edge holds the payments by then."""
        if self.edge_is_cut:
            return
        state = self.service.state  # its tables are replaced by every sync
        await _until(
            lambda: all(o in state.paid for o in stay.orders),
            self.timeout,
            f"{stay.car}: the edge hearing of its payments",
        )

    async def _at_gate(self, gate: str, show: Callable[[], Awaitable[None]], what: str) -> Verdict:
        """The car drives onto the loop and shows itself; the edge's verdict for it."""
        sim = self.lanes.gates[gate]
        async with asyncio.timeout(self.timeout):
            await sim.wait_arm(ArmState.CLOSED)  # the car before it has gone through
        await sim.car_arrives()
        before = self.site.last.get(gate)
        await show()
        await _until(
            lambda: self.site.last.get(gate) is not before,
            self.timeout + 2,  # an exit may ask the hub first
            f"{what} at {gate}: a decision",
        )
        return self.site.last[gate][0]

    async def _drive_through(self, gate: str, stay: Stay) -> None:
        sim = self.lanes.gates[gate]
        self.ledger.opens[gate] += 1
        try:
            async with asyncio.timeout(self.timeout):
                await sim.wait_arm(ArmState.OPEN)
        except TimeoutError:
            self._problem(stay, f"{gate} did not open")
        await sim.car_leaves()

    @contextlib.asynccontextmanager
    async def _syncs_held(self) -> AsyncIterator[None]:
        """The edge hears nothing from the hub's sync until the block is over."""
        link = self.service.link
        original = link.handlers[Kind.SYNC]
        held: list[bytes] = []

        async def hold(payload: bytes) -> None:
            held.append(payload)

        link.handlers[Kind.SYNC] = hold
        try:
            yield
        finally:
            link.handlers[Kind.SYNC] = original
            for payload in held:
                await original(payload)

    def _problem(self, stay: Stay, what: str) -> None:
        self.ledger.problems.append(f"{stay.car} visit {stay.visit}: {what}")


def _address(car: str) -> str:
    n = sum(ord(c) << (8 * i) for i, c in enumerate(car)) % (1 << 24)
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if predicate():
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(POLL)
