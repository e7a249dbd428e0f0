"""The web page in a real headless Chromium (Debian's /usr/bin/chromium through Playwright), against
the real server started by `lookalike serve` on 127.0.0.1. Screenshots go to artifacts/browser/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_support import free_port, index_small_catalog, photo_bytes

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`lookalike serve` in a subprocess over a 300-item catalog; yields its base URL."""
    home = tmp_path_factory.mktemp("browser")
    db = index_small_catalog(str(home / "catalog.db"))
    port = free_port()
    env = {**os.environ, "LOOKALIKE_DATA_DIR": str(home / "data"), "LOOKALIKE_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", "serve", "--db", db, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start:\n{proc.stdout.read().decode(errors='replace')}")
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.wait_for_selector("#catalog-info:has-text('300 products')")
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def card_ids(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.productId)")


def test_upload_a_photo_of_a_catalog_item_finds_it(page, tmp_path, fmnist_test):
    photo = tmp_path / "my-photo.jpg"
    photo.write_bytes(photo_bytes(fmnist_test[0][17], "JPEG", size=240))
    with page.expect_file_chooser() as chooser:
        page.click("#choose-button")
    chooser.value.set_files(str(photo))
    page.wait_for_selector(".card")
    shot(page, "01-upload-results")
    ids = card_ids(page)
    assert ids[0] == "fmnist-test-17" and len(ids) == 12
    assert page.inner_text("#results-title") == "Top matches"
    assert page.is_visible("#query-image") and "my-photo.jpg" in page.inner_text("#query-caption")
    first = page.locator(".card").first
    assert "%" in first.locator(".score").inner_text() and first.locator(".chip").inner_text()
    assert first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")


def test_click_a_result_shows_its_neighbours(page, server, tmp_path, fmnist_test):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    clicked = card_ids(page)[2]
    page.locator(".card").nth(2).click()
    page.wait_for_selector(f"#results[data-query='{clicked}']")
    shot(page, "02-similar-after-click")
    assert page.inner_text("#results-title").startswith("Products like")
    ids = card_ids(page)
    assert clicked not in ids
    expected = httpx.get(f"{server}/v1/products/{clicked}/similar", params={"k": 12}).json()
    assert ids == [h["product_id"] for h in expected["results"]]


def test_category_filter_restricts_the_grid(page, tmp_path, fmnist_test):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    page.select_option("#category-select", "Bag")
    page.wait_for_selector("#results-sub:has-text('in Bag')")
    shot(page, "03-category-filter")
    chips = page.eval_on_selector_all(".card .chip", "chips => chips.map(c => c.textContent)")
    assert chips and set(chips) == {"Bag"}


def test_broken_file_shows_the_reason(page, tmp_path):
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a complete jpeg")
    page.set_input_files("#file-input", str(broken))
    page.wait_for_selector("#error:not([hidden])")
    shot(page, "04-broken-file-error")
    text = page.inner_text("#error")
    assert "We could not read that image" in text and "holiday.jpg" in text
    assert card_ids(page) == []


def test_phone_layout_has_the_camera_input(browser, server, tmp_path, fmnist_test):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server + "/")
    camera = page.locator("#camera-input")
    assert camera.get_attribute("capture") == "environment" and camera.get_attribute("accept") == "image/*"
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(photo_bytes(fmnist_test[0][30], "JPEG", size=300))
    with page.expect_file_chooser() as chooser:
        page.tap("#camera-button")
    chooser.value.set_files(str(photo))
    page.wait_for_selector(".card")
    page.wait_for_timeout(400)  # the page scrolls the grid into view
    shot(page, "06-phone-camera")
    assert card_ids(page)[0] == "fmnist-test-30"
    assert page.locator("#results-title").bounding_box()["y"] < 844  # the grid is on screen
    context.close()


def test_private_url_is_refused_on_the_page(page):
    page.fill("#url-input", "http://127.0.0.1:8000/secret.png")
    page.click("#url-form button")
    page.wait_for_selector("#error:not([hidden])")
    shot(page, "05-url-refused")
    assert "not allowed" in page.inner_text("#error") and "loopback" in page.inner_text("#error")


def test_api_docs_render_with_examples(browser, server):
    pytest.importorskip("swagger_ui", reason="offline /docs needs the swagger-ui-py package")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    external: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(server) else external.append(req.url))
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/search']")
    page.click(".opblock-summary-path[data-path='/v1/search']")
    page.wait_for_selector("text=application/json")
    shot(page, "07-api-docs")
    assert [u for u in external if not u.startswith("data:")] == []  # works offline
    context.close()
