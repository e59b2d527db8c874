"""`turkclip demo`: show, offline and in minutes, that a LoRA adapter teaches an English CLIP Turkish.

1. A synthetic world of coloured shapes with English and Turkish captions (world.py).
2. Stage 1 stands in for OpenAI's pretraining: a small CLIP trained on English only (pretrain.py, cached).
3. Stage 2 is the product itself: `train()` fits a text-tower LoRA adapter, plus the embedding rows of
   the Turkish-only word pieces, on the Turkish captions with some English captions mixed in.
4. `evaluate()` measures held-out test scenes in Turkish and English, before and after the adapter,
   which is loaded from its folder the way `turkclip evaluate --adapter` loads it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip import cache
from turkclip.adapters import LoraSettings, load_adapter
from turkclip.data.captions import read_captions
from turkclip.data.dataset import ImageTextSet, load_image_text_set
from turkclip.embed import cached_image_embeddings, embed_texts
from turkclip.errors import TurkclipError
from turkclip.evaluate import evaluate
from turkclip.model import load_clip
from turkclip_train.logs import plot_curves
from turkclip_train.report import format_table
from turkclip_train.train import Interrupted, TrainConfig, train

from .figures import Example, plot_examples
from .pretrain import Base, Stage1, pretrain
from .world import make_scenes


@dataclass(frozen=True)
class Stage2:
    """The adapter recipe (see the README, "The demo's recipe")."""

    epochs: int
    batch_size: int
    lr: float
    lora_r: int
    rehearsal_ratio: float  # fraction of training items with an English caption instead of a Turkish one


FULL = (Stage1(n_train=3000, n_val=300, n_test=500, architecture="demo-small", epochs=16,
               batch_size=64, lr=1e-3, weight_decay=0.1),
        Stage2(epochs=4, batch_size=64, lr=5e-3, lora_r=8, rehearsal_ratio=0.5))
QUICK = (Stage1(n_train=600, n_val=60, n_test=100, architecture="demo-tiny", epochs=10,
                batch_size=32, lr=2e-3, weight_decay=0.1),
         Stage2(epochs=6, batch_size=32, lr=5e-3, lora_r=8, rehearsal_ratio=0.4))
EXAMPLES = 6  # test scenes in the example grid


def run_demo(output: Path, seed: int = 0, quick: bool = False) -> dict:
    started = time.perf_counter()
    stage1, stage2 = QUICK if quick else FULL
    output = Path(output)
    adapter = output / "adapter"
    _clear_previous_run(adapter)

    base = pretrain(stage1, seed, progress=not quick)
    print("stage 1: " + ("taken from the cache" if base.cached else f"done in {base.summary['seconds']:.0f} s")
          + f" ({base.folder})")
    print("stage 2: a LoRA adapter on the Turkish captions, through `turkclip train`'s training loop")
    try:
        train(TrainConfig(
            captions=str(base.world.turkish), images=str(base.world.images), output=str(adapter),
            model=str(base.folder), lang="tr", epochs=stage2.epochs, batch_size=stage2.batch_size, lr=stage2.lr,
            lora=LoraSettings(r=stage2.lora_r, alpha=stage2.lora_r, towers="text"), train_token_rows="new",
            rehearsal_captions=str(base.world.english), rehearsal_ratio=stage2.rehearsal_ratio,
            precision="fp32", seed=seed, progress=not quick))
    except Interrupted:
        raise Interrupted("interrupted during stage 2; run the same `turkclip demo` again") from None

    result = _compare(base, stage1, adapter, output, seed)
    plot_curves({"stage 1 (English, every weight)": _records(base.folder / "metrics.jsonl"),
                 "stage 2 (Turkish, LoRA)": _records(adapter / "metrics.jsonl")}, output / "curves.png")
    result.update(seconds=time.perf_counter() - started, seed=seed, quick=quick, world=str(base.world.images.parent),
                  stage1={"folder": str(base.folder), "cached": base.cached, "seconds": base.summary["seconds"],
                          **asdict(stage1)}, stage2=asdict(stage2))
    (output / "demo.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))

    print(format_table({k: {**result["turkish"][k], "english": result["english"][k]} for k in ("before", "after")}))
    tr, en, held = (result[k] for k in ("turkish", "english", "heldout_pairs"))
    r1 = lambda m: m["text_to_image"]["R@1"]  # noqa: E731
    print(f"Turkish text→image R@1 {r1(tr['before']):.1f} → {r1(tr['after']):.1f}"
          f" (on scenes with colour–shape pairs never seen in Turkish training: {r1(held['before']):.1f} →"
          f" {r1(held['after']):.1f}); English {r1(en['before']):.1f} → {r1(en['after']):.1f}")
    print(f"demo finished in {result['seconds']:.0f} s: {output / 'demo.json'}, {adapter}, {output / 'curves.png'},"
          f" {output / 'examples.png'}")
    w = base.world
    print(f"the same numbers from the CLI: turkclip evaluate --model {base.folder} --adapter {adapter} --captions"
          f" {w.turkish} --images {w.images} --split test --english-captions {w.english} --compare --precision fp32")
    return result


def _clear_previous_run(adapter: Path) -> None:
    """A new demo replaces the adapter of an earlier one in the same --output, and nothing else."""
    if not adapter.exists():
        return
    if not (adapter / "train_config.json").is_file():
        raise TurkclipError(f"{adapter} exists and is not a demo adapter; choose another --output")
    shutil.rmtree(adapter)


def _compare(base: Base, stage1: Stage1, adapter: Path, output: Path, seed: int) -> dict:
    """Test-split metrics before and after the adapter, and the example grid."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache_dir = cache.default_dir()
    clip = load_clip(str(base.folder))
    test = load_image_text_set(read_captions(base.world.turkish, "tr").split("test"), base.world.images,
                               clip.preprocess, cache_dir=cache_dir)
    sets = {"turkish": test, "english": test.with_captions(read_captions(base.world.english, "en")),
            "heldout_pairs": _only_heldout(test, base, stage1, seed)}
    # The adapter is text-only: the image tower is the same before and after, one image pass serves all.
    images = cached_image_embeddings(clip.model, test, clip.preprocess, device, "fp32", cache_dir)
    texts, owner = test.texts()

    def measure(model) -> tuple[dict, torch.Tensor]:
        metrics = {name: evaluate(model, clip.text, clip.preprocess, data, device, image_emb=images)
                   for name, data in sets.items()}
        return metrics, embed_texts(model, clip.text, texts, "tr", device)

    before, text_before = measure(clip.model)
    after, text_after = measure(load_adapter(clip.model, adapter).to(device))

    # The grid: for a few scenes, the caption of the whole test set that the model ranks first.
    image_n = F.normalize(images, dim=-1)
    top = {k: (image_n @ F.normalize(t, dim=-1).t()).argmax(1) for k, t in (("before", text_before),
                                                                            ("after", text_after))}
    picks = torch.linspace(0, len(test) - 1, EXAMPLES).long().tolist()
    plot_examples([Example(test.pixels[i], test.captions[i][0],
                           *[(texts[top[k][i]], owner[top[k][i]].item() == i) for k in ("before", "after")])
                   for i in picks], output / "examples.png")
    return {name: {"before": before[name], "after": after[name]} for name in sets}


def _only_heldout(test: ImageTextSet, base: Base, stage1: Stage1, seed: int) -> ImageTextSet:
    """The test set with captions only on scenes that show a colour–shape pair held out of Turkish training
    (every test image stays in the gallery)."""
    heldout = set(base.world.heldout)
    scenes = make_scenes(seed, stage1.n_train, stage1.n_val, stage1.n_test, base.world.heldout)
    names = {f"{i:05d}.png" for i, (_, scene) in enumerate(scenes) if scene.pairs() & heldout}
    return replace(test, captions=[caps if name in names else [] for name, caps in zip(test.filenames, test.captions)])


def _records(metrics_jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line]
