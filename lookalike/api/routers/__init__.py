"""One APIRouter per resource. ``ROUTERS`` names the modules ``create_app`` includes, in order:
adding a resource is adding a module here with a ``router`` and one entry to this tuple."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

ROUTERS: tuple[str, ...] = ("system", "search", "recommendations", "products", "images", "index_jobs")


def all_routers() -> list[APIRouter]:
    return [importlib.import_module(f"{__name__}.{name}").router for name in ROUTERS]
