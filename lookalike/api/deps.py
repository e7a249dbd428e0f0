"""Dependencies as ``Annotated`` aliases: ``CatalogDep``, ``SettingsDep``, ``WriteKeyDep``, ..."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from lookalike.api.errors import APIError
from lookalike.api.service import Service
from lookalike.catalog import Catalog
from lookalike.config import Settings

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required for writes when the server has an API key; for reads too "
    "with LOOKALIKE_PROTECT_READS=1.",
)


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_catalog(service: ServiceDep) -> Catalog:
    return service.catalog


def get_app_settings(service: ServiceDep) -> Settings:
    return service.settings


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
APIKeyDep = Annotated[str | None, Security(_api_key)]


def _check_key(settings: Settings, given: str | None) -> None:
    expected = settings.api_key
    if given is None or given == "":
        raise APIError(
            401,
            "missing_api_key",
            f"this endpoint needs the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise APIError(403, "invalid_api_key", f"the {API_KEY_HEADER} header does not match the server's key")


def require_write_key(settings: SettingsDep, key: APIKeyDep) -> None:
    """Writes need the API key when one is configured; outside development they need one configured."""
    if settings.api_key:
        _check_key(settings, key)
    elif settings.environment != "development":
        raise APIError(
            403, "writes_disabled", "writes are disabled: set LOOKALIKE_API_KEY on the server to enable them"
        )


def require_read_key(settings: SettingsDep, key: APIKeyDep) -> None:
    """Reads are open unless ``protect_reads`` is set."""
    if settings.protect_reads and settings.api_key:
        _check_key(settings, key)


WriteKeyDep = Annotated[None, Depends(require_write_key)]
ReadKeyDep = Annotated[None, Depends(require_read_key)]
