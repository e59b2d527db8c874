"""Screenshots of the search page on the real Flickr8k photos, one per language → docs/search_page_{tr,en}.png.

Indexes ../shared/data/flickr8k/Images with a tiny random-init model (so the ranking and the
scores are meaningless: there are no pretrained weights here; the pictures show the page),
serves it on a free localhost port, and drives Debian's chromium with Playwright in each
language: a search, then a photo upload with candidate captions. No browser is downloaded.

    OMP_NUM_THREADS=1 python bench/search_page_screenshot.py [--output-dir docs]
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
EXAMPLES = {  # language: (query, candidate captions)
    "tr": ("sahilde koşan siyah bir köpek", ["çimlerde koşan bir köpek", "karda oynayan iki çocuk", "sahilde yürüyen bir adam"]),
    "en": ("a black dog running on the beach", ["a dog running on the grass", "two children playing in the snow",
                                                 "a man walking on the beach"]),
}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default=str(ROOT / "docs"), help="where search_page_tr.png and _en.png go")
    p.add_argument("--photos", default=str(SHARED / "data" / "flickr8k" / "Images"))
    args = p.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from turkclip.models.architectures import init_model
    from turkclip.search.photo_index import build_index, open_index
    from turkclip.search.photo_search import open_search
    from turkclip_train.serve.app import allowed_hosts, create_app

    work = Path(tempfile.mkdtemp(prefix="search-page-"))
    init_model("tiny", SHARED / "models" / "clip-tokenizer", work / "tiny-random-clip")
    build_index(args.photos, work / "index", str(work / "tiny-random-clip"), precision="fp32")
    engine = open_search(open_index(work / "index"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(engine, args.photos, allowed_hosts=allowed_hosts("127.0.0.1"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    upload = Path(args.photos) / engine.index.paths[0]
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        for lang, (query, captions) in EXAMPLES.items():
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('info').textContent.includes(' · ')")
            page.select_option("#lang", lang)
            page.fill("#q", query)
            page.press("#q", "Enter")
            page.wait_for_selector("#results img")
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
            page.set_input_files("#photo", str(upload))
            page.fill("#captions", "\n".join(captions))
            page.click("#classify-form button[type=submit]")
            page.wait_for_selector("#probs .prob")
            output = Path(args.output_dir) / f"search_page_{lang}.png"
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
            print(f"wrote {output}")
        browser.close()
    server.should_exit = True
    print(f"{len(engine.index.paths)} photos indexed with a tiny random model: the scores are meaningless")

if __name__ == "__main__":
    main()
