"""POST /v1/search, GET /v1/search/info and GET /v1/search/items/{id}/file: the vector index
of `polymodal serve --index` (404 without one)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError

from polymodal.data.problems import BadInputError
from polymodal.modalities import modality
from polymodal.search.embeddings import (
    QUERY_KINDS,
    BadFilterError,
    class_query,
    nearest,
    query_input,
)
from polymodal.serving.deps import ServiceDep
from polymodal.serving.errors import ApiError, describe_validation
from polymodal.serving.inputs import ANY_JSON, check_file, form_value
from polymodal.serving.routes.docs import ERRORS
from polymodal.serving.schemas import SearchBody, SearchClass, SearchInfo, SearchResponse
from polymodal.serving.search import MAX_K, MAX_WHERE, SearchIndex
from polymodal.serving.security import require_api_key
from polymodal.serving.service import Service

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_api_key)])
NO_INDEX = "this server has no vector index: start it with polymodal serve MODEL --index DB"
FIELDS = (*QUERY_KINDS, "k", "where", "query_column", "by_class")
TRUTHS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}

SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "Exactly one query. JSON: text, or a file (image, audio, video) as "
            '{"base64": "..."} or a data: URL; multipart: a file field named after its kind '
            "(image, audio or video) or a text field. Both: k (1 to 100), where (a SQL filter "
            "on the metadata, e.g. split = 'test'), query_column (the model input the query "
            "fills, when several could), by_class (search for the query's class, when the "
            "model learned one vector per class). A file is read from the bytes sent, never "
            "a path."
        ),
        "content": {
            "application/json": {
                "schema": SearchBody.model_json_schema(ref_template="#/components/schemas/{model}"),
                "example": {"text": "a red circle", "k": 10, "where": "split = 'test'"},
            },
            "multipart/form-data": {"schema": {"type": "object", "additionalProperties": True}},
        },
    }
}
SEARCH_ERRORS = ERRORS | {
    400: {"model": ERRORS[422]["model"], "description": "a where filter the index refused"},
    404: {"model": ERRORS[422]["model"], "description": "the server has no index"},
}


def searched(service: Service) -> SearchIndex:
    if service.search is None:
        raise ApiError(404, NO_INDEX)
    return service.search


@router.get("/search/info", responses=SEARCH_ERRORS)
async def search_info(service: ServiceDep) -> SearchInfo:
    """The indexed input, its kind, the rows in the index and the queries the model takes."""
    return await asyncio.to_thread(searched(service).info)


@router.post("/search", openapi_extra=SEARCH_BODY, responses=SEARCH_ERRORS)
async def search(request: Request, service: ServiceDep) -> SearchResponse:
    """The k stored rows nearest to one query, embedded by the served model through the
    input of the query's kind (the indexed one when it is of that kind)."""
    index = searched(service)
    body = await search_body(request)
    given = [kind for kind in QUERY_KINDS if getattr(body, kind) is not None]
    if len(given) != 1:
        found = f"got {', '.join(given)}" if given else "got none"
        raise ApiError(422, f"give exactly one query: text, image, audio or video ({found})")
    kind = given[0]
    if not 1 <= body.k <= MAX_K:
        raise ApiError(422, f"k must be between 1 and {MAX_K}, got {body.k}")
    if body.where is not None and len(body.where) > MAX_WHERE:
        raise ApiError(422, f"where: at most {MAX_WHERE} characters")
    where = body.where if body.where and body.where.strip() else None
    try:
        column = query_input(index.kinds, kind, index.source.column, body.query_column)
    except BadInputError as error:
        message = str(error).replace("--query-column", "query_column").replace("--", "")
        raise ApiError(422, message) from None
    value = getattr(body, kind)
    if not modality(index.kinds[column]).files:
        if not value.strip():
            raise ApiError(422, "the text query is empty")
    else:
        source = service.source_of.get(column, column)
        field = next(f for f in service.fields if f.name == source)
        value = check_file(0, field, value)  # bytes only: a string is refused, never opened
    vector = await service.embed_query(column, value)
    named = None
    if body.by_class:
        try:
            vector, found_class = class_query(service.model, column, vector)
        except BadInputError as error:
            raise ApiError(422, str(error)) from None
        named = SearchClass(name=found_class.name, similarity=found_class.similarity)
    try:
        found = await asyncio.to_thread(nearest, index.index, vector, body.k, where)
    except BadFilterError as error:
        raise ApiError(400, str(error).replace("--where", "where")) from None
    return SearchResponse(
        query_column=column,
        indexed_column=index.source.column,
        query_class=named,
        hits=index.hits(found),
    )


async def search_body(request: Request) -> SearchBody:
    """The query from JSON or multipart, checked field by field."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: dict[str, bytes] = {}
    if content_type == "application/json":
        try:
            document = ANY_JSON.validate_json(await request.body())
        except ValidationError:
            raise ApiError(400, "the body is not valid JSON") from None
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        document = await form_document(request)
        uploads = {key: value for key, value in document.items() if isinstance(value, bytes)}
        document = {key: value for key, value in document.items() if key not in uploads}
    else:
        raise ApiError(415, "send the query as application/json or multipart/form-data")
    try:
        return SearchBody.model_validate(document).model_copy(update=uploads)
    except ValidationError as error:
        message, _ = describe_validation(error.errors(include_input=False, include_url=False))
        raise ApiError(422, message) from None


async def form_document(request: Request) -> dict:
    form = await request.form(max_files=4, max_fields=16, max_part_size=1024 * 1024)
    try:
        document: dict = {}
        for key, value in form.multi_items():
            if key not in FIELDS:
                raise ApiError(422, f"unknown field '{key}'; a search takes {', '.join(FIELDS)}")
            if key in document:
                raise ApiError(422, f"'{key}' is given twice")
            document[key] = await form_value(value)
        if isinstance(document.get("k"), str):
            try:
                document["k"] = int(document["k"])
            except ValueError:
                raise ApiError(422, f"k must be a whole number, got {document['k']!r}") from None
        for key in ("text", "where", "query_column", "k", "by_class"):
            if isinstance(document.get(key), bytes):
                raise ApiError(422, f"'{key}' is a form field, not a file")
        if isinstance(document.get("by_class"), str):
            flag = document["by_class"].strip().lower()
            if flag not in TRUTHS:
                raise ApiError(422, f"by_class must be true or false, got {document['by_class']!r}")
            document["by_class"] = TRUTHS[flag]
        return {key: value for key, value in document.items() if value is not None}
    finally:
        await form.close()


@router.get(
    "/search/items/{item_id}/file",
    response_class=FileResponse,
    responses={404: {"description": "no such item, or its file is gone"}},
)
async def item_file(
    service: ServiceDep, item_id: Annotated[int, Path(ge=0, le=2**63 - 1)]
) -> FileResponse:
    """The file a stored row's indexed cell names, found by the row's id (never by a path)."""
    path, media_type = await asyncio.to_thread(searched(service).stored_file, item_id)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}
    return FileResponse(path, media_type=media_type, headers=headers)
