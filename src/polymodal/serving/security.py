"""The optional API key (header X-API-Key; /health and the page stay open) and the body limit."""

from __future__ import annotations

import json
import secrets
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polymodal.serving.errors import ApiError

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="needed when the server was started with --api-key or POLYMODAL_API_KEY",
)


def require_api_key(
    request: Request, key: Annotated[str | None, Security(api_key_header)] = None
) -> None:
    """401 unless the server has no key or the request's X-API-Key matches it."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    if key is None or not secrets.compare_digest(key.encode(), expected.encode()):
        raise ApiError(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")


class BodyLimitMiddleware:
    """413 JSON for a body over the limit: at once from Content-Length, or while it streams in.

    FastAPI's own `max_body_size` answers a declared-too-large body in plain text; this one
    keeps every refusal JSON.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").strip()
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.refuse(send, too_large=declared.isdigit())
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, "request body too large")  # answered as JSON
            return message

        await self.app(scope, counted_receive, send)

    async def refuse(self, send: Send, too_large: bool) -> None:
        limit = self.max_bytes / 1024 / 1024
        text = (
            f"request body too large: at most {limit:g} MB" if too_large else "bad Content-Length"
        )
        body = json.dumps({"error": text}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send(
            {"type": "http.response.start", "status": 413 if too_large else 400, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})
