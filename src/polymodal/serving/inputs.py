"""From an HTTP request to rows of cells: JSON or multipart, checked against the model's columns.

File columns accept only bytes the client sent (a multipart upload, or base64 in JSON); a
string there is refused, so no request can make the server read a path of its choosing. Each
file's type is told from its first bytes, never from its name or declared content type.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile

from polymodal.data.column import is_missing
from polymodal.data.features import FittedSchema
from polymodal.data.sniff import sniff_bytes
from polymodal.modalities import modality
from polymodal.serving.errors import ApiError, describe_validation
from polymodal.serving.schemas import FileValue, InputField, JsonRow, RowsBody, WidgetInfo

MAX_CATEGORIES_SHOWN = 1000
MULTIPART_ROW = re.compile(r"^rows\[(\d{1,6})\]\[(.+)\]$")
ANY_JSON = TypeAdapter(Any)
ROW = TypeAdapter(JsonRow)
MAX_INT = 2**63


@dataclass(frozen=True)
class Upload:
    """Bytes a client sent for a file column, with the media kind read from them."""

    data: bytes
    kind: str


Cell = Upload | str | int | float | None
Row = dict[str, Cell]


def input_fields(schema: FittedSchema) -> list[InputField]:
    """Request columns: one per source column (a video's sound track shares the video's)."""
    by_source: dict[str, list] = {}
    for state in schema.inputs:
        by_source.setdefault(state.source, []).append(state)
    fields = []
    for source, states in by_source.items():
        # A video column also feeds its sound track: the highest-ranked modality names it.
        reader, state = max(((modality(s.kind), s) for s in states), key=lambda p: p[0].rank)
        categories = reader.field_choices(state)
        widget = reader.widget
        fields.append(
            InputField(
                name=source,
                kind=reader.name,
                widget=WidgetInfo(
                    control=widget.control, capture=widget.capture, preview=widget.preview
                ),
                file=reader.files,
                accept=widget.accept,
                formats=list(reader.formats),
                categories=categories[:MAX_CATEGORIES_SHOWN] if categories is not None else None,
                categories_truncated=bool(categories) and len(categories) > MAX_CATEGORIES_SHOWN,
                inputs=[state.column for state in states],
            )
        )
    return fields


async def read_rows(request: Request, fields: list[InputField], max_rows: int) -> list[Row]:
    """The request's rows, each checked: known columns, right value types, sniffed files."""
    rows, _ = await read_request(request, fields, max_rows)
    return rows


async def read_request(
    request: Request, fields: list[InputField], max_rows: int, options: tuple[str, ...] = ()
) -> tuple[list[Row], dict[str, object]]:
    """The rows, and the `options` given beside them: top-level JSON keys or plain multipart
    fields of those names (a name that is also a column stays the column's)."""
    names = {field.name for field in fields}
    taken = tuple(name for name in options if name not in names)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        raw, given = parse_json(await request.body(), taken)
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raw, given = await parse_form(request, max_rows, taken)
    else:
        raise ApiError(415, "send the rows as application/json or multipart/form-data (see /docs)")
    if len(raw) > max_rows:
        raise ApiError(413, f"{len(raw)} rows in one request; at most {max_rows}")
    by_name = {field.name: field for field in fields}
    return [check_row(index, row, by_name) for index, row in enumerate(raw)], given


def parse_json(body: bytes, options: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    """One row `{column: value}` or `{"rows": [...]}`; files as `{"base64": ...}` or data: URLs.
    Top-level keys named in `options` are taken out and returned beside the rows."""
    try:
        document = ANY_JSON.validate_json(body)  # pydantic's parser: depth-limited, no recursion
    except ValidationError:
        raise ApiError(400, "the body is not valid JSON") from None
    given = {}
    if isinstance(document, dict):
        given = {name: document.pop(name) for name in options if name in document}
    return parse_document(document), given


def parse_document(document: object) -> list[dict]:
    try:
        if isinstance(document, dict) and "rows" in document:
            return [dict(row) for row in RowsBody.model_validate(document).rows]
        return [ROW.validate_python(document)]
    except ValidationError as error:
        message, _ = describe_validation(error.errors(include_input=False, include_url=False))
        raise ApiError(422, message.replace("invalid request", "invalid JSON body")) from None


async def parse_form(
    request: Request, max_rows: int, options: tuple[str, ...] = ()
) -> tuple[list[dict], dict]:
    """Fields named `column` (one row) or `rows[i][column]` (several rows); plain fields named
    in `options` are returned beside the rows."""
    form = await request.form(max_files=256, max_fields=1024, max_part_size=1024 * 1024)
    try:
        given = {}
        for name in options:
            values = form.getlist(name)
            if len(values) > 1:
                raise ApiError(422, f"'{name}' is given twice")
            if values:
                given[name] = await form_value(values[0])
        return await form_rows(form, max_rows, options), given
    finally:
        await form.close()  # uploads over 1 MB were spooled to temporary files


async def form_rows(form: FormData, max_rows: int, skip: tuple[str, ...] = ()) -> list[dict]:
    single: dict = {}
    numbered: dict[int, dict] = {}
    for key, value in form.multi_items():
        if key in skip:
            continue
        match = MULTIPART_ROW.match(key)
        row, column = (numbered.setdefault(int(match[1]), {}), match[2]) if match else (single, key)
        if match and int(match[1]) >= max_rows:
            raise ApiError(413, f"row index {match[1]} too large; at most {max_rows} rows")
        if column in row:
            raise ApiError(422, f"column '{column}' is given twice", column=column)
        row[column] = await form_value(value)
    if single and numbered:
        raise ApiError(422, "use either plain column names or rows[i][column] names, not both")
    if not numbered:
        return [single]
    if sorted(numbered) != list(range(len(numbered))):
        raise ApiError(422, "rows[i][column] fields must number the rows 0, 1, 2, ...")
    return [numbered[index] for index in range(len(numbered))]


async def form_value(value: UploadFile | str) -> bytes | str | None:
    if isinstance(value, str):
        return value
    data = await value.read()
    if not data and not value.filename:
        return None  # a browser's file input left empty
    return data


def check_row(index: int, raw: dict, fields: dict[str, InputField]) -> Row:
    row: Row = {}
    for column, value in raw.items():
        field = fields.get(column)
        if field is None:
            names = ", ".join(fields)
            raise ApiError(
                422,
                f"unknown column '{column}'; this model reads: {names}",
                column=column,
                row=index,
            )
        row[column] = (
            check_file(index, field, value) if field.file else check_value(index, field, value)
        )
    if all(is_missing(value) for value in row.values()):
        names = ", ".join(fields)
        raise ApiError(
            422, f"row {index} has no input values; this model reads: {names}", row=index
        )
    return row


def check_value(index: int, field: InputField, value: object) -> Cell:
    if isinstance(value, FileValue | bytes):
        raise ApiError(
            422,
            f"column '{field.name}' takes a {field.kind} value, not a file",
            column=field.name,
            row=index,
        )
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ApiError(
            422, f"column '{field.name}': number too large", column=field.name, row=index
        )
    return value  # type: ignore[return-value]  # str, int, float or None, checked by the parser


def check_file(index: int, field: InputField, value: object) -> Upload | None:
    """Bytes whose content is a kind this column decodes; never a string, so never a path."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    data = file_bytes(index, field, value)
    if not data:
        raise ApiError(
            422, f"column '{field.name}': the uploaded file is empty", column=field.name, row=index
        )
    kind = sniff_bytes(data[:64])
    if kind not in modality(field.kind).sniffed:
        found = f"{kind} content" if kind else "no supported format"
        raise ApiError(
            415,
            f"column '{field.name}' takes a {field.kind} file ({', '.join(field.formats)}); "
            f"the uploaded file holds {found} (types are read from the bytes, not the name)",
            column=field.name,
            row=index,
        )
    return Upload(data, kind)


def file_bytes(index: int, field: InputField, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, FileValue):
        return decode_base64(index, field, value.base64)
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value[:200]:
        return decode_base64(index, field, value.split(",", 1)[1])
    raise ApiError(
        422,
        f"column '{field.name}' takes a {field.kind} file: upload it (multipart) or send "
        '{"base64": "..."} or a data: URL in JSON; file names and paths are never read',
        column=field.name,
        row=index,
    )


def decode_base64(index: int, field: InputField, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422, f"column '{field.name}': not valid base64", column=field.name, row=index
        ) from None
