"""Every failure becomes a JSON body `{"error": ...}`; none shows a stack trace.

Bad input is always a 4xx naming what is wrong (and the column and row where there is one);
only a fault of the server itself is a 500, and its details go to the log, not to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("polymodal.serving")


class ApiError(Exception):
    """A request the server refuses, with the status and a message meant for the client."""

    def __init__(
        self, status: int, message: str, *, column: str | None = None, row: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.column, self.row = status, message, column, row


def error_body(message: str, column: str | None = None, row: int | None = None) -> dict:
    body: dict = {"error": message}
    if column is not None:
        body["column"] = column
    if row is not None:
        body["row"] = row
    return body


def json_error(status: int, message: str, **where: object) -> JSONResponse:
    return JSONResponse(error_body(message, **where), status_code=status)


def describe_validation(errors: list) -> tuple[str, list[dict]]:
    """A one-line message and short details, without echoing the (maybe huge) input back."""
    details = []
    for error in errors[:10]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        details.append({"at": where, "problem": str(error.get("msg", "invalid"))[:200]})
    first = details[0] if details else {"at": "", "problem": "invalid request"}
    prefix = f"{first['at']}: " if first["at"] else ""
    return f"invalid request: {prefix}{first['problem']}", details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return json_error(error.status, error.message, column=error.column, row=error.row)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else "request refused"
        if error.status_code == 413:
            limit = request.app.state.settings.max_request_mb
            message = f"request body too large: at most {limit:g} MB"
        return JSONResponse(
            error_body(message), status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        message, details = describe_validation(list(error.errors()))
        return JSONResponse({"error": message, "details": details}, status_code=422)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_error(500, "internal server error; the server log has the details")
