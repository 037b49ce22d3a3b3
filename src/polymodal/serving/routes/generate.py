"""POST /v1/generate: samples of the model's generated targets (images, sounds) for the rows
given, as data: URLs in JSON, or one file's raw bytes."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from polymodal.serving.deps import ServiceDep
from polymodal.serving.errors import ApiError, describe_validation
from polymodal.serving.inputs import read_request
from polymodal.serving.routes.docs import ERRORS, rows_body_and
from polymodal.serving.schemas import (
    ErrorResponse,
    GenerateQuery,
    GenerateResponse,
    SamplingSettings,
    TargetPrediction,
)
from polymodal.serving.security import require_api_key
from polymodal.serving.service import Service

router = APIRouter(prefix="/v1", tags=["generate"], dependencies=[Depends(require_api_key)])

GENERATE_BODY = rows_body_and(
    ". Sampling settings guidance, steps, seed and samples as top-level JSON keys or "
    "multipart fields, or in the query (whose values win)."
)
FILE = {"schema": {"type": "string", "format": "binary"}}
RESPONSES = ERRORS | {
    200: {
        "description": "JSON, or the raw bytes of one generated file",
        "content": {"image/png": FILE, "audio/wav": FILE},
    },
    404: {"model": ErrorResponse, "description": "the model generates nothing"},
    406: {"model": ErrorResponse, "description": "a format the model does not make"},
}


@router.post(
    "/generate", response_model=GenerateResponse, openapi_extra=GENERATE_BODY, responses=RESPONSES
)
async def generate(
    request: Request, service: ServiceDep, query: Annotated[GenerateQuery, Query()]
) -> Response | GenerateResponse:
    """Sample every generated target (an image target's PNG) for each row: `samples` per row
    (at most 16, and at most `max_generated` files a request), with `guidance`, `steps`
    (1-100) and `seed` for this request only (the model's own otherwise). The same inputs,
    settings and seed give the same bytes. JSON by default: per row, per sample, each
    target's prediction with the file as a `data:` URL. Raw bytes (`Content-Type: image/png`)
    with `?format=png`, or an `Accept` header naming `image/png` but not `application/json`,
    for a request that makes one file: one row, one sample. A model without a generated
    target answers 404."""
    targets = service.generated_targets
    if not targets:
        raise ApiError(404, f"this model generates nothing: {described_targets(service)}")
    media = raw_media(request, query.format, [service.model.task(t).generates for t in targets])
    rows, given = await read_request(
        request,
        service.fields,
        service.settings.max_rows,
        options=tuple(SamplingSettings.model_fields),
    )
    settings = sampling(given, query)
    made = len(rows) * settings.samples
    if made > service.settings.max_generated:
        raise ApiError(
            413,
            f"{made} files asked for (rows × samples); at most {service.settings.max_generated}",
        )
    if media and made > 1:
        raise ApiError(422, f"raw bytes hold one file, this request makes {made}: ask for JSON")
    samples, used, warnings = await service.generate(rows, settings)
    if media:
        return Response(one_file(samples[0][0], media), media_type=media)
    return GenerateResponse(generated=samples, settings=used, warnings=warnings)


def described_targets(service: Service) -> str:
    """The model's targets and their tasks, for the 404's message."""
    targets = ", ".join(f"{s.column} ({s.task})" for s in service.model.schema_.targets)
    return f"its targets {targets} are predicted by POST /v1/predict"


def sampling(given: dict[str, object], query: GenerateQuery) -> SamplingSettings:
    """The body's settings, overridden by those the query sets; a bad one is a 422."""
    chosen = given | query.model_dump(exclude_unset=True, exclude={"format"})
    try:
        return SamplingSettings.model_validate(chosen)
    except ValidationError as error:
        message, _ = describe_validation(error.errors(include_input=False, include_url=False))
        raise ApiError(422, message) from None


def raw_media(request: Request, format: str | None, media: list[str]) -> str | None:
    """The media type to answer with as raw bytes, or None for JSON: `format` names it by its
    subtype (png), or, unset, the Accept header names it and not JSON. Several targets of
    that type would make several files: that asks for JSON too."""
    if format == "json":
        return None
    if format is not None:
        chosen = [m for m in media if m.split("/")[1] == format.lower()]
        if not chosen:
            kinds = ", ".join(["json", *(m.split("/")[1] for m in media)])
            raise ApiError(406, f"format={format}: this model makes {kinds}")
    else:
        header = request.headers.get("accept", "")
        accepted = {part.split(";")[0].strip().lower() for part in header.split(",")}
        chosen = [m for m in media if m in accepted]
        if not chosen or "application/json" in accepted:
            return None
    if len(chosen) > 1:
        raise ApiError(422, f"{len(chosen)} targets make {chosen[0]} files: ask for JSON")
    return chosen[0]


def one_file(prediction: dict[str, TargetPrediction], media: str) -> bytes:
    """The bytes of the `media` data: URL in a sample's predictions."""
    prefix = f"data:{media};base64,"
    for value in (v for p in prediction.values() for v in p.model_dump().values()):
        if isinstance(value, str) and value.startswith(prefix):
            return base64.b64decode(value[len(prefix) :])
    raise ApiError(500, f"the sample holds no {media} file")  # a task that breaks its contract
