"""`turkclip index | search | classify | serve`: what each photo subcommand does, given its flags."""

from __future__ import annotations

import json
from pathlib import Path

from turkclip.embedding.embed import resolve_precision
from turkclip.errors import TurkclipError
from turkclip.search.photo_files import printable

from .distributed import default_device, is_main_process, process_group


def index(args) -> None:
    from turkclip.search.photo_index import build_index

    if args.chunk_size < 1:
        raise TurkclipError(f"--chunk-size must be at least 1, not {args.chunk_size}")
    with process_group(args.device) as device:  # under torchrun: every process embeds a share, rank 0 writes
        if args.shards:  # one process unpacks the shards' images into the folder, then the folder is indexed
            from turkclip import cache
            from turkclip.data.shards import unpack_images

            with cache.main_process_first():
                unpacked = unpack_images(args.shards, args.folder) if is_main_process() else None
        report = build_index(args.folder, args.output, args.model, args.adapter, args.tokenizer, device,
                             resolve_precision(args.precision, device), args.chunk_size, progress=not args.no_progress,
                             text_model=args.text_model)
    if not is_main_process():  # several processes: one of them reports
        return
    if args.shards:
        written, kept, problems = unpacked
        for where, problem in problems:
            print(f"skipped shard sample {where}: {problem}")
        print(f"{args.folder}: {written} photos unpacked from the shards, {kept} already there")
    for note in report.repaired:
        print(f"note: {printable(note)}")
    for path, problem in report.skipped:
        print(f"left out {printable(path)}: {problem}")
    for path, _size, _mtime, problem in report.bad:
        print(f"skipped {printable(path)}: {printable(problem)}")
    idx = report.index
    print(f"{args.output}: {len(idx.paths)} photos ({report.added} new, {report.changed} changed, {report.removed}"
          f" removed, {report.kept} unchanged" + (f", {report.resumed} from an interrupted run" if report.resumed else "")
          + f"; {len(report.bad)} unreadable" + (f", {len(report.skipped)} left out" if report.skipped else "")
          + f") with {idx.model}" + (f" + {idx.adapter}" if idx.adapter else "")
          + (f" (queries through the text tower {idx.text_model})" if idx.text_model else "")
          + f" in {report.seconds:.1f} s")


def search(args) -> None:
    from turkclip.search.language import index_language
    from turkclip.search.photo_index import open_index
    from turkclip.search.photo_search import open_search
    from turkclip.search.texts import check_query

    if (args.query is None) == (args.image is None):
        raise TurkclipError("give a text query or --image PHOTO (one of the two)")
    query = check_query(args.query) if args.query is not None else None
    if args.k < 1:
        raise TurkclipError(f"-k must be at least 1, not {args.k}")
    idx = open_index(args.index)
    # one query: an exact pass over the gallery is cheaper than building a FAISS index for it
    engine = open_search(idx, args.model, args.adapter, args.tokenizer, default_device(args.device), use_faiss=False,
                         text_model=args.text_model)
    if args.image is not None:
        if not Path(args.image).is_file():
            raise TurkclipError(f"image not found: {args.image}")
        hits = engine.photo(args.image, args.k)
    else:
        hits = engine.text(query, args.k, args.lang or index_language(idx))
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], ensure_ascii=False))
        return
    for h in hits:
        print(f"{h.score:7.4f}  {printable(h.path)}")


def classify(args) -> None:
    from turkclip.roads import load_clip
    from turkclip.search.classify import classify as classify_images
    from turkclip.search.texts import parse_labels

    if (args.labels is None) == (args.labels_file is None):
        raise TurkclipError("give --labels \"kedi,köpek,kuş\" or --labels-file FILE (one of the two)")
    if args.labels_file is not None:
        try:
            text = Path(args.labels_file).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise TurkclipError(f"labels file not found: {args.labels_file}") from None
        except UnicodeDecodeError:
            raise TurkclipError(f"{args.labels_file} is not UTF-8 text") from None
    else:
        text = args.labels
    labels = parse_labels(text, args.lang, cased=args.text_model is not None)
    if args.k < 1:
        raise TurkclipError(f"-k must be at least 1, not {args.k}")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise TurkclipError(f"image not found: {missing[0]}")
    clip = load_clip(args.model, args.tokenizer, text_model=args.text_model, adapter=args.adapter)
    results = classify_images(clip, args.images, labels, lang=args.lang, device=default_device(args.device))
    if args.json:
        print(json.dumps([{"image": image, "labels": [{"label": label, "prob": round(p, 6)} for label, p in ranked[: args.k]]}
                          for image, ranked in zip(args.images, results)], ensure_ascii=False))
        return
    for image, ranked in zip(args.images, results):
        print(image)
        for label, p in ranked[: args.k]:
            print(f"  {p:7.2%}  {label}")


def serve(args) -> None:
    from turkclip.search.photo_index import open_index
    from turkclip.search.photo_search import open_search

    try:
        import uvicorn

        from turkclip_train.serve.app import allowed_hosts, create_app
    except ImportError as e:
        raise TurkclipError(f"`turkclip serve` needs the web extras: pip install 'turkclip[app]' ({e.name} is missing)") from None
    index = open_index(args.index)
    photos = _served_folder(args.photos, index)
    engine = open_search(index, args.model, args.adapter, args.tokenizer, default_device(args.device),
                         text_model=args.text_model)
    hosts = allowed_hosts(args.host, args.allow_host)
    app = create_app(engine, photos, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), allowed_hosts=hosts)
    print(f"serving {len(index.paths)} photos of {photos} on http://{args.host}:{args.port} to requests for"
          f" {', '.join(hosts)} (more: --allow-host NAME; Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _served_folder(photos: str | None, index) -> Path:
    """The photo folder the user named (the index's paths are looked up in it, never in the folder the index file
    names): it must hold some of the indexed photos."""
    if photos is None:
        raise TurkclipError(f"give --photos FOLDER, the folder of photos to show (this index was built from {index.root})")
    folder = Path(photos)
    if not folder.is_dir():
        raise TurkclipError(f"photo folder not found: {folder}")
    sample = index.paths[:: max(1, len(index.paths) // 20)]
    if sample and not any((folder / path).is_file() for path in sample):
        raise TurkclipError(f"none of the index's photos (e.g. {sample[0]}) are in {folder}: give the folder the index"
                            f" was built from (it was {index.root})")
    return folder
