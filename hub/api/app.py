"""The FastAPI application; ``create_app`` only wires (settings and engine come in)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from hub.alarms import live
from hub.api.routes import alarms, auth, commands, health, parking, payments, registry, workorders
from hub.api.storable import RefuseUnstorableText
from hub.billing import adjust as billing_adjust
from hub.billing import payments as billing_payments
from hub.billing import reminder_routes as billing_reminders
from hub.billing import report_routes as billing_reports
from hub.billing import routes as billing_routes
from hub.billing.reminders import ReminderSender
from hub.dispatch import Dispatcher
from hub.notify import Sender
from hub.notify import routes as notify_routes
from hub.parking import service as parking_service
from hub.property import routes as property_routes
from hub.runtime import make_consumer
from hub.settings import HubSettings
from hub.workorders import from_alarms

WEB = Path(__file__).resolve().parent.parent / "web"


def create_app(
    settings: HubSettings,
    engine: Engine,
    on_ingest_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The app; ``on_ingest_failure`` is called (from the ingest thread) if ingest dies."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = engine
        app.state.secret = settings.secret()
        app.state.user_cache = {}
        app.state.dispatcher = Dispatcher(settings, engine)
        app.state.dispatcher.start()
        tag = uuid.uuid4().hex[:8]
        app.state.alarm_publisher = live.Publisher(settings, f"hub-alarms-{tag}")
        app.state.alarm_broadcaster = live.Broadcaster(settings, f"hub-live-{tag}")
        app.state.alarm_broadcaster.start(asyncio.get_running_loop())
        unregister = parking_service.register_payments()
        unregister_fees = billing_payments.register_payments()
        uninstall_adjustments = billing_adjust.install_area_adjustments()
        uninstall_hooks = from_alarms.install(settings)  # alarms -> work orders, notifications
        app.state.notify_sender = Sender.from_settings(settings, engine)
        app.state.notify_sender.start()
        app.state.reminder_sender = ReminderSender.from_settings(settings, engine)
        app.state.reminder_sender.start()  # a thread only if SMS or WeChat is configured
        app.state.consumer = None
        if settings.embedded_ingest:
            app.state.consumer = make_consumer(settings, engine)
            app.state.consumer.on_failure = on_ingest_failure
            app.state.consumer.start()
            # serve (and say READY) once subscribed, or after 10 s with the broker away
            await asyncio.to_thread(app.state.consumer.connected.wait, 10)
        try:
            yield
        finally:
            if app.state.consumer is not None:
                app.state.consumer.stop()
            app.state.dispatcher.stop()
            app.state.alarm_broadcaster.stop()
            app.state.alarm_publisher.close()
            app.state.notify_sender.stop()
            app.state.reminder_sender.stop()
            uninstall_hooks()
            unregister_fees()
            uninstall_adjustments()
            unregister()

    app = FastAPI(title="wuye hub", version="0.1.0", lifespan=lifespan)
    app.add_middleware(RefuseUnstorableText)  # 422 for text no database stores, not a 500
    routers = (
        auth,
        registry,
        commands,
        payments,
        parking,
        alarms,
        workorders,
        notify_routes,
        property_routes,
        billing_routes,
        billing_reminders,
        billing_reports,
        health,
    )
    for r in (m.router for m in routers):
        app.include_router(r)
    # the engineers' page (hub/web): static files, everything else through the API
    app.mount("/ui", StaticFiles(directory=WEB, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    return app
