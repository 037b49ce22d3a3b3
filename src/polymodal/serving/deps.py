"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from polymodal.serving.service import Service
from polymodal.serving.settings import ServeSettings


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
