"""The edge agent: buses and their pollers, the outbox, the MQTT link, commands, health.

``async with Agent(site) as agent:`` starts everything as named tasks; leaving the block
(or SIGTERM/SIGINT in ``python -m edge run``) stops polling, commits what was read,
gives the link a few seconds to drain the outbox, publishes the death and closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from edge.bus import ModbusBus
from edge.config import Site
from edge.link import LinkState, MqttLink
from edge.metrics import serve_metrics
from edge.outbox import Dropped, Outbox
from edge.poller import BusPoller, Device, DeviceState, Sample
from protocols.codec import encode_point
from protocols.errors import DecodeError, DeviceError, TransportError
from protocols.mqtt import (
    AckStatus,
    Birth,
    Command,
    DeviceInfo,
    EventKind,
    Kind,
    PointInfo,
    Status,
    Topic,
)
from protocols.registers import DataType

if TYPE_CHECKING:
    from edge.parking.site import ParkingSite

log = logging.getLogger(__name__)
AGENT_VERSION = "wuye-edge/0.1.0"
DROP_RUNS_PER_EVENT = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


class Agent:
    def __init__(self, site: Site) -> None:
        self.site = site
        cfg = site.cfg
        self.cfg = cfg
        self.outbox = Outbox(
            cfg.outbox.path,
            commit_interval=cfg.outbox.commit_interval,
            max_bytes=int(cfg.outbox.max_mb * 1024 * 1024),
            drop_events=self._dropped,
        )
        self.link = MqttLink(
            cfg.site,
            cfg.gateway,
            cfg.broker,
            self.outbox,
            self._birth,
            self._command,
            window=cfg.outbox.window,
            replay_rate=cfg.outbox.replay_rate,
            resend_after=cfg.outbox.resend_after,
        )
        self.devices: dict[str, Device] = {}
        self.pollers: list[BusPoller] = []
        for name, bus_cfg in site.buses.items():
            mine = [d for d in cfg.devices if d.bus == name]
            if not mine:
                continue
            bus = ModbusBus(bus_cfg, max(d.timeout for d in mine))
            devs = [Device(d, site.profile_of(d), site.reads_of(d)) for d in mine]
            self.devices.update((d.id, d) for d in devs)
            self.pollers.append(BusPoller(bus, devs, self._sample, self._event))
        self._data_topics = {
            d: str(Topic(cfg.site, cfg.gateway, Kind.DATA, d)) for d in self.devices
        }
        self._ack_topic = str(Topic(cfg.site, cfg.gateway, Kind.ACK))
        self.parking: ParkingSite | None = None
        if cfg.parking is not None:
            from edge.parking.site import ParkingSite  # serial and HTTP drivers: only if used

            self.parking = ParkingSite(cfg.parking, cfg.site, cfg.gateway, self.outbox, self.link)
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: Any = None
        self.started = time.monotonic()
        self.bad_commands = 0
        self.samples = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Agent:
        await self.outbox.__aenter__()
        if self.parking is not None:
            await self.parking.__aenter__()  # its state is loaded before the hub can sync it
        self._tasks.append(asyncio.create_task(self.link.run(), name="mqtt-link"))
        for p in self.pollers:
            self._tasks.append(asyncio.create_task(p.run(), name=f"poll-{p.bus.name}"))
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        if self.cfg.metrics_port is not None:
            self._metrics_server = serve_metrics(self, self.cfg.metrics_port)
        log.info(
            "agent %s/%s started: %d devices on %d buses, outbox %s (%d waiting)",
            self.cfg.site,
            self.cfg.gateway,
            len(self.devices),
            len(self.pollers),
            self.cfg.outbox.path,
            self.outbox.depth,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        pollers = [t for t in self._tasks if t.get_name().startswith(("poll-", "status"))]
        for t in pollers:
            t.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        await self.outbox.flush()
        if self.link.state is LinkState.ONLINE:
            drained = await self.link.drain(drain_timeout)
            log.info("outbox %s at shutdown", "drained" if drained else "not drained")
        await self.link.close()
        link = next(t for t in self._tasks if t.get_name() == "mqtt-link")
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(link)  # it leaves its loop once closed
        except TimeoutError:
            log.warning("mqtt link did not stop in time")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for p in self.pollers:
            await p.bus.close()
        if self.parking is not None:
            await self.parking.__aexit__(None, None, None)
        await self.outbox.__aexit__(None, None, None)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        log.info("agent stopped; %d messages kept in the outbox", self.outbox.depth)

    # -- what the pollers produce -------------------------------------------------------------
    def _sample(self, s: Sample) -> None:
        body: dict[str, Any] = {"ts": s.ts, "dev": s.device, "values": s.values}
        if s.errors:
            body["errors"] = s.errors
        self.samples += 1
        self.outbox.put_nowait(
            self._data_topics[s.device], orjson.dumps(body), created=s.ts, critical=s.critical
        )

    def _event(self, device: str | None, kind: EventKind, detail: dict[str, object]) -> None:
        ts = now_ms()
        body = orjson.dumps(
            {"ts": ts, "dev": device, "event": kind, "detail": detail}
            if device
            else {"ts": ts, "event": kind, "detail": detail}
        )
        topic = Topic(self.cfg.site, self.cfg.gateway, Kind.EVENT, device)
        self.outbox.put_nowait(str(topic), body, created=ts, critical=True)

    def _dropped(self, d: Dropped) -> list[tuple[str, bytes, int]]:
        """The ``outbox_dropped`` events for a drop (committed with it by the outbox): one
        per thousand runs, so that each stays far below any payload limit."""
        ts = now_ms()
        topic = str(Topic(self.cfg.site, self.cfg.gateway, Kind.EVENT))
        out = []
        for i in range(0, len(d.ranges), DROP_RUNS_PER_EVENT):
            runs = d.ranges[i : i + DROP_RUNS_PER_EVENT]
            detail = {
                "count": sum(b - a + 1 for a, b in runs),
                "first_seq": runs[0][0],
                "last_seq": runs[-1][1],
                "ranges": [list(r) for r in runs],
            }
            body = {"ts": ts, "event": EventKind.OUTBOX_DROPPED.value, "detail": detail}
            out.append((topic, orjson.dumps(body), ts))
        return out

    def _birth(self, bdseq: int, stream: str) -> Birth:
        devices = tuple(
            DeviceInfo(
                id=d.id,
                profile=d.profile.name,
                bus=d.cfg.bus,
                unit=d.cfg.unit,
                interval_s=d.cfg.interval,
                points=tuple(
                    PointInfo(
                        name=p.name, unit=p.unit, kind=p.kind, type=p.type, writable=p.writable
                    )
                    for p in d.profile.points
                ),
            )
            for d in self.devices.values()
        )
        return Birth(
            gw=self.cfg.gateway,
            site=self.cfg.site,
            bdseq=bdseq,
            stream=stream,
            ts=now_ms(),
            agent=AGENT_VERSION,
            devices=devices,
        )

    # -- commands from the hub -----------------------------------------------------------------
    async def _command(self, payload: bytes) -> None:
        try:
            cmd = Command.model_validate_json(payload)
        except ValueError as exc:
            self.bad_commands += 1
            log.warning("refused a malformed command: %s", str(exc).splitlines()[0])
            try:
                cid = orjson.loads(payload).get("id")
            except (orjson.JSONDecodeError, AttributeError):
                return
            if isinstance(cid, str) and 0 < len(cid) <= 64:
                await self._ack(cid, AckStatus.REJECTED, "malformed command")
            return
        done = await self.outbox.command_status(cmd.id)
        if done is not None:
            # a redelivery: say again what happened, do not do it twice
            await self._ack(cmd.id, AckStatus(done), "already handled")
            return
        status, detail = await self._execute(cmd)
        await self.outbox.record_command(cmd.id, status)
        await self._ack(cmd.id, status, detail)

    async def _execute(self, cmd: Command) -> tuple[AckStatus, str]:
        if now_ms() > cmd.expires:
            return AckStatus.EXPIRED, "arrived after its expiry"
        w = cmd.action
        dev = self.devices.get(w.dev)
        if dev is None:
            return AckStatus.REJECTED, f"no device {w.dev!r} on this gateway"
        try:
            point = dev.profile.point(w.point)
        except KeyError:
            return AckStatus.REJECTED, f"{dev.profile.name} has no point {w.point!r}"
        if not point.writable:
            return AckStatus.REJECTED, f"{w.point} is read-only"
        if point.type is DataType.BIT:
            return AckStatus.REJECTED, "writing single bits of a register is not supported"
        try:
            value = encode_point(point, w.value)
        except DecodeError as exc:
            return AckStatus.REJECTED, str(exc)
        bus = next(p.bus for p in self.pollers if dev in p.devices)
        try:
            await bus.write(dev.cfg.unit, point.table, point.address, value, dev.cfg.timeout)
        except (DeviceError, TransportError) as exc:
            return AckStatus.FAILED, str(exc)
        log.info("command %s: %s.%s = %r", cmd.id, w.dev, w.point, w.value)
        return AckStatus.DONE, ""

    async def _ack(self, cid: str, status: AckStatus, detail: str) -> None:
        ts = now_ms()
        body = orjson.dumps({"ts": ts, "id": cid, "status": status, "detail": detail})
        await self.outbox.put(self._ack_topic, body, created=ts, critical=True)

    # -- health ---------------------------------------------------------------------------------
    def metrics(self) -> dict[str, int | float]:
        """Everything an operator watches, as flat numbers (also the Prometheus source)."""
        up = max(1e-9, time.monotonic() - self.started)
        oldest = self.outbox.oldest
        values = sum(p.values_read for p in self.pollers)
        return {
            "uptime_s": round(up, 1),
            "values_read_total": values,
            "samples_total": self.samples,
            "outbox_depth": self.outbox.depth,
            "outbox_bytes": self.outbox.bytes,
            "outbox_age_s": round((now_ms() - oldest) / 1000, 1) if oldest else 0,
            "outbox_dropped_total": self.outbox.dropped_total,
            "outbox_commits_total": self.outbox.commits,
            "mqtt_online": int(self.link.state is LinkState.ONLINE),
            "mqtt_connects_total": self.link.connects,
            "mqtt_sent_total": self.link.sent,
            "mqtt_acked_total": self.link.acked,
            "mqtt_replayed_total": self.link.replayed,
            "mqtt_resent_total": self.link.resent,
            "outbox_released_seq": self.outbox.released,
            "bad_commands_total": self.bad_commands,
            "devices_online": sum(d.state is DeviceState.ONLINE for d in self.devices.values()),
            "devices_offline": sum(d.state is DeviceState.OFFLINE for d in self.devices.values()),
            **(self.parking.stats() if self.parking is not None else {}),
        }

    def bus_metrics(self) -> dict[str, dict[str, float]]:
        up = max(1e-9, time.monotonic() - self.started)
        return {
            p.bus.name: {
                "utilisation": round(p.bus.busy_seconds / up, 4),
                "transactions_total": p.bus.transactions,
                "failures_total": p.bus.failures,
            }
            for p in self.pollers
        }

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.status_interval)
            m: dict[str, int | float] = dict(self.metrics())
            for bus, bm in self.bus_metrics().items():
                m[f"bus_{bus}_utilisation"] = bm["utilisation"]
            status = Status(
                gw=self.cfg.gateway,
                ts=now_ms(),
                metrics=m,
                devices={d.id: d.state.value for d in self.devices.values()},
            )
            self.link.publish_status(status.dumps())
