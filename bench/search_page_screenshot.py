"""Screenshot of the search page on the real Flickr8k photos → docs/search_page.png.

Indexes ../shared/data/flickr8k/Images with a tiny random-init model (so the ranking and the
scores are meaningless: there are no pretrained weights here; the picture shows the page),
serves it on a free localhost port, and drives Debian's chromium with Playwright: a Turkish
search, then a photo upload with candidate captions. No browser is downloaded.

    OMP_NUM_THREADS=1 python bench/search_page_screenshot.py [--output docs/search_page.png]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=str(ROOT / "docs" / "search_page.png"))
    p.add_argument("--photos", default=str(SHARED / "data" / "flickr8k" / "Images"))
    p.add_argument("--query", default="sahilde koşan siyah bir köpek")
    args = p.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from turkclip.models.architectures import init_model
    from turkclip.search.photo_index import build_index, open_index
    from turkclip.search.photo_search import open_search
    from turkclip_train.serve.app import create_app

    work = Path(tempfile.mkdtemp(prefix="search-page-"))
    init_model("tiny", SHARED / "models" / "clip-tokenizer", work / "model")
    build_index(args.photos, work / "index", str(work / "model"), precision="fp32")
    engine = open_search(open_index(work / "index"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    upload = Path(args.photos) / engine.index.paths[0]
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('info').textContent.includes('photos')")
        page.fill("#q", args.query)
        page.press("#q", "Enter")
        page.wait_for_selector("#results img")
        page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
        page.set_input_files("#photo", str(upload))
        page.fill("#captions", "çimlerde koşan bir köpek\nkarda oynayan iki çocuk\nsahilde yürüyen bir adam")
        page.click("#classify-form button[type=submit]")
        page.wait_for_selector("#probs .prob")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.output} ({len(engine.index.paths)} photos indexed, tiny random model: scores are meaningless)")


if __name__ == "__main__":
    main()
