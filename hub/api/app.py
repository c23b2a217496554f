"""The FastAPI application; ``create_app`` only wires (settings and engine come in)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from hub.api.routes import auth, commands, health, parking, payments, registry
from hub.dispatch import Dispatcher
from hub.parking import service as parking_service
from hub.runtime import make_consumer
from hub.settings import HubSettings


def create_app(settings: HubSettings, engine: Engine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = engine
        app.state.secret = settings.secret()
        app.state.user_cache = {}
        app.state.dispatcher = Dispatcher(settings, engine)
        app.state.dispatcher.start()
        unregister = parking_service.register_payments()
        app.state.consumer = None
        if settings.embedded_ingest:
            app.state.consumer = make_consumer(settings, engine)
            app.state.consumer.start()
            # serve (and say READY) once subscribed, or after 10 s with the broker away
            await asyncio.to_thread(app.state.consumer.connected.wait, 10)
        try:
            yield
        finally:
            if app.state.consumer is not None:
                app.state.consumer.stop()
            app.state.dispatcher.stop()
            unregister()

    app = FastAPI(title="wuye hub", version="0.1.0", lifespan=lifespan)
    routers = (auth, registry, commands, payments, parking, health)
    for r in (m.router for m in routers):
        app.include_router(r)
    return app
