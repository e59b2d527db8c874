"""`turkclip index | search | classify | serve`: what each photo subcommand does, given its flags.

Arguments are checked before anything heavy is imported, and torch is imported only where torch answers: with an
ONNX export (`--onnx`, or an index built with one) these commands run on onnxruntime alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from turkclip.errors import TurkclipError
from turkclip.search.photo_files import printable


def index(args) -> None:
    from turkclip.search.photo_index import build_index, built_with_onnx

    if args.chunk_size < 1:
        raise TurkclipError(f"--chunk-size must be at least 1, not {args.chunk_size}")
    onnx = args.onnx or (None if args.model or args.adapter or args.text_model else built_with_onnx(Path(args.output)))
    if onnx is not None:
        _check_onnx_flags(args, onnx, "--precision")
        unpacked = _unpack(args) if args.shards else None
        report = build_index(args.folder, args.output, chunk_size=args.chunk_size, progress=not args.no_progress,
                             onnx=onnx)
    else:
        report, unpacked = _torch_index(args)
        if report is None:  # several processes: one of them reports
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
          + (f" from the ONNX export {onnx}" if onnx else "") + f" in {report.seconds:.1f} s")


def _torch_index(args):
    """(report, what --shards unpacked) of an index embedded on torch, in every process torchrun started; (None, None)
    in all but the one that reports."""
    from turkclip.embedding.embed import resolve_precision
    from turkclip.search.photo_index import build_index

    from .distributed import is_main_process, process_group

    unpacked = None
    with process_group(args.device) as device:  # under torchrun: every process embeds a share, rank 0 writes
        if args.shards:  # one process unpacks the shards' images into the folder, then the folder is indexed
            from turkclip import cache

            with cache.main_process_first():
                unpacked = _unpack(args) if is_main_process() else None
        report = build_index(args.folder, args.output, args.model, args.adapter, args.tokenizer, device,
                             resolve_precision(args.precision or "auto", device), args.chunk_size,
                             progress=not args.no_progress, text_model=args.text_model)
    return (report, unpacked) if is_main_process() else (None, None)


def _unpack(args) -> tuple[int, int, list[tuple[str, str]]]:
    """--shards: the shards' images written into the folder to index (no torch needed)."""
    from turkclip.data.shards import unpack_images

    return unpack_images(args.shards, args.folder)


def _check_onnx_flags(args, onnx, *torch_only: str) -> None:
    """With an ONNX export the model is the export's and onnxruntime runs on the CPU: flags for torch are refused."""
    given = [flag for flag in ("--model", "--adapter", "--text-model", "--tokenizer", "--device", *torch_only)
             if getattr(args, flag[2:].replace("-", "_"), None)]
    if given:
        way = "leave out --onnx" if args.onnx else "give --model (the index was built with it)"
        raise TurkclipError(f"{', '.join(given)}: not with the ONNX export {onnx}, which carries its own model and runs"
                            f" on onnxruntime on the CPU; leave {'it' if len(given) == 1 else 'them'} out, or {way}"
                            " to run on torch")


def _device(args, onnx):
    """torch's device for --device (cuda when there is one), or None where the ONNX runtime answers (no torch)."""
    if onnx is not None:
        _check_onnx_flags(args, onnx)
        return None
    from .distributed import default_device

    return default_device(args.device)


def _check_photo(path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise TurkclipError(f"image not found: {path}")


def _open_search(args, index, use_faiss: bool | None = None):
    """The encoder to query `index` with: the ONNX export (--onnx, or the index's own), or the torch model."""
    from turkclip.search.photo_search import chosen_onnx, open_search

    onnx = chosen_onnx(index, args.onnx, args.model, args.adapter, args.text_model)
    return open_search(index, args.model, args.adapter, args.tokenizer, _device(args, onnx), use_faiss,
                       args.text_model, onnx)


def search(args) -> None:
    from turkclip.search.photo_index import open_index
    from turkclip.search.texts import check_query

    if (args.query is None) == (args.image is None):
        raise TurkclipError("give a text query or --image PHOTO (one of the two)")
    query = check_query(args.query) if args.query is not None else None
    if args.k < 1:
        raise TurkclipError(f"-k must be at least 1, not {args.k}")
    _check_photo(args.image)
    # one query: an exact pass over the gallery is cheaper than building a FAISS index for it
    engine = _open_search(args, open_index(args.index), use_faiss=False)
    if args.image is not None:
        hits = engine.photo(args.image, args.k)
    else:
        hits = engine.text(query, args.k, args.lang or engine.lang)
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], ensure_ascii=False))
        return
    for h in hits:
        print(f"{h.score:7.4f}  {printable(h.path)}")


def classify(args) -> None:
    from turkclip.search.classify import classify as classify_images
    from turkclip.search.encoder import open_encoder
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
    cased = args.text_model is not None or (args.onnx is not None and _export_is_cased(args.onnx))
    labels = parse_labels(text, args.lang, cased=cased)
    if args.k < 1:
        raise TurkclipError(f"-k must be at least 1, not {args.k}")
    for image in args.images:
        _check_photo(image)
    encoder = open_encoder(args.model, args.adapter, args.text_model, args.tokenizer, _device(args, args.onnx),
                           onnx=args.onnx)
    results = classify_images(encoder, args.images, labels, lang=args.lang)
    if args.json:
        print(json.dumps([{"image": image, "labels": [{"label": label, "prob": round(p, 6)} for label, p in ranked[: args.k]]}
                          for image, ranked in zip(args.images, results)], ensure_ascii=False))
        return
    for image, ranked in zip(args.images, results):
        print(image)
        for label, p in ranked[: args.k]:
            print(f"  {p:7.2%}  {label}")


def _export_is_cased(onnx: str) -> bool:
    """Whether an export's text side reads case (a text tower): its manifest says, read in a moment."""
    from turkclip.onnx.manifest import read_manifest

    return not read_manifest(onnx).text["clip_normalize"]


def serve(args) -> None:
    from turkclip.search.photo_index import open_index

    try:
        import uvicorn

        from turkclip_train.serve.app import allowed_hosts, create_app
    except ImportError as e:
        raise TurkclipError(f"`turkclip serve` needs the web extras: pip install 'turkclip[app]' ({e.name} is missing)") from None
    index = open_index(args.index)
    photos = _served_folder(args.photos, index)
    engine = _open_search(args, index)
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
