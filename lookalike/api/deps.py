"""Dependencies as ``Annotated`` aliases: ``CatalogDep``, ``SettingsDep``, ``WriteKeyDep``, ..."""

from __future__ import annotations

import hmac
import ipaddress
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


def _local_host(request: Request) -> bool:
    """The request names the server by an IP address, localhost or a one-label name (``api``, as
    containers call each other), not by a domain name that someone else's DNS answers for."""
    host = request.headers.get("host", "").strip().lower().rstrip(".")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if name and ("." not in name or name.endswith(".localhost")):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def require_write_key(request: Request, settings: SettingsDep, key: APIKeyDep) -> None:
    """Writes need the API key when one is configured; outside development they need one configured.

    Development without a key takes writes only from requests that name the server by IP address,
    localhost or a one-label host name: a web page on another site could otherwise point its own
    domain name at 127.0.0.1 (DNS rebinding) and write to a developer's local server through the
    browser."""
    if settings.api_key:
        _check_key(settings, key)
    elif settings.environment != "development":
        raise APIError(
            403, "writes_disabled", "writes are disabled: set LOOKALIKE_API_KEY on the server to enable them"
        )
    elif not _local_host(request):
        raise APIError(
            403,
            "writes_disabled",
            f"without an API key, writes are taken only at an IP address or localhost, not at host "
            f"{request.headers.get('host', '')[:100]!r}: set LOOKALIKE_API_KEY on the server",
        )


def require_read_key(settings: SettingsDep, key: APIKeyDep) -> None:
    """Reads are open unless ``protect_reads`` is set."""
    if settings.protect_reads and settings.api_key:
        _check_key(settings, key)


WriteKeyDep = Annotated[None, Depends(require_write_key)]
ReadKeyDep = Annotated[None, Depends(require_read_key)]
