"""GET /health: open to all (no API key), for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from polymodal.serving.deps import SettingsDep
from polymodal.serving.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(settings: SettingsDep) -> HealthResponse:
    return HealthResponse(model=settings.model_dir.name, batching=settings.batching)
