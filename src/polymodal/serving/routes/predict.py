"""POST /v1/predict: predictions and class probabilities for one row or several."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from polymodal.serving.deps import ServiceDep
from polymodal.serving.inputs import read_rows
from polymodal.serving.routes.docs import ERRORS, ROWS_BODY
from polymodal.serving.schemas import PredictResponse
from polymodal.serving.security import require_api_key

router = APIRouter(prefix="/v1", tags=["predict"], dependencies=[Depends(require_api_key)])


@router.post("/predict", openapi_extra=ROWS_BODY, responses=ERRORS)
async def predict(request: Request, service: ServiceDep) -> PredictResponse:
    """Predict each row, decoded and run together with concurrent requests (micro-batching)."""
    with service.batcher.preparing():
        rows = await read_rows(request, service.fields, service.settings.max_rows)
    predictions, warnings = await service.predict(rows)
    return PredictResponse(predictions=predictions, warnings=warnings)
