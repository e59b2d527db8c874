"""`turkclip serve`: the JSON API (FastAPI TestClient) and a real uvicorn, under hostile clients: file-serving
safety (traversal, a crafted index), bad uploads, oversize and chunked bodies, foreign Host headers, blank
queries, no server paths in answers, uploads that do not hold searches up, 50 concurrent searches."""

from __future__ import annotations

import dataclasses
import io
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extras are not installed (pip install 'turkclip[app]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'turkclip[test]')")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import blank_png, serve_in_thread  # noqa: E402
from turkclip.search.photo_index import build_index, open_index  # noqa: E402
from turkclip.search.photo_search import PhotoSearch, open_search  # noqa: E402
from turkclip_train.serve import app as app_module  # noqa: E402
from turkclip_train.serve.app import allowed_hosts, create_app  # noqa: E402
from turkclip_train.serve.thumbnails import BOX  # noqa: E402

LIMIT = 200_000
HOSTS = ["testserver"]  # the Host TestClient sends


def _png(seed: int = 0, size: tuple[int, int] = (30, 30)) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    photos = root / "photos"
    (photos / "alt klasör").mkdir(parents=True)
    for i in range(6):
        (photos / f"{i}.png").write_bytes(_png(i))
    (photos / "alt klasör" / "şehir.png").write_bytes(_png(9, (1200, 800)))  # larger than a thumbnail
    (photos / "thin.png").write_bytes(blank_png(1, 300_000))  # a hostile photo in the folder: skipped by index
    (root / "secret.txt").write_text("not yours")
    report = build_index(photos, root / "idx", str(tiny_model), progress=False)
    assert [b[0] for b in report.bad] == ["thin.png"] and report.bad[0][3].startswith("refused")
    engine = open_search(open_index(root / "idx"))
    return engine, root


@pytest.fixture(scope="module")
def client(served):
    engine, root = served
    return TestClient(create_app(engine, root / "photos", max_upload_bytes=LIMIT, allowed_hosts=HOSTS))


def test_page_favicon_and_info(client, served):
    page = client.get("/")
    assert page.status_code == 200 and '<input id="q" type="text"' in page.text and "/favicon.svg" in page.text
    icon = client.get("/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg") and b"<svg" in icon.content
    info = client.get("/api/info").json()
    assert info["photos"] == 7 and info["search"] == "exact" and info["folder"] == "photos"
    assert info["model"] == "tiny" and info["lang"] == "en"  # a base CLIP without a road reads English


def test_search_and_similar(client):
    hits = client.get("/api/search", params={"q": "kırmızı bir araba", "k": 4}).json()
    assert len(hits) == 4 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    like = client.get("/api/similar", params={"path": "alt klasör/şehir.png"}).json()
    assert len(like) == 6 and "alt klasör/şehir.png" not in [h["path"] for h in like]


def test_thumbnails_are_small_jpegs_cached_and_revalidated(served, monkeypatch):
    engine, root = served
    rendered = []
    real = app_module.Thumbnails.make
    monkeypatch.setattr(app_module.Thumbnails, "make", lambda self, *a: rendered.append(a) or real(self, *a))
    client = TestClient(create_app(engine, root / "photos", allowed_hosts=HOSTS))
    first = client.get("/thumb/alt%20klas%C3%B6r/%C5%9Fehir.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(first.content)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == BOX and thumb.size == (BOX, BOX * 800 // 1200)
    assert len(first.content) < len((root / "photos" / "alt klasör" / "şehir.png").read_bytes()) / 10
    again = client.get("/thumb/alt%20klas%C3%B6r/%C5%9Fehir.png")
    assert again.content == first.content and len(rendered) == 1  # from the cache
    unchanged = client.get("/thumb/alt%20klas%C3%B6r/%C5%9Fehir.png", headers={"If-None-Match": first.headers["etag"]})
    assert unchanged.status_code == 304 and not unchanged.content and len(rendered) == 1


def test_a_photo_that_is_no_photo_any_more_is_404(served, client):
    engine, root = served
    target = root / "photos" / "4.png"
    saved = target.read_bytes()
    target.write_bytes(b"garbage now")
    try:
        response = client.get("/thumb/4.png")
        assert response.status_code == 404 and "not a readable photo" in response.json()["detail"]
    finally:
        target.write_bytes(saved)


@pytest.mark.parametrize("url", ["/thumb/..%2Fsecret.txt", "/thumb/%2E%2E/secret.txt", "/thumb/%2Fetc%2Fpasswd",
                                 "/thumb//etc/passwd", "/thumb/missing.png", "/thumb/", "/thumb/thin.png",
                                 "/photo/0.png"])
def test_only_thumbnails_of_indexed_photos_are_served(client, url):
    response = client.get(url)
    assert response.status_code in (400, 404) and "not yours" not in response.text


def test_symlink_swapped_in_after_indexing_is_not_followed(served, client):
    engine, root = served
    target = root / "photos" / "5.png"
    saved = target.read_bytes()
    target.unlink()
    target.symlink_to(root / "secret.txt")
    try:
        assert client.get("/thumb/5.png").status_code == 404
    finally:
        target.unlink()
        target.write_bytes(saved)


def test_a_crafted_index_cannot_reach_outside_the_folder_the_user_named(served, tmp_path):
    """An index file can claim any root and any paths: photos are looked up only in the folder the user passed."""
    engine, root = served
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.png").write_bytes(_png(42))
    paths = ["private.png", "../outside/private.png", str(outside / "private.png"), "0.png"]
    crafted = dataclasses.replace(engine.index, root=outside, paths=paths, embeddings=engine.index.embeddings[:4])
    client = TestClient(create_app(PhotoSearch(crafted, engine.clip), root / "photos", allowed_hosts=HOSTS))
    for url in ["/thumb/private.png", "/thumb/..%2Foutside%2Fprivate.png", "/thumb/" + str(outside / "private.png")]:
        assert client.get(url).status_code == 404, url
    served_zero = client.get("/thumb/0.png")
    assert served_zero.status_code == 200
    with Image.open(io.BytesIO(served_zero.content)) as thumb, Image.open(root / "photos" / "0.png") as original:
        assert thumb.size == original.size  # the user's 0.png (smaller than a thumbnail: kept at its size)


def test_a_foreign_host_header_is_refused(served, client):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example."""
    for host in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"]:
        response = client.get("/api/info", headers={"Host": host})
        assert response.status_code == 400 and "photos" not in response.text, host
    assert client.get("/api/info", headers={"Host": "testserver:8000"}).status_code == 200
    local = TestClient(create_app(served[0], served[1] / "photos", allowed_hosts=allowed_hosts("127.0.0.1")))
    for host in ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"]:
        assert local.get("/api/info", headers={"Host": host}).status_code == 200, host
    assert local.get("/api/info", headers={"Host": "evil.example"}).status_code == 400


def test_allowed_hosts_defaults_and_additions():
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("::1", ["Photos.Local"]) == ["localhost", "127.0.0.1", "[::1]", "photos.local"]
    everywhere = allowed_hosts("0.0.0.0", ["192.168.1.5"])
    assert socket.gethostname().lower() in everywhere and "192.168.1.5" in everywhere


def test_bad_requests_get_one_line_and_the_server_keeps_serving(client):
    cases = [
        (client.get("/api/search", params={"q": "  "}), 400, "empty"),
        (client.get("/api/search", params={"q": "x" * 1001}), 400, "too long"),
        (client.get("/api/search", params={"q": "kedi", "k": 0}), 422, "k: Input should be greater than or equal to 1"),
        (client.get("/api/search", params={"q": "kedi", "lang": "de"}), 422, "lang: Input should be 'tr' or 'en'"),
        (client.get("/api/similar", params={"path": "../secret.txt"}), 404, "not in the index"),
        (client.post("/api/classify", files={"photo": ("a.png", b"plain text", "image/png")}, data={"captions": "kedi"}),
         400, "a.png: unreadable (not a JPEG, PNG, WebP, BMP or GIF image)"),
        (client.post("/api/classify", files={"photo": ("a.png", b"", "image/png")}, data={"captions": "kedi"}), 400,
         "empty"),
        (client.post("/api/classify", files={"photo": ("a.png", _png(), "image/png")}, data={"captions": " \n "}), 400,
         "give at least one caption (one per line)"),
        (client.post("/api/classify", files={"photo": ("a.png", _png(), "image/png")},
                     data={"captions": "\n".join(f"bir köpek {i}" for i in range(65))}), 400, "at most 64 captions"),
        (client.post("/api/classify", files={"photo": ("big.png", b"\0" * (LIMIT + 1), "image/png")},
                     data={"captions": "kedi"}), 413, "larger than 0.2 MB"),
        (client.post("/api/search-photo", files={"photo": ("x.gif", b"GIF89a broken", "image/gif")}), 400, "x.gif:"),
        (client.get("/nowhere"), 404, "Not Found"),
    ]
    for response, status, words in cases:
        detail = response.json()["detail"]
        assert response.status_code == status and words in detail and "\n" not in detail, response.text
    assert client.get("/api/search", params={"q": "kedi"}).status_code == 200


@pytest.mark.parametrize("query", ["\u200b\u200b\u200b", "\x00", " \u2003\u3000 ", "\u200d\ufeff\n\t"])
def test_a_query_of_only_invisible_characters_is_empty_not_a_ranking(client, query):
    response = client.get("/api/search", params={"q": query})
    assert response.status_code == 400 and response.json()["detail"].startswith("the query is empty")


@pytest.mark.parametrize("size", [(1, 300_000), (300_000, 2), (8000, 8000)])
def test_a_tiny_upload_with_huge_dimensions_is_refused_as_one_line(client, size):
    bomb = blank_png(*size)
    assert len(bomb) < 20_000
    for url, data in [("/api/search-photo", None), ("/api/classify", {"captions": "kedi"})]:
        response = client.post(url, files={"photo": ("bomb.png", bomb, "image/png")}, data=data)
        assert response.status_code == 400 and response.json()["detail"].startswith(f"bomb.png: refused ({size[0]}×")
    assert client.get("/api/search", params={"q": "kedi"}).status_code == 200


def test_upload_scores_captions_merging_duplicates_and_keeping_commas(client):
    ranked = client.post("/api/classify", files={"photo": ("a.png", _png(3), "image/png")},
                         data={"captions": "çimlerde koşan bir köpek\nKarda, oynayan iki çocuk\nkarda,  oynayan iki ÇOCUK\n\n"
                                           "\u200b"}).json()
    assert {r["label"] for r in ranked} == {"çimlerde koşan bir köpek", "Karda, oynayan iki çocuk"}
    assert sum(r["prob"] for r in ranked) == pytest.approx(1, abs=1e-4)
    like = client.post("/api/search-photo", files={"photo": ("a.png", _png(3), "image/png")}).json()
    assert like[0]["path"] == "3.png" and like[0]["score"] == pytest.approx(1, abs=1e-2)


def test_the_language_decides_case_folding(client):
    """tr folds I → ı (Turkish), en leaves English as CLIP reads it (CLIP lower-cases it: I → i)."""
    def scores(q, lang):
        return client.get("/api/search", params={"q": q, "k": 7, "lang": lang}).json()

    assert scores("INDIAN FOOD", "en") == scores("indian food", "en")
    assert scores("INDIAN FOOD", "tr") == scores("ındıan food", "tr") != scores("INDIAN FOOD", "en")
    assert scores("INDIAN FOOD", "en") == client.get("/api/search", params={"q": "INDIAN FOOD", "k": 7}).json()  # default


def test_no_answer_shows_a_path_of_this_machine(served, client, monkeypatch, tmp_path):
    from turkclip.errors import TurkclipError

    engine, root = served
    private = [str(root), str(root.resolve()), str(engine.index.folder), engine.index.model, str(tmp_path)]
    answers = [client.get("/api/info"), client.get("/"), client.get("/api/search", params={"q": "kedi"}),
               client.get("/api/similar", params={"path": "0.png"}), client.get("/thumb/nope.png"),
               client.post("/api/classify", files={"photo": ("a.png", b"x", "image/png")}, data={"captions": "a"})]

    def failing(*args):
        raise TurkclipError(f"cannot open {engine.index.model}/model.safetensors under {root}")

    monkeypatch.setattr(engine, "text", failing)
    scrubbed = client.get("/api/search", params={"q": "kedi"})
    assert scrubbed.json()["detail"] == "cannot open tiny/model.safetensors under " + root.name
    for answer in [*answers, scrubbed]:
        assert not any(path in answer.text for path in private), answer.text


def _post_chunked(url: str, total: int, piece: int = 256 * 1024) -> tuple[int, int, bytes]:
    """POST a multipart body of `total` bytes with Transfer-Encoding: chunked (no Content-Length), piece by piece,
    until the server answers: (bytes sent, its status, its body)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /api/search-photo HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode())
        chunk = head + b"\0" * (piece - len(head))
        while sent < total and not select.select([s], [], [], 0.05)[0]:  # until there is an answer to read
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
            chunk = b"\0" * piece
        answer = http.client.HTTPResponse(s)
        answer.begin()
        return sent, answer.status, answer.read()


def test_a_chunked_upload_is_cut_off_at_the_limit_not_spooled(served):
    """No Content-Length to check up front: the body is counted as it arrives and refused once past the limit."""
    engine, root = served
    url, server = serve_in_thread(create_app(engine, root / "photos", max_upload_bytes=LIMIT,
                                             allowed_hosts=allowed_hosts("127.0.0.1")))
    try:
        sent, status, body = _post_chunked(url, total=500 * 1024 * 1024)
        assert status == 413 and b"the upload is larger than 0.2 MB" in body
        assert sent < 4 * 1024 * 1024  # refused after ~0.26 MB (the limit plus the form's allowance), not 500 MB
    finally:
        server.should_exit = True


def test_a_slow_upload_decode_does_not_hold_a_search_up(served, monkeypatch):
    """The upload's decode is held until a search has been answered: if decoding held the model lock, the search
    could not finish and the decode would never be released (the test would fail on its timeouts)."""
    import httpx

    from turkclip.search import queries

    engine, root = served
    decoding, searched = threading.Event(), threading.Event()
    real = queries.photo_pixels

    def slow_decode(clip, photo):
        decoding.set()
        assert searched.wait(30), "no search was answered while an upload was decoding"
        return real(clip, photo)

    monkeypatch.setattr(app_module, "photo_pixels", slow_decode)
    url, server = serve_in_thread(create_app(engine, root / "photos", allowed_hosts=allowed_hosts("127.0.0.1")))
    try:
        with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(2) as pool:
            for endpoint, data in [("/api/search-photo", None), ("/api/classify", {"captions": "bir kedi"})]:
                decoding.clear(), searched.clear()
                upload = pool.submit(http.post, endpoint, files={"photo": ("a.png", _png(2), "image/png")}, data=data)
                assert decoding.wait(30)
                assert http.get("/api/search", params={"q": "kedi", "k": 2}).status_code == 200
                searched.set()
                assert upload.result().status_code == 200
    finally:
        server.should_exit = True


def test_fifty_concurrent_searches_on_a_real_server(served):
    import httpx

    engine, root = served
    url, server = serve_in_thread(create_app(engine, root / "photos", allowed_hosts=allowed_hosts("127.0.0.1")))
    try:
        queries = [f"sahilde yürüyen {i} kişi" for i in range(50)]
        with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda q: http.get("/api/search", params={"q": q, "k": 5}), queries))
        assert [r.status_code for r in responses] == [200] * 50
        assert all(len(r.json()) == 5 for r in responses)
    finally:
        server.should_exit = True


def test_serve_command_needs_the_photo_folder_and_refuses_a_wrong_one(served, tmp_path, capsys):
    from turkclip_train.cli import main

    engine, root = served
    assert main(["serve", str(root / "idx")]) == 1
    err = capsys.readouterr().err
    assert "give --photos FOLDER" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", str(root / "idx"), "--photos", str(tmp_path)]) == 1
    assert "none of the index's photos" in capsys.readouterr().err
    assert main(["serve", str(root / "idx"), "--photos", str(root / "photos"), "--model",
                 "openai/clip-vit-base-patch32"]) == 1
    assert "was built with model" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--photos", str(root / "photos")]) == 1
    assert "not a photo index" in capsys.readouterr().err


def test_thumbnails_are_turned_upright(tmp_path):
    """A phone stores a portrait photo as landscape pixels plus an EXIF orientation; the tile must stand upright."""
    from turkclip_train.serve.thumbnails import render

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    Image.new("RGB", (800, 600), "white").save(tmp_path / "portrait.jpg", exif=exif)
    with Image.open(io.BytesIO(render(tmp_path / "portrait.jpg"))) as thumb:
        assert thumb.size == (BOX * 600 // 800, BOX)
