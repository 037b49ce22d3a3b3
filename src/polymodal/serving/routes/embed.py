"""POST /v1/embed: each row's vector of one input (`Model.embed`), as search compares them."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from polymodal.search.embeddings import described
from polymodal.serving.deps import ServiceDep
from polymodal.serving.errors import ApiError
from polymodal.serving.inputs import read_request
from polymodal.serving.routes.docs import ERRORS, rows_body_and
from polymodal.serving.schemas import EmbedResponse, InputWarning
from polymodal.serving.security import require_api_key

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_api_key)])

EMBED_BODY = rows_body_and(
    '. The input to embed as ?column=..., or as a "column" key (JSON) or field (multipart) '
    "when no request column has that name."
)


@router.post("/embed", openapi_extra=EMBED_BODY, responses=ERRORS)
async def embed(
    request: Request,
    service: ServiceDep,
    column: Annotated[str | None, Query(description="the model input to embed")] = None,
) -> EmbedResponse:
    """Each row's fused vector with only `column` present (the others masked as missing),
    equal to `Model.embed(rows, column=...)`: null for a row without a value there."""
    rows, given = await read_request(
        request, service.fields, service.settings.max_rows, options=("column",)
    )
    chosen = column if column is not None else given.get("column")
    kinds = service.model.schema_.kinds
    inputs = described(kinds)
    if not isinstance(chosen, str) or not chosen:
        raise ApiError(422, f"name the input to embed with column=...; the inputs: {inputs}")
    if chosen not in kinds:
        raise ApiError(
            422, f"no input named '{chosen}'; the model's inputs: {inputs}", column=chosen
        )
    vectors, warnings = await service.embed(rows, chosen)
    source = service.source_of.get(chosen, chosen)
    listed: list[list[float] | None] = []
    for row, vector in enumerate(vectors):
        if np.isfinite(vector).all():
            listed.append(vector.astype(float).tolist())
        else:
            listed.append(None)
            message = f"no value for input '{chosen}': its vector is null"
            warnings.append(InputWarning(row=row, column=source, message=message))
    return EmbedResponse(column=chosen, dim=vectors.shape[1], vectors=listed, warnings=warnings)
