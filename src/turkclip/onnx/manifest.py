"""The manifest of an ONNX export: which model and road it holds and how to feed it, read back with checks.

`turkclip-onnx.json` beside the graphs says everything a runtime (turkclip's own, or one in another language)
needs besides the two ONNX files and the tokenizer: how a caption becomes token ids (case folding, prompt, maximum
length, padding) and how a photo becomes pixels (size, resize, crop, mean and std). Both graphs output
L2-normalised embeddings, so a cosine similarity is a dot product.

The folder is something a user hands in: the manifest is size-bounded, every field is type-checked and every file
it names must lie in the folder, each failure a one-line `TurkclipError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from turkclip.errors import TurkclipError

MANIFEST = "turkclip-onnx.json"
FORMAT, VERSION = "turkclip-onnx", 1
MAX_BYTES = 1 << 20  # a manifest is a few KB
ROADS = ("base", "adapter", "text-tower")


@dataclass(frozen=True)
class Export:
    folder: Path
    road: str  # base | adapter (LoRA merged) | text-tower
    model: str  # the base CLIP it was exported from (as an index records it: a folder's absolute path or a hub id)
    adapter: str | None
    text_model: str | None
    weights: str  # fp32 | int8
    lang: str  # what the road was trained for: queries are folded for it unless the user says otherwise
    dim: int
    logit_scale: float
    image: dict  # file, size, mean, std (and prose on resize/crop for other runtimes)
    text: dict  # file, tokenizer, max_length, pad_id, pad_token, padding/truncation side, prompt, case_folds,
    #             clip_normalize

    def path(self, side: str, key: str = "file") -> Path:
        return self.folder / getattr(self, side)[key]


def write_manifest(folder: Path, data: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "version": VERSION, **data}, indent=2,
                                              ensure_ascii=False) + "\n", encoding="utf-8")


def read_manifest(folder: str | Path) -> Export:
    """The export in `folder`, checked: its manifest's fields and that the files it names are there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TurkclipError(f"ONNX folder not found: {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise TurkclipError(f"{folder} is not an ONNX export: it has no {MANIFEST} (make one with"
                            " `turkclip export-onnx`)")
    if path.stat().st_size > MAX_BYTES:
        raise TurkclipError(f"{path} is larger than {MAX_BYTES // 1024} KB: not a turkclip ONNX manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TurkclipError(f"{path} is damaged ({str(e).splitlines()[0]}): export the model again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise TurkclipError(f"{path} is not a turkclip ONNX manifest (format {FORMAT!r}, version {VERSION})")
    export = Export(
        folder=folder, road=_field(data, path, "road", str), model=_field(data, path, "model", str),
        adapter=_field(data, path, "adapter", str, optional=True),
        text_model=_field(data, path, "text_model", str, optional=True), weights=_field(data, path, "weights", str),
        lang=_field(data, path, "lang", str),
        dim=_field(data, path, "dim", int), logit_scale=float(_field(data, path, "logit_scale", (int, float))),
        image=_field(data, path, "image", dict), text=_field(data, path, "text", dict))
    _check(export, path)
    return export


def _field(data: dict, path: Path, key: str, kind, optional: bool = False):
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TurkclipError(f"{path} is damaged: its {key!r} field is missing or of the wrong type")
    return value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(export: Export, path: Path) -> None:
    image, text = export.image, export.text
    fields = [(image, "file", str), (image, "size", int), (image, "mean", list), (image, "std", list),
              (text, "file", str), (text, "tokenizer", str), (text, "max_length", int), (text, "pad_id", int),
              (text, "pad_token", str), (text, "prompt", str), (text, "case_folds", dict),
              (text, "clip_normalize", bool)]
    for side, key, kind in fields:
        if not isinstance(side.get(key), kind):
            raise TurkclipError(f"{path} is damaged: its {key!r} entry is missing or of the wrong type")
    problems = [export.road not in ROADS and f"unknown road {export.road!r}",
                export.weights not in ("fp32", "int8") and f"unknown weights {export.weights!r}",
                not 0 < export.dim <= 1 << 16 and f"embedding width {export.dim}",
                not 0 < image["size"] <= 4096 and f"image size {image['size']}",
                not 0 < text["max_length"] <= 1 << 16 and f"max_length {text['max_length']}",
                not (len(image["mean"]) == len(image["std"]) == 3 and all(map(_number, image["mean"] + image["std"]))
                     and all(v > 0 for v in image["std"])) and "image mean/std (3 numbers each, std > 0)",
                not {text.get("padding_side", "right"), text.get("truncation_side", "right")} <= {"left", "right"}
                and "padding_side/truncation_side (left or right)",
                not all(isinstance(f, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in f.items())
                        for f in text["case_folds"].values()) and "case_folds"]
    problem = next((p for p in problems if p), None)
    if problem:
        raise TurkclipError(f"{path} is damaged: {problem}")
    for side, key in (("image", "file"), ("text", "file"), ("text", "tokenizer")):
        name = getattr(export, side)[key]
        file = (export.folder / name).resolve()
        if not file.is_relative_to(export.folder.resolve()) or not file.is_file():
            raise TurkclipError(f"{export.folder} is incomplete: {name} (named in {MANIFEST}) is missing; export the"
                                " model again")
