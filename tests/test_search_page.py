"""The search page in a real headless browser (Debian's chromium driven by Playwright), in Turkish and in English.

Loads the page served by a real uvicorn, follows the index's language or switches it, searches, sees the
thumbnails, clicks one for similar photos, scores captions for an uploaded photo, clears stale results on an
empty query, and uploads a hostile file: the error must be on screen next to the upload form (checked in a
screenshot), not above the fold. Skipped with the reason when chromium or the playwright package is missing
(no browser is ever downloaded: the system chromium is launched directly).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import blank_png, serve_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("fastapi", reason="the web extras are not installed (pip install 'turkclip[app]')")

# what the page says, per language (static/index.html's TEXT)
WORDS = {
    "tr": {"search": "Ara", "photos": "8 fotoğraf", "results": "için sonuçlar", "like": "fotoğrafına benzeyenler",
           "empty": "Aramak için birkaç kelime yazın.", "bad upload": "Bu dosya fotoğraf olarak kullanılamıyor"},
    "en": {"search": "Search", "photos": "8 photos", "results": "Results for", "like": "Photos like",
           "empty": "Type a few words to search for.", "bad upload": "This file cannot be used as a photo"},
}
ERROR_RED = (0xB0, 0x00, 0x20)  # .message's colour


@pytest.fixture
def site(tiny_model, tmp_path):
    from turkclip.search.photo_index import build_index, open_index
    from turkclip.search.photo_search import open_search
    from turkclip_train.serve.app import allowed_hosts, create_app

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / f"foto {i}.jpg")
    build_index(photos, tmp_path / "idx", str(tiny_model), progress=False)
    app = create_app(open_search(open_index(tmp_path / "idx")), photos, allowed_hosts=allowed_hosts("127.0.0.1"))
    url, server = serve_in_thread(app)
    yield url, photos
    server.should_exit = True


def open_browser(play):
    return play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def on_screen(page, selector: str) -> Image.Image:
    """The part of a viewport screenshot where `selector` is, after checking it is visible inside the viewport."""
    element = page.locator(selector)
    assert element.is_visible(), selector
    box = element.bounding_box()
    view = page.viewport_size
    assert 0 <= box["y"] and box["y"] + box["height"] <= view["height"], (selector, box, view)  # not below the fold
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")  # the viewport only, as the user sees it
    assert np.asarray(shot).std() > 10, "the screenshot is blank"
    return shot.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))


def has_colour(picture: Image.Image, rgb: tuple[int, int, int], tolerance: int = 40) -> bool:
    pixels = np.asarray(picture, dtype=np.int16)
    return bool((np.abs(pixels - np.array(rgb)).max(-1) < tolerance).any())


@pytest.mark.parametrize("lang, hostile", [("tr", "thin"), ("en", "text")])
def test_the_page_in_a_browser(site, tmp_path, lang, hostile):
    url, photos = site
    words = WORDS[lang]
    with playwright_api.sync_playwright() as play:
        browser = open_browser(play)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto(url)
        page.wait_for_function("document.getElementById('info').textContent.includes('8 ')")
        assert page.locator("#lang").input_value() == "en"  # the index's language (a base CLIP: English)
        if lang != "en":
            page.select_option("#lang", lang)
        assert page.evaluate("document.documentElement.lang") == lang
        assert page.locator("#search-form button").text_content() == words["search"]
        assert words["photos"] in page.locator("#info").text_content()
        assert page.request.get(url + page.get_attribute("link[rel=icon]", "href")).status == 200  # the favicon

        page.fill("#q", "kırmızı bir araba")
        page.press("#q", "Enter")
        page.wait_for_selector("#results img")
        thumbs = page.locator("#results img")
        assert thumbs.count() == 8 and words["results"] in page.locator("#heading").text_content()
        page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
        assert all(src.startswith("/thumb/") for src in thumbs.evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))"))

        first = thumbs.first.get_attribute("data-path")
        thumbs.first.click()
        page.wait_for_function(f"document.getElementById('heading').textContent.includes({first!r})")
        assert words["like"] in page.locator("#heading").text_content()
        similar = page.locator("#results img").evaluate_all("imgs => imgs.map(i => i.dataset.path)")
        assert len(similar) == 7 and first not in similar

        page.set_input_files("#photo", str(photos / "foto 3.jpg"))
        page.fill("#captions", "çimlerde koşan bir köpek\nkarda oynayan iki çocuk\nKarda oynayan iki ÇOCUK")
        page.click("#classify-form button[type=submit]")
        page.wait_for_selector("#probs .prob")
        percents = page.locator("#probs .pct").all_text_contents()
        assert len(percents) == 2 and abs(sum(float(p.split()[0]) for p in percents) - 100) < 0.5  # duplicate merged

        page.fill("#q", "   ")
        page.press("#q", "Enter")  # an empty query: the old results and heading go
        assert page.locator("#search-message").text_content() == words["empty"]
        assert page.locator("#results img").count() == 0 and page.locator("#heading").text_content() == ""

        bad = tmp_path / "upload.png"
        bad.write_bytes(blank_png(1, 300_000) if hostile == "thin" else b"not a photo")
        page.set_input_files("#photo", str(bad))
        page.click("#classify-form button[type=submit]")
        page.wait_for_function(f"document.getElementById('upload-message').textContent.includes({words['bad upload']!r})")
        message = page.locator("#upload-message").text_content()
        assert ("refused (1×300000 pixels" if hostile == "thin" else "unreadable (not a JPEG") in message
        assert page.locator("#search-message").text_content() == ""  # nothing said far from where the user acts
        assert has_colour(on_screen(page, "#upload-message"), ERROR_RED)
        page.screenshot(path=str(tmp_path / f"page-{lang}.png"))
        browser.close()
