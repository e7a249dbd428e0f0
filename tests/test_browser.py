"""The web page in a real headless Chromium (Debian's /usr/bin/chromium through Playwright), against
the real server started by `lookalike serve` on 127.0.0.1. Screenshots go to artifacts/browser/."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from api_support import free_port, index_small_catalog, photo_bytes

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")


KEY = "browser-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`lookalike serve` in a subprocess over a 300-item catalog; yields its base URL."""
    with serve_catalog(tmp_path_factory.mktemp("browser")) as base:
        yield base


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    """The same catalog with a text model trained on it (LOOKALIKE_TEXT_MODEL): words and tags."""
    from lookalike.catalog import Catalog
    from lookalike.text import train_text_model

    home = tmp_path_factory.mktemp("browser-text")
    db = index_small_catalog(str(home / "text-catalog.db"))
    with Catalog.open(db) as cat:
        path = train_text_model(cat, progress=False).save(home / "text.pt")
    with serve_catalog(home, {"LOOKALIKE_TEXT_MODEL": str(path)}, db=db) as base:
        yield base


@pytest.fixture(scope="module")
def protected_server(tmp_path_factory):
    """The same, with an API key that reads need too (LOOKALIKE_PROTECT_READS)."""
    env = {"LOOKALIKE_API_KEY": KEY, "LOOKALIKE_PROTECT_READS": "1"}
    with serve_catalog(tmp_path_factory.mktemp("browser-protected"), env) as base:
        yield base


@contextlib.contextmanager
def serve_catalog(
    home: Path, extra_env: dict[str, str] | None = None, db: str | None = None
) -> Iterator[str]:
    db = db or index_small_catalog(str(home / "catalog.db"))
    port = free_port()
    env = {
        **os.environ,
        "LOOKALIKE_DATA_DIR": str(home / "data"),
        "LOOKALIKE_PROGRESS": "0",
        **(extra_env or {}),
    }
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
    try:
        yield base
    finally:
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


def until(page, condition, what, timeout_s: float = 10) -> None:
    """Wait for ``condition()`` while the page's events come in (Playwright delivers them meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting; got {what!r}"
        page.wait_for_timeout(50)


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


def test_alignment_check_box_reranks_and_can_be_turned_off(page, server, tmp_path, fmnist_test):
    photo = tmp_path / "street.jpg"
    data = photo_bytes(fmnist_test[0][42], "JPEG", size=200, angle=10)
    photo.write_bytes(data)
    assert page.is_checked("#rerank-check")  # on by default: the page is for customer photos
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card .alignment")
    shot(page, "01b-reranked-results")
    checked = httpx.post(
        f"{server}/v1/search", files={"image": ("s.jpg", data, "image/jpeg")}, data={"k": 12, "rerank": 300}
    ).json()
    assert card_ids(page) == [h["product_id"] for h in checked["results"]]
    first = page.locator(".card").first.locator(".alignment").inner_text()
    assert first == f"aligns {checked['results'][0]['alignment'] * 100:.0f}%"
    page.uncheck("#rerank-check")  # searches again, without the check
    until(page, lambda: page.locator(".card .alignment").count() == 0, "alignment labels")
    page.wait_for_selector(".card")
    plain = httpx.post(
        f"{server}/v1/search", files={"image": ("s.jpg", data, "image/jpeg")}, data={"k": 12}
    ).json()
    until(page, lambda: card_ids(page) == [h["product_id"] for h in plain["results"]], card_ids(page))


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


def test_hearts_collect_likes_and_recommend_from_them(page, server, tmp_path, fmnist_test):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    assert page.is_hidden("#liked")  # nothing liked yet
    ids = card_ids(page)
    hearts = page.locator(".like")
    hearts.nth(0).click()
    hearts.nth(3).click()
    hearts.nth(5).click()
    hearts.nth(5).click()  # changed their mind: a second click takes the like back
    assert page.inner_text("#liked-count") == "\u2665 2 liked"
    assert page.locator("#liked-strip .liked-thumb img").count() == 2  # the liked products' pictures
    assert hearts.nth(0).get_attribute("aria-pressed") == "true"
    assert hearts.nth(5).get_attribute("aria-pressed") == "false"
    page.click("#liked-show")
    page.wait_for_selector("#results-title:has-text('Recommended from 2 liked products')")
    page.wait_for_selector(".card")
    page.evaluate("window.scrollTo(0, 0)")  # the side panel is sticky: draw it from the top
    shot(page, "02b-recommended-from-likes")
    liked = [ids[0], ids[3]]
    expected = httpx.post(f"{server}/v1/recommendations", json={"liked": liked, "k": 12}).json()
    assert card_ids(page) == [h["product_id"] for h in expected["results"]]
    assert not set(liked) & set(card_ids(page))
    assert parse_qs(urlparse(page.url).query)["liked"] == liked  # the address holds the search
    assert page.is_disabled("#rerank-check")  # no photo to check against
    page.reload()  # the likes stay in the tab, and the address repeats the search
    page.wait_for_selector("#results-title:has-text('Recommended from 2 liked products')")
    page.wait_for_selector(".card")
    assert page.inner_text("#liked-count") == "\u2665 2 liked"
    page.click("#liked-clear")  # on the recommendations page: back to the start, likes gone
    assert page.is_hidden("#liked")
    page.wait_for_selector("#results-title:has-text('Search the catalog with a photo')")
    assert "liked" not in page.url and page.evaluate("sessionStorage.getItem('lookalike.liked')") is None
    assert page.evaluate("document.activeElement.id") == "results-title"


def test_the_photo_can_be_checked_against_a_product(page, server, tmp_path, fmnist_test):
    photo = tmp_path / "claim.jpg"
    photo.write_bytes(photo_bytes(fmnist_test[0][42], "JPEG", size=200, angle=10))
    page.uncheck("#rerank-check")
    assert page.is_hidden("#check-form")  # no photo yet
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    first = card_ids(page)[0]
    assert page.is_visible("#check-form") and page.input_value("#check-input") == ""  # no claim made yet
    page.click("#check-form button[type=submit]")
    page.wait_for_selector("#check-verdict[data-verdict='error']:has-text('Type a product id first')")
    page.fill("#check-input", first)
    page.press("#check-input", "Enter")
    page.wait_for_selector("#check-verdict[data-verdict='match']")
    verdict = page.inner_text("#check-verdict")
    assert verdict.startswith("Yes, as far as the pictures show") and "cannot prove" in verdict
    page.click("#check-verdict summary")  # the server's own reason, under "why"
    assert "no other product of the catalog looks more like the photo" in page.inner_text("#check-verdict")
    shot(page, "02c-authenticity-check")
    expected = httpx.post(
        f"{server}/v1/products/fmnist-test-1/authenticity",
        files={"image": ("claim.jpg", photo.read_bytes(), "image/jpeg")},
    ).json()
    page.fill("#check-input", "fmnist-test-1")  # a product the photo does not show
    page.press("#check-input", "Enter")
    page.wait_for_selector(f"#check-verdict[data-verdict='{expected['verdict']}']")
    assert expected["verdict"] in {"lookalike", "different"}
    assert page.inner_text("#check-verdict").startswith(("Probably not this one", "No:"))
    page.fill("#check-input", "sku-404")
    page.press("#check-input", "Enter")
    page.wait_for_selector("#check-verdict[data-verdict='error']:has-text('No such product')")
    assert "product 'sku-404' not found" in page.inner_text("#check-verdict")
    page.set_input_files("#file-input", str(photo))  # a new photo: the old claim and verdict go
    page.wait_for_selector(".card")
    assert page.input_value("#check-input") == "" and page.is_hidden("#check-verdict")
    page.locator(".card").first.click()  # a product search has no photo: no check
    page.wait_for_selector("#results-title:has-text('Products like')")
    assert page.is_hidden("#check-form")


def test_a_shared_likes_link_drops_products_the_catalog_no_longer_has(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/?" + urlencode([("liked", "fmnist-test-5"), ("liked", "gone-123")]))
    page.wait_for_selector("#results-title:has-text('Recommended from 1 liked product')")
    page.wait_for_selector(".card")
    status = page.inner_text("#liked-status")
    assert "1 liked product is no longer in the catalog" in status and page.is_visible("#liked-status")
    assert page.inner_text("#liked-count") == "\u2665 1 liked"  # the link's likes became the tab's
    page.wait_for_selector("#liked-strip .liked-thumb img")  # its picture fetched
    assert parse_qs(urlparse(page.url).query)["liked"] == ["fmnist-test-5"]
    expected = httpx.post(f"{server}/v1/recommendations", json={"liked": ["fmnist-test-5"], "k": 12}).json()
    assert card_ids(page) == [h["product_id"] for h in expected["results"]]
    page.click("#liked-strip .liked-thumb")  # a liked product's picture shows the products like it
    page.wait_for_selector("#results-title:has-text('Products like')")
    assert parse_qs(urlparse(page.url).query)["product"] == ["fmnist-test-5"]
    context.close()
    assert errors == []


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


def test_a_long_file_name_keeps_the_phone_layout_one_screen_wide(browser, server, tmp_path, fmnist_test):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server + "/")
    photo = tmp_path / ("IMG_20240612_183245_HDR_portrait_mode_" + "x" * 60 + ".jpg")
    photo.write_bytes(photo_bytes(fmnist_test[0][31], "JPEG", size=200))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    shot(page, "06b-phone-long-file-name")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing off screen
    caption = page.locator("#query-caption")
    assert caption.evaluate("c => c.scrollWidth > c.clientWidth")  # cut short with an ellipsis instead
    context.close()


def test_a_running_search_dims_the_previous_results_and_says_so(page, server, tmp_path, fmnist_test):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    page.route("**/v1/search", lambda route: (time.sleep(1.5), route.continue_()))  # a slow search
    other = tmp_path / "q.png"
    other.write_bytes(photo_bytes(fmnist_test[0][18]))
    page.set_input_files("#file-input", str(other))
    page.wait_for_selector("#results-panel[aria-busy='true']")
    assert page.inner_text("#results-sub") == "Searching\u2026"
    assert float(page.locator("#results").evaluate("g => getComputedStyle(g).opacity")) < 0.5
    page.wait_for_selector("#results-panel[aria-busy='false']")
    assert card_ids(page)[0] == "fmnist-test-18"


def test_a_server_that_does_not_answer_clears_the_old_results(page, tmp_path, fmnist_test):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    page.route("**/v1/search", lambda route: route.abort())
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#error:not([hidden])")
    assert "We could not reach the server" in page.inner_text("#error")
    assert "try again" in page.inner_text("#error") and card_ids(page) == []


def test_more_like_this_from_the_keyboard_keeps_focus_and_disables_the_photo_check(
    page, tmp_path, fmnist_test
):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    assert not page.is_disabled("#rerank-check")
    page.locator(".card").first.focus()
    page.keyboard.press("Enter")  # more like this, from the keyboard
    page.wait_for_selector("#results-title:has-text('Products like')")
    page.wait_for_selector("#results-panel[aria-busy='false']")
    assert page.is_disabled("#rerank-check")  # a product has no photo to check
    assert page.evaluate("document.activeElement.id") == "results-title"  # not lost to the body
    page.set_input_files("#file-input", str(photo))  # a photo again: the check is back
    page.wait_for_selector("#results-title:has-text('Top matches')")
    assert not page.is_disabled("#rerank-check")


def test_back_and_forward_walk_the_searches_and_the_address_names_the_product(
    page, server, tmp_path, fmnist_test
):
    photo = tmp_path / "p.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][17]))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    by_photo = card_ids(page)
    assert urlparse(page.url).query == ""  # a photo from the device has no address
    clicked = by_photo[2]
    page.locator(".card").nth(2).click()
    page.wait_for_selector(f"#results[data-query='{clicked}']")
    assert parse_qs(urlparse(page.url).query) == {"product": [clicked]}
    similar = card_ids(page)
    page.go_back()  # the photo's results again, from the file this tab kept
    until(page, lambda: card_ids(page) == by_photo, card_ids(page))
    assert page.inner_text("#results-title") == "Top matches" and "p.png" in page.inner_text("#query-caption")
    page.go_forward()
    page.wait_for_selector(f"#results[data-query='{clicked}']")
    until(page, lambda: card_ids(page) == similar, card_ids(page))
    page.select_option("#k-select", "24")  # an option changes the address, not the history
    until(page, lambda: len(card_ids(page)) == 24, card_ids(page))
    assert parse_qs(urlparse(page.url).query) == {"product": [clicked], "k": ["24"]}
    more = card_ids(page)
    page.reload()
    page.wait_for_selector(f"#results[data-query='{clicked}']")
    until(page, lambda: card_ids(page) == more, card_ids(page))
    assert page.input_value("#k-select") == "24"
    page.go_back()  # the photo cannot come back after a reload: the page as it opens
    until(page, lambda: card_ids(page) == [], card_ids(page))
    assert page.inner_text("#results-title") == "Search the catalog with a photo"
    assert page.is_hidden("#query-preview") and page.is_hidden("#error")


def test_a_shared_address_opens_the_search_it_names(browser, server, fmnist_test):
    from lookalike.datasets.fashion_mnist import CLASSES

    category = CLASSES[fmnist_test[1][5]]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    query = urlencode({"product": "fmnist-test-5", "k": 24, "category": category, "rerank": 0})
    page.goto(f"{server}/?{query}")
    page.wait_for_selector("#results[data-query='fmnist-test-5']")
    expected = httpx.get(
        f"{server}/v1/products/fmnist-test-5/similar", params={"k": 24, "category": category}
    ).json()
    until(page, lambda: card_ids(page) == [h["product_id"] for h in expected["results"]], card_ids(page))
    shot(page, "07-shared-address")
    product = httpx.get(f"{server}/v1/products/fmnist-test-5").json()
    assert page.inner_text("#results-title") == f"Products like {product['title'] or 'fmnist-test-5'}"
    assert page.locator("#query-image").evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.input_value("#k-select") == "24" and page.input_value("#category-select") == category
    assert not page.is_checked("#rerank-check")
    page.goto(f"{server}/?product=no-such-product")
    page.wait_for_selector("#error:not([hidden])")
    assert "Not found" in page.inner_text("#error") and "no-such-product" in page.inner_text("#error")
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_a_link_pasted_anywhere_on_the_page_is_searched(page):
    link = "http://127.0.0.1:8000/secret.png"
    page.evaluate(
        """link => {
            const data = new DataTransfer();
            data.setData("text/plain", link);
            document.body.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
        }""",
        link,
    )
    page.wait_for_selector("#error:not([hidden])")  # searched, and refused by the server: loopback
    assert "loopback" in page.inner_text("#error") and page.input_value("#url-input") == link
    assert parse_qs(urlparse(page.url).query) == {"url": [link]}


def test_words_search_the_catalog_and_a_photo_gets_tags_that_search_with_theirs(
    browser, text_server, tmp_path, fmnist_test
):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(text_server + "/")
    page.wait_for_selector("#text-form:not([hidden])")  # the server has a text model
    page.fill("#text-input", "Bag")
    page.click("#text-form button")
    page.wait_for_selector("#results-title:has-text('Products matching')")
    page.wait_for_selector("#results-panel[aria-busy='false']")
    shot(page, "08-text-search")
    expected = httpx.post(f"{text_server}/v1/search", json={"text": "Bag", "k": 12}).json()
    assert card_ids(page) == [h["product_id"] for h in expected["results"]]
    chips = page.eval_on_selector_all(".card .chip", "chips => chips.map(c => c.textContent)")
    assert chips.count("Bag") >= 9, chips
    assert parse_qs(urlparse(page.url).query) == {"q": ["Bag"]}
    assert page.is_disabled("#rerank-check")  # words have no photo to check against
    assert page.inner_text("#query-caption") == "\u201cBag\u201d"

    photo = tmp_path / "boot.png"
    data = photo_bytes(fmnist_test[0][0])
    photo.write_bytes(data)
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#query-tags:not([hidden]) .tag")
    shot(page, "09-photo-tags")
    assert page.input_value("#text-input") == ""  # the box shows the words being searched, or none
    tags = httpx.post(
        f"{text_server}/v1/tags", files={"image": ("boot.png", data, "image/png")}, data={"k": 3}
    )
    expected_tags = [t["tag"] for t in tags.json()["tags"]]
    assert page.eval_on_selector_all(".tag", "ts => ts.map(t => t.textContent)") == expected_tags
    page.locator(".tag").first.click()  # a tag searches with its words
    page.wait_for_selector(f"#results-title:has-text('{expected_tags[0]}')")
    assert parse_qs(urlparse(page.url).query) == {"q": [expected_tags[0]]}
    assert page.is_hidden("#query-tags")
    page.go_back()  # the photo again, with its tags
    page.wait_for_selector("#query-tags:not([hidden]) .tag")
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_without_a_text_model_the_page_has_no_words_box(page, server):
    assert page.is_hidden("#text-form")
    page.goto(f"{server}/?q=ankle+boots")  # an address from a server that had one
    page.wait_for_selector("#error:not([hidden])")
    assert "cannot be searched with words" in page.inner_text("#error")
    assert "LOOKALIKE_TEXT_MODEL" not in page.inner_text("#error")  # no operator talk for shoppers


def test_private_url_is_refused_on_the_page(page):
    page.fill("#url-input", "http://127.0.0.1:8000/secret.png")
    page.click("#url-form button")
    page.wait_for_selector("#error:not([hidden])")
    shot(page, "05-url-refused")
    assert "not allowed" in page.inner_text("#error") and "loopback" in page.inner_text("#error")


def test_protected_catalog_asks_for_the_key_and_then_searches(
    browser, protected_server, tmp_path, fmnist_test
):
    """With LOOKALIKE_PROTECT_READS the page asks for the key, shows a clear error on a wrong one, and
    with the right one sends it on every request (search, neighbours, thumbnails as blobs)."""
    base = protected_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sent: list[tuple[str, str | None, int]] = []  # (path, X-API-Key sent, status) of every API call
    page.on(
        "response",
        lambda r: (
            sent.append((r.url[len(base) :], r.request.headers.get("x-api-key"), r.status))
            if r.url.startswith(base + "/v1/")
            else None
        ),
    )
    page.goto(base + "/")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.inner_text("#catalog-info") == "API key needed"
    assert "needs an API key" in page.inner_text("#error")
    until(page, lambda: sent == [("/v1/stats", None, 401)], sent)

    page.fill("#key-input", "not-the-key")
    page.click("#key-submit")
    page.wait_for_selector("#error:has-text('That API key is not right')")
    shot(page, "08-wrong-api-key")
    assert page.is_visible("#key-input") and "refused" in page.get_attribute("#key-form", "class")
    until(page, lambda: sent[-1] == ("/v1/stats", "not-the-key", 403), sent)
    assert page.evaluate("sessionStorage.getItem('lookalike.apiKey')") is None  # a refused key is dropped

    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#catalog-info:has-text('300 products')")
    assert page.is_hidden("#key-form") and page.is_visible("#key-state") and page.is_hidden("#error")
    assert page.evaluate("sessionStorage.getItem('lookalike.apiKey')") == KEY
    assert page.evaluate("localStorage.length") == 0 and KEY not in page.url
    assert page.locator("#category-select option").count() > 1

    photo = tmp_path / "p.jpg"
    photo.write_bytes(photo_bytes(fmnist_test[0][17], "JPEG", size=240))
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card")
    assert card_ids(page)[0] == "fmnist-test-17"
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card img')]"
        ".every(i => i.src.startsWith('blob:') && i.naturalWidth > 0)"
    )
    shot(page, "09-protected-search")
    clicked = card_ids(page)[1]
    page.locator(".card").nth(1).click()
    page.wait_for_selector(f"#results[data-query='{clicked}']")
    page.wait_for_function("() => document.getElementById('query-image').src.startsWith('blob:')")
    assert clicked not in card_ids(page)

    # two grids of thumbnails, each fetched with the key (the second grid's may still be coming)
    thumbs = lambda: sum(p.startswith("/v1/images/") for p, _, _ in sent)  # noqa: E731
    until(page, lambda: thumbs() >= 24, thumbs())
    after_key = sent[sent.index(("/v1/stats", KEY, 200)) :]
    paths = [p for p, _, _ in after_key]
    assert "/v1/search" in paths and f"/v1/products/{clicked}/similar?k=12" in paths
    assert sum(p.startswith("/v1/images/") for p in paths) >= 24
    assert {(key, status) for _, key, status in after_key} == {(KEY, 200)}

    # the footer's stats link sends the key too: the new tab shows the JSON, not a bare 401
    with context.expect_page() as opened:
        page.click("#stats-link")
    stats = opened.value
    stats.wait_for_load_state()
    until(stats, lambda: '"products": 300' in stats.inner_text("body"), stats.url)
    assert stats.url.startswith("blob:") and sent[-1] == ("/v1/stats", KEY, 200)
    stats.close()

    page.reload()  # the key lasts as long as the tab
    page.wait_for_selector("#catalog-info:has-text('300 products')")
    assert page.is_hidden("#key-form")
    page.click("#key-forget")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.evaluate("sessionStorage.length") == 0
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


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
