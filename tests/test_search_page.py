"""The search page in a real headless browser (Debian's chromium driven by Playwright).

Loads the page served by a real uvicorn, searches, sees thumbnails, clicks one for similar photos,
uploads a photo with captions and reads the probabilities. Skipped with the reason when
chromium or the playwright package is missing (no browser is ever downloaded: the system
chromium is launched directly).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("fastapi", reason="the web extras are not installed (pip install 'turkclip[app]')")


def serve_in_thread(app):
    """Run `app` on a free localhost port in a daemon thread; returns (base url, server)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def open_browser(play):
    return play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@pytest.fixture
def site(tiny_model, tmp_path):
    from turkclip.search.photo_index import build_index, open_index
    from turkclip.search.photo_search import open_search
    from turkclip_train.serve.app import create_app

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / f"foto {i}.jpg")
    build_index(photos, tmp_path / "idx", str(tiny_model), progress=False)
    url, server = serve_in_thread(create_app(open_search(open_index(tmp_path / "idx"))))
    yield url, photos
    server.should_exit = True


def test_search_click_and_upload_in_a_browser(site, tmp_path):
    url, photos = site
    with playwright_api.sync_playwright() as play:
        browser = open_browser(play)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('info').textContent.includes('8 photos')")

        page.fill("#q", "kırmızı bir araba")
        page.press("#q", "Enter")
        page.wait_for_selector("#results img")
        thumbs = page.locator("#results img")
        assert thumbs.count() == 8
        page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("#results .score").count() == 8

        first = thumbs.first.get_attribute("data-path")
        thumbs.first.click()
        page.wait_for_function(f"document.getElementById('heading').textContent.includes({first!r})")
        similar = [page.locator("#results img").nth(i).get_attribute("data-path") for i in range(page.locator("#results img").count())]
        assert len(similar) == 7 and first not in similar

        page.set_input_files("#photo", str(photos / "foto 3.jpg"))
        page.fill("#captions", "çimlerde koşan bir köpek\nkarda oynayan iki çocuk")
        page.click("#classify-form button[type=submit]")
        page.wait_for_selector("#probs .prob")
        percents = page.locator("#probs .pct").all_text_contents()
        assert len(percents) == 2 and abs(sum(float(p.split()[0]) for p in percents) - 100) < 0.5

        page.fill("#q", "   ")
        page.press("#q", "Enter")
        assert "Type a few words" in page.locator("#message").text_content()
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        page.set_input_files("#photo", str(bad))
        page.click("#classify-form button[type=submit]")
        page.wait_for_function("document.getElementById('message').textContent.includes('cannot read')")
        browser.close()
