"""`turkclip serve`: the JSON API (FastAPI TestClient), file-serving safety, bad uploads, 50 concurrent searches."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extras are not installed (pip install 'turkclip[app]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'turkclip[test]')")

from fastapi.testclient import TestClient  # noqa: E402

from turkclip.search.photo_index import build_index, open_index  # noqa: E402
from turkclip.search.photo_search import open_search  # noqa: E402
from turkclip_train.serve.app import create_app  # noqa: E402

LIMIT = 200_000


def _png(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    photos = root / "photos"
    (photos / "alt klasör").mkdir(parents=True)
    for i in range(6):
        Image.open(io.BytesIO(_png(i))).save(photos / f"{i}.png")
    Image.open(io.BytesIO(_png(9))).save(photos / "alt klasör" / "şehir.png")
    (root / "secret.txt").write_text("not yours")
    build_index(photos, root / "idx", str(tiny_model), progress=False)
    engine = open_search(open_index(root / "idx"))
    return engine, root


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served[0], max_upload_bytes=LIMIT))


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and '<input id="q" type="text"' in page.text
    info = client.get("/api/info").json()
    assert info["photos"] == 7 and info["search"] == "exact"


def test_search_and_similar(client):
    hits = client.get("/api/search", params={"q": "kırmızı bir araba", "k": 4}).json()
    assert len(hits) == 4 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    like = client.get("/api/similar", params={"path": "alt klasör/şehir.png"}).json()
    assert len(like) == 6 and "alt klasör/şehir.png" not in [h["path"] for h in like]
    photo = client.get("/photo/alt%20klas%C3%B6r/%C5%9Fehir.png")
    assert photo.status_code == 200 and photo.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("url", ["/photo/..%2Fsecret.txt", "/photo/%2E%2E/secret.txt", "/photo/%2Fetc%2Fpasswd",
                                 "/photo//etc/passwd", "/photo/missing.png", "/photo/"])
def test_only_indexed_files_are_served(client, url):
    response = client.get(url)
    assert response.status_code in (400, 404) and "not yours" not in response.text


def test_symlink_swapped_in_after_indexing_is_not_followed(served, client):
    engine, root = served
    target = engine.index.root / "5.png"
    saved = target.read_bytes()
    target.unlink()
    target.symlink_to(root / "secret.txt")
    try:
        assert client.get("/photo/5.png").status_code == 404
    finally:
        target.unlink()
        target.write_bytes(saved)


def test_bad_requests_get_one_clear_message_and_the_server_keeps_serving(client):
    cases = [
        (client.get("/api/search", params={"q": "  "}), 400, "empty"),
        (client.get("/api/similar", params={"path": "../secret.txt"}), 404, "not in the index"),
        (client.post("/api/classify", files={"photo": ("a.png", b"plain text", "image/png")}, data={"captions": "kedi"}),
         400, "cannot read"),
        (client.post("/api/classify", files={"photo": ("a.png", b"", "image/png")}, data={"captions": "kedi"}), 400, "empty"),
        (client.post("/api/classify", files={"photo": ("a.png", _png(), "image/png")}, data={"captions": ""}), 400, "label"),
        (client.post("/api/classify", files={"photo": ("big.png", b"\0" * (LIMIT + 1), "image/png")},
                     data={"captions": "kedi"}), 413, "larger than"),
        (client.post("/api/search-photo", files={"photo": ("x.gif", b"GIF89a broken", "image/gif")}), 400, "cannot read"),
    ]
    for response, status, words in cases:
        assert response.status_code == status and words in response.json()["detail"], response.text
    assert client.get("/api/search", params={"q": "kedi"}).status_code == 200


def test_upload_scores_captions(client):
    ranked = client.post("/api/classify", files={"photo": ("a.png", _png(3), "image/png")},
                         data={"captions": "çimlerde koşan bir köpek\nkarda oynayan iki çocuk"}).json()
    assert {r["label"] for r in ranked} == {"çimlerde koşan bir köpek", "karda oynayan iki çocuk"}
    assert sum(r["prob"] for r in ranked) == pytest.approx(1, abs=1e-4)
    like = client.post("/api/search-photo", files={"photo": ("a.png", _png(3), "image/png")}).json()
    assert like[0]["path"] == "3.png" and like[0]["score"] == pytest.approx(1, abs=1e-2)


def test_fifty_concurrent_searches_on_a_real_server(served):
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(served[0]), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        queries = [f"sahilde yürüyen {i} kişi" for i in range(50)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http, ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda q: http.get("/api/search", params={"q": q, "k": 5}), queries))
        assert [r.status_code for r in responses] == [200] * 50
        assert all(len(r.json()) == 5 for r in responses)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_serve_refuses_a_wrong_model_or_a_folder_that_is_no_index(served, tmp_path, capsys):
    from turkclip_train.cli import main

    engine, root = served
    assert main(["serve", str(root / "idx"), "--model", "openai/clip-vit-base-patch32"]) == 1
    assert "was built with model" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 1
    assert "not a photo index" in capsys.readouterr().err
