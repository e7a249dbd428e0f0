"""The interactive catalog map in a real headless Chromium: hovering a point shows its thumbnail and id,
with no network access needed (everything is inline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.catalog import Catalog
from lookalike.explore import LatentSpace, catalog_map, save_map_html

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")


def test_hovering_a_point_shows_its_thumbnail_and_product_id(tmp_path):
    with Catalog.open(tmp_path / "catalog.db") as cat:
        cat.index(
            "fashion-mnist:test", model="pixels", limit=80, report_path=tmp_path / "r.json", progress=False
        )
        space = LatentSpace(cat)
        m = catalog_map(space, method="tsne", limit=None)
        page_path = save_map_html(space, m, tmp_path / "map.html")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        assert not page.locator("#tip").is_visible()
        box = page.locator("canvas").bounding_box()
        for i in (0, 41):
            x, y, pid = page.evaluate(f"[P[{i}].x, P[{i}].y, P[{i}].id]")
            page.mouse.move(box["x"] + 12 + x * (760 - 24), box["y"] + 12 + (1 - y) * (620 - 24))
            tip = page.locator("#tip")
            assert tip.is_visible()
            assert pid in tip.inner_text()
            assert tip.locator("img").evaluate("i => i.complete && i.naturalWidth") == 28
        browser.close()
    assert not errors
    assert all(u.startswith(("file:", "data:")) for u in requests)
