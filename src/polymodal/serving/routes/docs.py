"""The request body of /v1/predict and /v1/explain, for the OpenAPI document.

The endpoints read JSON or multipart themselves (one body, two encodings), so the body is
described here rather than inferred from a parameter.
"""

from __future__ import annotations

from polymodal.serving.schemas import ErrorResponse, RowsBody

ROWS_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            'One row, or several as {"rows": [...]}. Columns are those of GET /v1/schema. '
            'JSON: files as {"base64": "..."} or data: URLs. Multipart: files as uploads, '
            "other columns as fields; several rows as rows[0][column], rows[1][column], ..."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"type": "object", "additionalProperties": True, "title": "one row"},
                        RowsBody.model_json_schema(ref_template="#/components/schemas/{model}"),
                    ]
                },
                "example": {"comment": "a red circle", "picture": {"base64": "iVBORw0KGgo..."}},
            },
            "multipart/form-data": {
                "schema": {"type": "object", "additionalProperties": True},
            },
        },
    }
}


def rows_body_and(more: str) -> dict:
    """`ROWS_BODY` with `more` added to its description (the options a route takes beside)."""
    body = ROWS_BODY["requestBody"]
    return {"requestBody": {**body, "description": body["description"] + more}}


ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "missing or wrong API key",
        413: "request too large (bytes or rows)",
        415: "a file whose content is not the column's kind, or an unsupported body type",
        422: "unknown column, wrong value type, undecodable file or value",
        503: "server busy",
    }.items()
}
