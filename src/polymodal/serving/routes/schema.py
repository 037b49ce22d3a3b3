"""GET /v1/schema: the columns a request may fill, and the targets it gets back."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from polymodal.serving.deps import ServiceDep
from polymodal.serving.schemas import SchemaResponse, TargetInfo
from polymodal.serving.security import require_api_key

router = APIRouter(prefix="/v1", tags=["schema"], dependencies=[Depends(require_api_key)])


@router.get("/schema")
async def schema(service: ServiceDep) -> SchemaResponse:
    """Inputs with kinds and accepted file types; targets with their classes, `text: true`
    for a generated text, or `generates`: the media type POST /v1/generate samples."""
    model = service.model
    targets = [
        TargetInfo(
            column=state.column,
            task=state.task,
            classes=[str(c) for c in state.classes],
            text=model.task(state.column).writes_text,
            generates=model.task(state.column).generates,
        )
        for state in model.schema_.targets
    ]
    settings = service.settings
    return SchemaResponse(
        inputs=service.fields,
        targets=targets,
        max_rows=settings.max_rows,
        max_request_mb=settings.max_request_mb,
        api_key_required=bool(settings.api_key),
        search=service.search.info() if service.search is not None else None,
    )
