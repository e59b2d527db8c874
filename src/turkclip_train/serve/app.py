"""The web app behind `turkclip serve`: a JSON API over one `PhotoSearch` and a static page.

    GET  /                     the page (static/index.html)
    GET  /api/info             what is indexed, with which model
    GET  /api/search?q=&k=     text → photos: [{"path", "score"}], best first
    GET  /api/similar?path=&k= photos like an indexed one
    POST /api/search-photo     (multipart "photo") photos like an uploaded one
    POST /api/classify         (multipart "photo", "captions": one per line or comma-separated)
                               → [{"label", "prob"}], most likely first
    GET  /photo/{path}         an indexed photo; nothing else is ever served

User mistakes are 4xx answers with {"detail": "<one line>"}; the server keeps serving. Only
files that are in the index and still resolve inside the indexed folder are served (`..`,
absolute paths and symlinks that lead out are 404). Uploads larger than `max_upload_bytes`
are refused with 413 before the model sees them.
"""

from __future__ import annotations

import io
from pathlib import Path

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from turkclip.errors import TurkclipError
from turkclip.search.classify import AS_IS, classify, parse_labels
from turkclip.search.photo_files import inside
from turkclip.search.photo_search import PhotoSearch

STATIC = Path(__file__).parent / "static"
MAX_K = 200


def create_app(engine: PhotoSearch, max_upload_bytes: int = 10 * 1024 * 1024) -> FastAPI:
    app = FastAPI(title="turkclip photo search", docs_url=None, redoc_url=None, openapi_url=None)
    index = engine.index

    @app.exception_handler(TurkclipError)
    async def user_error(request: Request, exc: TurkclipError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:  # + form overhead
            return _too_large(max_upload_bytes)
        return await call_next(request)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info():
        return {"photos": len(index.paths), "folder": index.root.name, "model": index.model,
                "adapter": index.adapter, "search": engine.searcher.kind, "max_upload_bytes": max_upload_bytes}

    @app.get("/api/search")
    def search(q: str = "", k: int = Query(24, ge=1, le=MAX_K)):
        if not q.strip():
            raise TurkclipError("the query is empty: type a few words to search for")
        if len(q) > 1000:
            raise TurkclipError("the query is too long (at most 1000 characters)")
        return [h.as_dict() for h in engine.text(q, k)]

    @app.get("/api/similar")
    def similar(path: str, k: int = Query(24, ge=1, le=MAX_K)):
        if index.row(path) is None:
            return JSONResponse({"detail": f"{path} is not in the index"}, status_code=404)
        return [h.as_dict() for h in engine.similar(path, k)]

    @app.post("/api/search-photo")
    def search_photo(photo: UploadFile = File(...), k: int = Query(24, ge=1, le=MAX_K)):
        data = _read_upload(photo, max_upload_bytes)
        if isinstance(data, JSONResponse):
            return data
        return [h.as_dict() for h in engine.photo(data, k)]

    @app.post("/api/classify")
    def classify_photo(photo: UploadFile = File(...), captions: str = Form("")):
        data = _read_upload(photo, max_upload_bytes)
        if isinstance(data, JSONResponse):
            return data
        labels = parse_labels(captions)
        with engine.model_lock:
            ranked = classify(engine.encoder, [data], labels, AS_IS)[0]
        return [{"label": label, "prob": round(p, 6)} for label, p in ranked]

    @app.get("/photo/{path:path}")
    def photo(path: str):
        file = inside(index.root, path) if index.row(path) is not None else None
        if file is None:
            return JSONResponse({"detail": "no such photo in the index"}, status_code=404)
        return FileResponse(file)

    return app


def _read_upload(upload: UploadFile, limit: int) -> io.BytesIO | JSONResponse:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        return _too_large(limit)
    if not data:
        raise TurkclipError("the uploaded file is empty: choose a photo")
    buffer = io.BytesIO(data)
    buffer.name = upload.filename or "upload"
    return buffer


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the upload is larger than {limit / 1024 / 1024:.1f} MB"}, status_code=413)
