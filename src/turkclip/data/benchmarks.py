"""The multilingual retrieval benchmarks the field reports, read from the files their publishers ship.

Published multilingual CLIP numbers (open_clip's XLM-R models, NLLB-CLIP, SigLIP) come from
LAION-AI's CLIP_benchmark on these sets, so turkclip reads each in its published layout and builds
the same image list and captions as CLIP_benchmark's dataset code does:

* xm3600 (Crossmodal-3600): `captions.jsonl`, one JSON object per image with `"image/key"` and, per
  language code, `{"caption": [...]}`; images at `images/<key>.jpg`. CLIP_benchmark scores the first
  caption of each image; `all` keeps every caption (about two per image and language).
* xtd10: `test_image_names.txt` and `test_1kcaptions_<lang>.txt`, line i of one naming the image of
  line i of the other (the Turkish file has CRLF line ends); images at `images/<name>`. Japanese is `jp`.
* xtd200 and flickr30k-200 (NLLB-CLIP's translations of XTD10 and of Flickr30k's test captions into
  the 200 FLORES languages): `test_image_names.txt` (xtd200) or `filenames.txt` (flickr30k-200) and
  `<FLORES code>.txt` (`tur_Latn.txt`), images at `images/<name>`; one caption per image.

`--root` is the set's own folder, or CLIP_benchmark's dataset root holding it (`xm3600/`, `xtd10/`,
`xtd200/`, `flickr30k-200/`). Nothing is downloaded: a missing or malformed file is one line saying
what is expected and where to get it. Line-aligned files must have one caption per image (CLIP_benchmark
silently cuts the longer one), and every caption must be non-empty. Missing image files stop the
run unless `--skip-bad-images`, which leaves them out as CLIP_benchmark does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from turkclip.data.captions import CaptionSet, ImageRecord, clean_caption, read_text
from turkclip.errors import TurkclipError


@dataclass(frozen=True)
class Layout:
    title: str
    folder: str  # the set's folder under CLIP_benchmark's dataset root
    index: str | None  # the file naming one image per line (None: the captions file names them)
    captions: str  # the captions file, `{code}` standing for the language
    where: str  # where the captions (and image list) come from
    images: str  # where the images come from


CLIP_BENCHMARK_IMAGES = "as CLIP_benchmark fetches them"
LAYOUTS = {
    "xm3600": Layout("Crossmodal-3600", "xm3600", None, "captions.jsonl",
                     "https://google.github.io/crossmodal-3600/web-data/captions.zip",
                     "https://open-images-dataset.s3.amazonaws.com/crossmodal-3600/images.tgz (unpack into images/)"),
    "xtd10": Layout("XTD10", "xtd10", "test_image_names.txt", "test_1kcaptions_{code}.txt",
                    "https://github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10 (folder XTD10/; de and fr"
                    " in MIC/, jp in STAIR/)",
                    f"https://nllb-data.com/test/xtd10/images.tar.gz, {CLIP_BENCHMARK_IMAGES}"),
    "xtd200": Layout("XTD200", "xtd200", "test_image_names.txt", "{code}.txt",
                     "https://github.com/visheratin/nllb-clip (folder data/xtd200/)",
                     f"https://nllb-data.com/test/xtd10/images.tar.gz, {CLIP_BENCHMARK_IMAGES}"),
    "flickr30k-200": Layout("Flickr30k-200", "flickr30k-200", "filenames.txt", "{code}.txt",
                            "https://github.com/visheratin/nllb-clip (folder data/flickr30k-200/)",
                            f"https://nllb-data.com/test/flickr30k/images.tar.gz, {CLIP_BENCHMARK_IMAGES}"),
}

# ISO 639-1 (as turkclip's --lang and Crossmodal-3600 name languages) → the FLORES-200 code that names the
# xtd200 / flickr30k-200 captions file, for Crossmodal-3600's languages; any other: pass the FLORES code itself.
FLORES = {
    "ar": "arb_Arab", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek",
    "en": "eng_Latn", "es": "spa_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fil": "tgl_Latn", "fr": "fra_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn",
    "ja": "jpn_Jpan", "ko": "kor_Hang", "mi": "mri_Latn", "nl": "nld_Latn", "no": "nob_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "te": "tel_Telu",
    "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl", "vi": "vie_Latn", "zh": "zho_Hans",
}


@dataclass
class BenchmarkSet:
    name: str
    folder: Path  # holds the files; the images are in folder / "images"
    code: str  # the language as the set's files name it (tr, jp, tur_Latn)
    protocol: CaptionSet  # CLIP_benchmark's: each image with its first caption
    every: CaptionSet  # each image with all its captions (the same as `protocol` where there is one per image)

    @property
    def images(self) -> Path:
        return self.folder / "images"


def read_benchmark(name: str, root: str | Path, lang: str, encoding: str | None = None) -> BenchmarkSet:
    """The set `name` (a key of LAYOUTS) under `root` in language `lang` (ISO code as --lang takes it, or the
    set's own code: jp for XTD10's Japanese, a FLORES code such as tur_Latn for xtd200 / flickr30k-200)."""
    layout = LAYOUTS[name]
    code, short = _codes(name, lang)
    folder = _folder(layout, Path(root), code)
    captions = folder / layout.captions.format(code=code)
    if not captions.is_file():
        raise TurkclipError(f"{name}: no {captions.name} in {folder}: {layout.title}'s {code!r} captions are expected"
                            f" there; get them from {layout.where}")
    if not (folder / "images").is_dir():
        raise TurkclipError(f"{name}: no images/ folder in {folder}: {layout.title}'s images are expected there;"
                            f" get them from {layout.images}")
    if layout.index is None:
        records = _jsonl_records(captions, code, encoding)
    else:
        records = _aligned_records(folder / layout.index, captions, encoding)
    _check_unique(records, captions)
    every = CaptionSet(records, short, str(captions))
    if all(len(r.captions) == 1 for r in records):
        return BenchmarkSet(name, folder, code, every, every)
    first = CaptionSet([ImageRecord(r.filename, None, r.captions[:1]) for r in records], short, str(captions))
    return BenchmarkSet(name, folder, code, first, every)


def _codes(name: str, lang: str) -> tuple[str, str]:
    """(the language as the set's file names have it, the language as turkclip's text normalisation takes it)."""
    if name == "xtd10":
        return {"ja": "jp"}.get(lang, lang), {"jp": "ja"}.get(lang, lang)
    if name in ("xtd200", "flickr30k-200"):
        short = {flores: iso for iso, flores in FLORES.items()}
        if "_" in lang:
            return lang, short.get(lang, lang)
        if lang not in FLORES:
            raise TurkclipError(f"{name} names its languages by FLORES-200 code: pass --lang as the captions file's"
                                f" name without .txt (e.g. tur_Latn); {lang!r} has no code here")
        return FLORES[lang], lang
    return lang, lang


def _folder(layout: Layout, root: Path, code: str) -> Path:
    """`root` itself, or CLIP_benchmark's folder for the set under it."""
    marker = layout.index or layout.captions.format(code=code)
    for folder in (root, root / layout.folder):
        if (folder / marker).is_file():
            return folder
    if not root.is_dir():
        raise TurkclipError(f"benchmark folder not found: {root}")
    raise TurkclipError(f"no {marker} in {root} (nor in {root / layout.folder}): {layout.title} is expected as"
                        f" {marker}{'' if layout.index is None else ' + ' + layout.captions.format(code=code)}"
                        f" + images/; get the files from {layout.where}")


def _jsonl_records(path: Path, code: str, encoding: str | None) -> list[ImageRecord]:
    """Crossmodal-3600's captions.jsonl: one image per line, its captions per language."""
    records = []
    for n, line in enumerate(read_text(path, encoding).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise TurkclipError(f"{where}: not valid JSON ({e.msg}); Crossmodal-3600's captions.jsonl has one JSON"
                                " object per line") from None
        key = item.get("image/key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key:
            raise TurkclipError(f'{where}: no "image/key" string; each line of Crossmodal-3600\'s captions.jsonl'
                                ' names its image by it')
        entry = item.get(code)
        if not isinstance(entry, dict):
            langs = ", ".join(k for k, v in item.items() if isinstance(v, dict))
            raise TurkclipError(f"{where}: no {code!r} captions (this line has: {langs}); choose one with --lang")
        captions = entry.get("caption")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise TurkclipError(f'{where}: "{code}" needs a non-empty "caption" list of strings')
        records.append(ImageRecord(f"{key}.jpg", None,
                                   [clean_caption(c, f"{where}: {code}.caption[{i}]") for i, c in enumerate(captions)]))
    if not records:
        raise TurkclipError(f"{path}: no images listed")
    return records


def _aligned_records(index: Path, captions: Path, encoding: str | None) -> list[ImageRecord]:
    """An image list and a captions file, line i naming the image of caption i."""
    names = read_text(index, encoding).splitlines()
    texts = read_text(captions, encoding).splitlines()
    if len(names) != len(texts):
        raise TurkclipError(f"{captions} has {len(texts)} lines but {index} names {len(names)} images: line i of"
                            " one must be the caption of line i of the other")
    if not names:
        raise TurkclipError(f"{index}: no images listed")
    records = []
    for n, (name, text) in enumerate(zip(names, texts), 1):
        if not name.strip():
            raise TurkclipError(f"{index}:{n}: empty image name")
        records.append(ImageRecord(name.strip(), None, [clean_caption(text, f"{captions}:{n}")]))
    return records


def _check_unique(records: list[ImageRecord], source: Path) -> None:
    """An image listed twice would be its own negative in the gallery."""
    seen: dict[str, int] = {}
    for i, r in enumerate(records, 1):
        if r.filename in seen:
            raise TurkclipError(f"{source}: image {r.filename!r} is listed twice (entries {seen[r.filename]} and {i})")
        seen[r.filename] = i
