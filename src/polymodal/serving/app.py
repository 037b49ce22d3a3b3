"""The FastAPI application: `create_app(settings)`, and `serve(settings)` to run it with uvicorn."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from polymodal.data.problems import BadInputError
from polymodal.model import CONFIG, WEIGHTS
from polymodal.serving.errors import install_error_handlers
from polymodal.serving.metrics import Metrics, MetricsMiddleware
from polymodal.serving.routes import (
    embed,
    explain,
    generate,
    health,
    metrics,
    page,
    predict,
    schema,
    search,
)
from polymodal.serving.routes.page import STATIC
from polymodal.serving.search import open_search_index
from polymodal.serving.security import API_KEY_HEADER, BodyLimitMiddleware
from polymodal.serving.service import Service
from polymodal.serving.settings import SETTINGS_VARIABLE, ServeSettings
from polymodal.version import __version__


def check_model_dir(settings: ServeSettings) -> None:
    """Fail before the server starts, with one line, when the folder holds no model or the
    index (if any) is not one of that model."""
    for name in (CONFIG, WEIGHTS):
        if not (settings.model_dir / name).is_file():
            raise BadInputError(
                f"{settings.model_dir} is not a polymodal model folder: {name} is missing"
            )
    if settings.index_dir is not None:  # an index of another model is refused before start-up
        open_search_index(settings.index_dir, settings.model_dir)


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for one model folder; the model loads in the lifespan, once per worker."""
    metrics_ = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, metrics_)
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="polymodal",
        version=__version__,
        summary=f"Predictions from the multimodal model in {settings.model_dir.name}",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics_
    routers = (predict, generate, explain, embed, search, schema, health, metrics)
    for module in routers:
        app.include_router(module.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:  # off unless asked for
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", API_KEY_HEADER],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics_)  # outermost: counts every answer
    return app


def app_from_environment() -> FastAPI:
    """The factory uvicorn's worker processes call (`--workers N`)."""
    return create_app(ServeSettings.from_environment())


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted; with several workers, each loads the model."""
    import uvicorn

    check_model_dir(settings)
    options = {"host": settings.host, "port": settings.port, "log_level": settings.log_level}
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    os.environ[SETTINGS_VARIABLE] = settings.model_dump_json()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="polymodal-metrics-"))
    uvicorn.run(
        "polymodal.serving.app:app_from_environment",
        factory=True,
        workers=settings.workers,
        **options,
    )
