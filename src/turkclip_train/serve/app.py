"""The web app behind `turkclip serve`: a JSON API over one `PhotoSearch`, thumbnails and a static page.

    GET  /                          the page (static/index.html; /favicon.svg its icon)
    GET  /api/info                  what is indexed (names, never paths) and the index's language
    GET  /api/search?q=&k=&lang=    text → photos: [{"path", "score"}], best first
    GET  /api/similar?path=&k=      photos like an indexed one
    POST /api/search-photo?k=       (multipart "photo") photos like an uploaded one
    POST /api/classify              (multipart "photo", "captions": one per line, "lang")
                                    → [{"label", "prob"}], most likely first
    GET  /thumb/{path}              a small JPEG of an indexed photo (originals are never sent)

`lang` (tr or en) decides how a text is case-folded: tr folds İ/I the Turkish way, en leaves English
as CLIP reads it; the default is the index's road (`turkclip.search.language`).

Every request is untrusted, even from this machine: a web page open in the user's browser can send them.
- Only requests addressed to `allowed_hosts` are answered: a DNS-rebinding page reaches 127.0.0.1 under
  its own host name.
- A request body is counted as it arrives (chunked or not) and refused with 413 once it passes the
  upload limit; nothing beyond the limit is read or spooled.
- Photos are looked up in the index and resolved inside `photos`, the folder the user passed (never a
  folder written in the index file, which anyone could have crafted); `..`, absolute paths and symlinks
  that lead out are 404, and only re-encoded thumbnails leave the server.
- Answers name the folder and the models, never a path on this machine.
- Decoding (uploads, thumbnails) runs outside the model lock on its own `DECODE_THREADS` threads, and
  `turkclip.data.images` bounds what one decode may cost, so another client's upload does not hold a
  search up; the lock covers one bounded forward pass (a query, a photo, or at most MAX_CAPTIONS captions).
User mistakes are 4xx answers with {"detail": "<one line>"}; the server keeps serving.
"""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from turkclip.errors import TurkclipError
from turkclip.models.text import TextEncoder
from turkclip.search.language import index_language
from turkclip.search.photo_files import inside
from turkclip.search.photo_search import PhotoSearch
from turkclip.search.queries import photo_pixels
from turkclip.search.texts import check_query, parse_captions

from .thumbnails import Thumbnails

STATIC = Path(__file__).parent / "static"
MAX_K = 200
MAX_CAPTIONS = 64  # per request: one forward pass under the model lock stays well under a second
FORM_BYTES = 64 * 1024  # what the body limit allows around the photo: captions, multipart boundaries
DECODE_THREADS = 2
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
Lang = Literal["tr", "en"]
Count = Annotated[int, Query(ge=1, le=MAX_K)]  # how many photos an answer lists


def create_app(engine: PhotoSearch, photos: str | Path, max_upload_bytes: int = 10 * 1024 * 1024,
               allowed_hosts: list[str] | tuple[str, ...] = LOCAL_HOSTS,
               thumbnails: Thumbnails | None = None) -> FastAPI:
    """photos: the folder the index's paths are relative to, as the user named it."""
    app = FastAPI(title="turkclip photo search", docs_url=None, redoc_url=None, openapi_url=None,
                  max_body_size=max_upload_bytes + FORM_BYTES)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False)
    index, photos = engine.index, Path(photos).resolve()
    default_lang = index_language(index)
    cased = not isinstance(engine.clip.text, TextEncoder)  # a swapped text tower reads case: Kedi ≠ kedi
    private = _private_paths([photos, index.folder, index.root, index.model, index.adapter, index.text_model,
                              index.tokenizer])
    decoding = anyio.CapacityLimiter(DECODE_THREADS)
    thumbs = thumbnails or Thumbnails()

    @app.exception_handler(TurkclipError)
    async def user_error(request: Request, exc: TurkclipError):
        return JSONResponse({"detail": _public(str(exc), private)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        detail = (f"the upload is larger than {max_upload_bytes / 1024 / 1024:.1f} MB" if exc.status_code == 413
                  else exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if part not in ("query", "body", "path"))
        return JSONResponse({"detail": f"{where}: {error['msg']}"}, status_code=422)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.svg")
    def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/api/info")
    def info():
        return {"photos": len(index.paths), "folder": photos.name, "model": _name(index.model),
                "adapter": _name(index.adapter), "text_model": _name(index.text_model), "search": engine.searcher.kind,
                "lang": default_lang, "max_upload_bytes": max_upload_bytes, "max_captions": MAX_CAPTIONS}

    @app.get("/api/search")
    def search(q: str = "", k: Count = 24, lang: Lang | None = None):
        return [h.as_dict() for h in engine.text(check_query(q), k, lang or default_lang)]

    @app.get("/api/similar")
    def similar(path: str, k: Count = 24):
        if index.row(path) is None:
            return JSONResponse({"detail": "that photo is not in the index"}, status_code=404)
        return [h.as_dict() for h in engine.similar(path, k)]

    async def decode(upload: UploadFile):
        """The uploaded photo's pixels, decoded on the decoding threads (never under the model lock)."""
        data = await upload.read()  # at most the body limit, which leaves FORM_BYTES for the rest of the form
        if len(data) > max_upload_bytes:
            raise HTTPException(413)
        if not data:
            raise TurkclipError("the uploaded file is empty: choose a photo")
        buffer = io.BytesIO(data)
        buffer.name = upload.filename or "the upload"
        return await anyio.to_thread.run_sync(photo_pixels, engine.clip, buffer, limiter=decoding)

    @app.post("/api/search-photo")
    async def search_photo(photo: Annotated[UploadFile, File()], k: Count = 24):
        hits = await run_in_threadpool(engine.like_pixels, await decode(photo), k)
        return [h.as_dict() for h in hits]

    @app.post("/api/classify")
    async def classify_photo(photo: Annotated[UploadFile, File()], captions: Annotated[str, Form()] = "",
                             lang: Annotated[Lang | None, Form()] = None):
        lang = lang or default_lang
        texts = parse_captions(captions, lang, cased)
        if len(texts) > MAX_CAPTIONS:
            raise TurkclipError(f"at most {MAX_CAPTIONS} captions at a time, not {len(texts)}")
        ranked = await run_in_threadpool(engine.rank_captions, await decode(photo), texts, lang)
        return [{"label": caption, "prob": round(p, 6)} for caption, p in ranked]

    @app.get("/thumb/{path:path}")
    async def thumbnail(path: str, request: Request):
        file = inside(photos, path) if index.row(path) is not None else None
        stamp = thumbs.stamp(file) if file is not None else None
        if stamp is None:
            return JSONResponse({"detail": "no such photo in the index"}, status_code=404)
        headers = {"ETag": stamp, "Cache-Control": "no-cache"}  # the browser keeps it, and asks whether it changed
        if request.headers.get("if-none-match") == stamp:
            return Response(status_code=304, headers=headers)
        data = thumbs.cached(file, stamp) or await anyio.to_thread.run_sync(thumbs.make, file, stamp,
                                                                              limiter=decoding)
        if data is None:
            return JSONResponse({"detail": f"{path} is not a readable photo any more"}, status_code=404)
        return Response(data, media_type="image/jpeg", headers=headers)

    return app


def allowed_hosts(bind: str, extra: list[str] | None = None) -> list[str]:
    """The Host names a server listening on `bind` answers to: localhost, its own address (and the machine's
    name when it listens on every interface), and `extra` (`--allow-host`)."""
    hosts = [*LOCAL_HOSTS, f"[{bind}]" if ":" in bind else bind]
    if bind in ("0.0.0.0", "::"):
        hosts.append(socket.gethostname())
    return list(dict.fromkeys(h.lower() for h in [*hosts, *(extra or [])]))


def _name(model: str | None) -> str | None:
    """A model as an answer shows it: a local folder by its name, a hub id as is."""
    return Path(model).name if model and os.path.isabs(model) else model


def _private_paths(paths: list) -> list[tuple[str, str]]:
    """(path, what answers say instead) for the server's own folders and the home folder, longest first."""
    found = {}
    for path in filter(None, paths):
        for variant in (os.fspath(path), os.path.realpath(path)):
            if os.path.isabs(variant) and len(variant) > 1:
                found[variant] = Path(variant).name
    home = str(Path.home())
    if len(home) > 1:
        found.setdefault(home, "~")
    return sorted(found.items(), key=lambda pair: -len(pair[0]))


def _public(message: str, private: list[tuple[str, str]]) -> str:
    """`message` with the server's known folders, and then any other absolute path, shown by their last names."""
    for path, name in private:
        message = message.replace(path, name)
    return _ABSOLUTE.sub(r"\1", message)


_ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[^\s/'\"()]+/)*([^\s/'\"()]+)")  # /a/b/c → c (not 1/2, not a/b)
