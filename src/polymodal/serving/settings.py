"""What `polymodal serve` was asked for, in one object every part of the server reads."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

SETTINGS_VARIABLE = "POLYMODAL_SERVE_SETTINGS"  # hands the settings to uvicorn's worker processes


class ServeSettings(BaseModel):
    """Options of `polymodal serve`; the defaults are safe for a loopback-only server."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    api_key: str | None = None
    batching: bool = True
    max_batch: int = Field(32, ge=1, le=1024)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    cors_origins: list[str] = []
    max_request_mb: float = Field(20.0, gt=0)
    decode_timeout_s: float = Field(10.0, gt=0)
    decode_threads: int = Field(4, ge=2)
    max_rows: int = Field(64, ge=1, description="rows in one request")
    max_explain_rows: int = Field(16, ge=1, description="rows in one explain request")
    max_generated: int = Field(
        16, ge=1, description="files one generate request makes: its rows times samples"
    )
    log_level: str = "info"  # "warning" drops uvicorn's access log
    index_dir: Path | None = Field(None, description="a vector index of this model to search")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def batch_limit(self) -> int:
        """Rows per forward pass: 1 without batching, so each request runs on its own."""
        return self.max_batch if self.batching else 1

    @property
    def batch_wait_s(self) -> float:
        return self.max_wait_ms / 1000 if self.batching else 0.0

    @classmethod
    def from_environment(cls) -> ServeSettings:
        """The settings the parent process wrote for uvicorn's worker processes."""
        text = os.environ.get(SETTINGS_VARIABLE)
        if not text:
            raise RuntimeError(
                f"{SETTINGS_VARIABLE} is not set: start the server with polymodal serve"
            )
        return cls.model_validate_json(text)
