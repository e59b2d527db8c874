"""`turkclip evaluate --benchmark` against CLIP_benchmark's own dataset and metric code, same files, same model.

Builds the four published layouts (Crossmodal-3600's captions.jsonl, XTD10's CRLF text files, XTD200's and
Flickr30k-200's FLORES-named files, each with images/) from the quick demo world's held-out scenes and their
Turkish captions, two images missing from the XTD10 folder, then scores each set twice with the same model
(the quick demo's stage-1 base + its Turkish LoRA adapter, or --model/--adapter):

* turkclip: `turkclip evaluate --benchmark NAME --root DIR --lang tr --skip-bad-images --json`, a subprocess;
* CLIP_benchmark 1.6.2: its `create_annotation_file` (which images and captions, in which order; missing
  images skipped), its dataset class and collate function, and `metrics.zeroshot_retrieval.evaluate` for R@1/5/10,
  calling the same turkclip model through `encode_image` / `encode_text`.

XM3600's "all captions" has no CLIP_benchmark dataset (it keeps the first caption only): there its metric code
scores a dataset of (image, every caption) read here from captions.jsonl.

Two stand-ins, both outside what is compared: torchvision, whose CPU build for torch 2.13.0+cpu is not on this
machine's package index (the CUDA build's operators fail to register against torch+cpu) — the datasets only
subclass `torchvision.datasets.VisionDataset`, a holder of `transform`, which a three-line class replaces; and
the network — XTD10, XTD200 and Flickr30k-200 fetch their image list and captions from GitHub at run time
(`_get_lines(url)`), here read from the same file names in the local folder. CLIP_benchmark's declared
dependencies pull a CUDA torch and open_clip, which these modules do not use, hence --no-deps:

    pip install --no-deps --target /tmp/cb-deps clip_benchmark==1.6.2 requests urllib3 charset-normalizer certifi
    PYTHONPATH=src:/tmp/cb-deps .venv/bin/python bench/clip_benchmark_parity.py [--model M --adapter A]

Prints the setting (date, machine, load) and a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from PIL import Image

from turkclip.data.benchmarks import FLORES
from turkclip.data.captions import read_captions
from turkclip.data.images import load_image
from turkclip.embedding.embed import embed_images, embed_texts
from turkclip.roads import load_clip

SETS = ["xm3600", "xtd10", "xtd200", "flickr30k-200"]
KS = (1, 5, 10)
KEYS = [f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in KS]  # image_retrieval: text→image
MISSING_XTD10 = 2  # images removed from the XTD10 folder: both sides must leave them and their captions out


def stand_in_torchvision() -> None:
    """`torchvision.datasets.VisionDataset` as CLIP_benchmark's datasets use it: keeps root and transforms."""
    class VisionDataset(torch.utils.data.Dataset):
        def __init__(self, root, transform=None, target_transform=None):
            self.root, self.transform, self.target_transform = root, transform, target_transform

    datasets = types.ModuleType("torchvision.datasets")
    datasets.VisionDataset = VisionDataset
    sys.modules["torchvision"] = types.ModuleType("torchvision")
    sys.modules["torchvision.datasets"] = datasets


def world_scenes(model: str | None, adapter: str | None, work: Path) -> tuple[str, str, list]:
    """(base model, adapter, [(image path, Turkish captions)]) of the quick demo world's val + test scenes."""
    from turkclip_train.demo.pretrain import pretrain
    from turkclip_train.demo.run import QUICK, run_demo

    if adapter is None:
        run_demo(work / "demo", seed=0, quick=True)
        adapter = str(work / "demo" / "adapter")
    base = pretrain(QUICK[0], 0)
    captions = read_captions(base.world.turkish, "tr")
    scenes = [(base.world.images / r.filename, r.captions) for r in captions.records if r.split in ("val", "test")]
    return model or str(base.folder), adapter, scenes


def write_layouts(root: Path, scenes: list) -> None:
    """The four published layouts of the same scenes (JPEG, as the sets ship), Turkish captions."""
    folders = {name: root / name / "images" for name in SETS}
    for folder in folders.values():
        folder.mkdir(parents=True)
    names, lines = [], []
    for i, (path, captions) in enumerate(scenes):
        key = f"{i:016x}"
        names.append(f"COCO_val2014_{i:012d}.jpg")
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        rgb.save(folders["xm3600"] / f"{key}.jpg", quality=95)
        for name in ("xtd10", "xtd200", "flickr30k-200"):
            rgb.save(folders[name] / names[-1], quality=95)
        lines.append(json.dumps({"image/key": key, "image/locale": "tr",
                                 "tr": {"caption": captions, "caption/tokenized": captions}}, ensure_ascii=False))
    (root / "xm3600" / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    second = [c[1 % len(c)] for _, c in scenes]  # the aligned sets take each scene's second caption
    for name, index, captions_file, newline in [("xtd10", "test_image_names.txt", "test_1kcaptions_tr.txt", "\r\n"),
                                                ("xtd200", "test_image_names.txt", "tur_Latn.txt", "\n"),
                                                ("flickr30k-200", "filenames.txt", "tur_Latn.txt", "\n")]:
        (root / name / index).write_text("\n".join(names) + "\n", encoding="utf-8")
        (root / name / captions_file).write_bytes((newline.join(second) + newline).encode("utf-8"))
    for name in names[3 : 3 + MISSING_XTD10]:
        (folders["xtd10"] / name).unlink()


class Wrapped:
    """A turkclip Clip as CLIP_benchmark calls a model: tokenizer(texts), encode_text, encode_image."""

    def __init__(self, clip, lang: str):
        self.clip, self.lang, self.device = clip, lang, torch.device("cpu")

    def tokenizer(self, texts: list[str]):
        return types.SimpleNamespace(texts=texts, to=lambda device: types.SimpleNamespace(texts=texts))

    def transform(self, image: Image.Image) -> torch.Tensor:
        """turkclip's pixels of the image CLIP_benchmark opened (PNG in between: lossless)."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return torch.from_numpy(load_image(buffer, self.clip.preprocess.size))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return embed_images(self.clip.model, pixels, self.clip.preprocess, self.device, progress=False)

    def encode_text(self, tokens) -> torch.Tensor:
        return embed_texts(self.clip.model, self.clip.text, tokens.texts, self.lang, self.device)


def collate(batch):
    """CLIP_benchmark's image_captions_collate_fn (its builder module imports all of torchvision)."""
    images, texts = zip(*batch)
    return torch.utils.data.default_collate(images), texts


def clip_benchmark_scores(root: Path, name: str, model: Wrapped) -> dict[str, float]:
    from clip_benchmark.datasets import crossmodal3600, flickr30k_200, xtd10, xtd200

    module, cls, folder = {"xm3600": (crossmodal3600, "Crossmodal3600", "xm3600"),
                           "xtd10": (xtd10, "XTD10", "xtd10"), "xtd200": (xtd200, "XTD200", "xtd200"),
                           "flickr30k-200": (flickr30k_200, "Flickr30k_200", "flickr30k-200")}[name]
    code = model.lang if name in ("xm3600", "xtd10") else FLORES.get(model.lang, model.lang)
    # the image list and captions CLIP_benchmark would fetch from GitHub: the same files, read locally
    module._get_lines = lambda url: (root / folder / url.rsplit("/", 1)[1]).read_text(encoding="utf-8").splitlines()
    module.create_annotation_file(str(root), code)
    dataset = getattr(module, cls)(str(root), str(root / module.OUTPUT_FILENAME_TEMPLATE.format(code)),
                                   transform=model.transform)
    return _metric(dataset, model)


def clip_benchmark_all_captions(root: Path, model: Wrapped) -> dict[str, float]:
    """CLIP_benchmark's metric on XM3600 with every caption of each image."""
    items = []
    for line in (root / "xm3600" / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        items.append((root / "xm3600" / "images" / f"{item['image/key']}.jpg", item[model.lang]["caption"]))

    class Every(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            with Image.open(items[i][0]) as im:
                return model.transform(im.convert("RGB")), items[i][1]

    return _metric(Every(), model)


def _metric(dataset, model: Wrapped) -> dict[str, float]:
    from clip_benchmark.metrics import zeroshot_retrieval

    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=False, num_workers=0, collate_fn=collate)
    return zeroshot_retrieval.evaluate(model, loader, model.tokenizer, device="cpu", amp=False, recall_k_list=list(KS))


def turkclip_scores(root: Path, name: str, model: str, adapter: str | None, lang: str, work: Path) -> dict:
    out = work / f"{name}.json"
    run = subprocess.run([sys.executable, "-m", "turkclip_train.cli", "evaluate", "--benchmark", name, "--root",
                          str(root), "--lang", lang, "--model", model, *(["--adapter", adapter] if adapter else []),
                          "--skip-bad-images", "--cache-dir", "none", "--json", str(out)],
                         check=False, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"turkclip evaluate --benchmark {name} failed:\n{run.stderr}")
    return json.loads(out.read_text())


def compare(root: Path, names: list[str], model: str, adapter: str | None, lang: str, work: Path) -> tuple[str, float]:
    """(markdown table of both sides' R@k per set, largest difference in points)."""
    wrapped = Wrapped(load_clip(model, adapter=adapter), lang)
    rows, worst = [], 0.0
    for name in names:
        ours = turkclip_scores(root, name, model, adapter, lang, work)
        checks = [(name, ours["clip_benchmark"], clip_benchmark_scores(root, name, wrapped), ours["n_images"],
                   ours["n_texts"])]
        if name == "xm3600":
            every = ours["all_captions"]
            checks.append(("xm3600, all captions", every["clip_benchmark"], clip_benchmark_all_captions(root, wrapped),
                           every["n_images"], every["n_texts"]))
        for label, mine, theirs, n_images, n_texts in checks:
            diff = max(abs(mine[k] - theirs[k]) * 100 for k in KEYS)  # points
            worst = max(worst, diff)
            cells = " | ".join(f"{100 * mine[k]:.2f} / {100 * theirs[k]:.2f}" for k in KEYS)
            rows.append(f"| {label} | {n_images} | {n_texts} | {cells} | {diff:.4f} |")
    table = "\n".join([f"| set | images | captions | {' | '.join(KEYS)} (turkclip / CLIP_benchmark, %) | max diff (points) |",
                       "|---|---:|---:|" + "---:|" * len(KEYS) + "---:|", *rows])
    return table, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="base CLIP folder (default: the quick demo's stage-1 base)")
    parser.add_argument("--adapter", help="LoRA adapter folder (default: the quick demo's, trained here, unless --sets)")
    parser.add_argument("--sets", help="real files instead of the demo world's: CLIP_benchmark's dataset root holding"
                        " xm3600/, xtd10/, xtd200/, flickr30k-200/ (those present are compared); needs --model")
    parser.add_argument("--lang", default="tr", help="with --sets: the language (default tr)")
    args = parser.parse_args()
    if args.sets and not args.model:
        parser.error("--sets needs --model (and --adapter, if the model has one)")
    stand_in_torchvision()
    from importlib.metadata import version

    started, load = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cb-parity-") as tmp:
        work = Path(tmp)
        if args.sets:
            root, model, adapter, lang = Path(args.sets), args.model, args.adapter, args.lang
            names = [n for n in SETS if (root / n).is_dir()]
            what = f"the files under {root}, --lang {lang}, {model}" + (f" + {adapter}" if adapter else "")
        else:
            model, adapter, scenes = world_scenes(args.model, args.adapter, work)
            root, names, lang = work / "sets", SETS, "tr"
            write_layouts(root, scenes)
            what = (f"{len(scenes)} quick-demo-world scenes in each published layout, Turkish captions, the quick"
                    f" demo's base + LoRA adapter; {MISSING_XTD10} images missing from the XTD10 folder")
        table, worst = compare(root, names, model, adapter, lang, work)
    print(f"{time.strftime('%Y-%m-%d')}, CLIP_benchmark {version('clip_benchmark')}: {what}."
          f" {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__},"
          f" load {load:.1f} at the start; {time.time() - started:.0f} s.\n")
    print(table)
    print(f"\nLargest difference: {worst:.4f} points (target 0.01).")


if __name__ == "__main__":
    main()
