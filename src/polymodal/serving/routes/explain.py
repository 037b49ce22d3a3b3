"""POST /v1/explain: how much each input moved each row's prediction."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from polymodal.serving.deps import ServiceDep
from polymodal.serving.errors import ApiError
from polymodal.serving.explain import METHOD, TooManyInputs, explain_rows
from polymodal.serving.inputs import read_rows
from polymodal.serving.routes.docs import ERRORS, ROWS_BODY
from polymodal.serving.schemas import ExplainResponse
from polymodal.serving.security import require_api_key

router = APIRouter(prefix="/v1", tags=["explain"], dependencies=[Depends(require_api_key)])


@router.post("/explain", openapi_extra=ROWS_BODY, responses=ERRORS)
async def explain(request: Request, service: ServiceDep) -> ExplainResponse:
    """Exact Shapley values over the model's inputs, per row and target (≤ 6 inputs)."""
    settings = service.settings
    rows = await read_rows(request, service.fields, settings.max_explain_rows)
    features, warnings = await service.encode_request(rows)
    try:
        explanations = await service.batcher.in_model_thread(explain_rows, service.model, features)
    except TooManyInputs as error:
        raise ApiError(501, str(error)) from None
    return ExplainResponse(method=METHOD, explanations=explanations, warnings=warnings)
