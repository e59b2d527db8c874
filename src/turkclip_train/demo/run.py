"""`turkclip demo`: show, offline and in minutes, that CLIP can be taught Turkish — by either road.

1. A synthetic world of coloured shapes with English and Turkish captions (world.py).
2. Stage 1 stands in for OpenAI's pretraining: a small CLIP trained on English only (pretrain.py, cached).
3. Stage 2 is the product itself (routes.py), by `--route`:
   - lora: `train()` fits a text-tower LoRA adapter, plus the embedding rows of the Turkish-only word
     pieces, on the Turkish captions with some English captions mixed in;
   - text-tower: `train()` aligns a pretrained multilingual encoder (e5-small) to the stage-1 image space;
   - both: the two side by side, in one table and one figure.
4. `evaluate()` measures held-out test scenes in Turkish and English, before and after, loading what
   stage 2 wrote from its folder the way `turkclip evaluate --adapter / --text-model` does.

The demo runs on one CPU thread: with more, torch's CPU training sums gradients in another order
(pretrain.py says where) and a seed's numbers would depend on the machine's core count.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip import cache
from turkclip.data.captions import read_captions
from turkclip.data.dataset import ImageTextSet, load_image_text_set
from turkclip.embedding.embed import cached_image_embeddings, embed_texts
from turkclip.errors import TurkclipError
from turkclip.evaluation.evaluate import evaluate
from turkclip.models.clip import Clip
from turkclip.roads import load_clip
from turkclip_train.logs import plot_curves
from turkclip_train.report import format_table

from .figures import Example, plot_examples, plot_routes
from .pretrain import Base, Stage1, one_thread, pretrain
from .routes import LoraRecipe, TowerRecipe, train_lora, train_tower
from .world import make_scenes

FULL = (Stage1(n_train=3000, n_val=300, n_test=500, architecture="demo-small", epochs=16,
               batch_size=64, lr=1e-3, weight_decay=0.1),
        LoraRecipe(epochs=4, batch_size=64, lr=5e-3, lora_r=8, rehearsal_ratio=0.5),
        TowerRecipe(epochs=4, batch_size=16, encoder_lr=3e-4, head_lr=1e-3, text_layers=4))
QUICK = (Stage1(n_train=600, n_val=60, n_test=100, architecture="demo-tiny", epochs=10,
                batch_size=32, lr=2e-3, weight_decay=0.1),
         LoraRecipe(epochs=6, batch_size=32, lr=5e-3, lora_r=8, rehearsal_ratio=0.4),
         TowerRecipe(epochs=3, batch_size=16, encoder_lr=3e-4, head_lr=1e-3, text_layers=2))
EXAMPLES = 6  # test scenes in the example grid
ROUTES = {"lora": "adapter", "text-tower": "text-tower"}  # route: its output subfolder
LABELS = {"lora": "LoRA adapter", "text-tower": "text tower"}


def run_demo(output: Path, seed: int = 0, quick: bool = False, route: str = "lora") -> dict:
    with one_thread():  # the same numbers on 1 core or 64 (see the module docstring)
        return _run_demo(output, seed, quick, route)


def _run_demo(output: Path, seed: int, quick: bool, route: str) -> dict:
    started = time.perf_counter()
    stage1, lora_recipe, tower_recipe = QUICK if quick else FULL
    routes = list(ROUTES) if route == "both" else [route]
    if not set(routes) <= set(ROUTES):
        raise TurkclipError(f"--route must be lora, text-tower or both, not {route!r}")
    output = Path(output)
    for r in routes:
        _clear_previous_run(output / ROUTES[r])

    base = pretrain(stage1, seed, progress=not quick)
    print("stage 1: " + ("taken from the cache" if base.cached else f"done in {base.summary['seconds']:.0f} s")
          + f" ({base.folder})")
    trained, seconds = {}, {}
    for r in routes:
        t0 = time.perf_counter()
        train_route = train_lora if r == "lora" else train_tower
        recipe = lora_recipe if r == "lora" else tower_recipe
        trained[r] = train_route(base, recipe, output / ROUTES[r], seed, progress=not quick)
        seconds[r] = time.perf_counter() - t0

    per_route = _compare(base, stage1, trained, output, seed)
    result = dict(per_route[routes[0]])  # the first route's numbers under today's keys
    if len(routes) > 1:
        result["routes"] = per_route
        plot_routes({LABELS[r]: m for r, m in per_route.items()}, output / "routes.png")
    plot_curves({"stage 1 (English, every weight)": _records(base.folder / "metrics.jsonl"),
                 **{f"stage 2 ({LABELS[r]})": _records(output / ROUTES[r] / "metrics.jsonl") for r in routes}},
                output / "curves.png")
    recipes = {"lora": asdict(lora_recipe), "text-tower": asdict(tower_recipe)}
    result.update(seconds=time.perf_counter() - started, route=route, route_seconds=seconds, seed=seed, quick=quick,
                  world=str(base.world.images.parent),
                  stage1={"folder": str(base.folder), "cached": base.cached, "seconds": base.summary["seconds"],
                          **asdict(stage1)},
                  stage2=recipes[routes[0]] if len(routes) == 1 else {r: recipes[r] for r in routes})
    (output / "demo.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))

    first = per_route[routes[0]]
    columns = {"before": {**first["turkish"]["before"], "english": first["english"]["before"]}}
    for r in routes:
        columns[LABELS[r] if len(routes) > 1 else "after"] = {**per_route[r]["turkish"]["after"],
                                                              "english": per_route[r]["english"]["after"]}
    print(format_table(columns))
    r1 = lambda m: m["text_to_image"]["R@1"]  # noqa: E731
    for r in routes:
        tr, en, held = (per_route[r][k] for k in ("turkish", "english", "heldout_pairs"))
        print(f"{LABELS[r]}: Turkish text→image R@1 {r1(tr['before']):.1f} → {r1(tr['after']):.1f} (on scenes with"
              f" colour–shape pairs never seen in Turkish training: {r1(held['before']):.1f} → {r1(held['after']):.1f});"
              f" English {r1(en['before']):.1f} → {r1(en['after']):.1f}")
    pictures = [output / f for f in ("curves.png", "examples.png", "routes.png") if (output / f).exists()]
    print(f"demo finished in {result['seconds']:.0f} s: {output / 'demo.json'}, "
          + ", ".join([str(output / ROUTES[r]) for r in routes] + [str(p) for p in pictures]))
    w = base.world
    flags = " ".join(f"--adapter {output / ROUTES[r]}" if r == "lora" else f"--text-model {output / ROUTES[r]}"
                     for r in routes)
    print(f"the same numbers from the CLI: turkclip evaluate --model {base.folder} {flags} --captions"
          f" {w.turkish} --images {w.images} --split test --english-captions {w.english} --compare --precision fp32")
    _start_here(output, base, routes)
    return result


def _start_here(output: Path, base: Base, routes: list[str]) -> None:
    """Put what the demo made where a new user's next commands find it: the stage-1 base as `base/` and the
    held-out test scenes as `photos/`, then print those commands (the README's start-here path)."""
    shutil.rmtree(output / "base", ignore_errors=True)
    shutil.copytree(base.folder, output / "base", ignore=shutil.ignore_patterns("checkpoint", "*.jsonl", "*.png"))
    photos = output / "photos"
    photos.mkdir(exist_ok=True)
    for record in read_captions(base.world.turkish, "tr").split("test").records:
        if not (photos / record.filename).exists():
            shutil.copy2(base.world.images / record.filename, photos / record.filename)
    road = f"--adapter {output / ROUTES['lora']}" if "lora" in routes else f"--text-model {output / ROUTES['text-tower']}"
    print(f"next, search the demo's test scenes in Turkish with the model it just trained:\n"
          f"  turkclip index {photos} --model {output / 'base'} {road} --output {output / 'index'}\n"
          f"  turkclip search {output / 'index'} \"iki kırmızı daire\"\n"
          f"  turkclip serve {output / 'index'} --photos {photos}")


def _clear_previous_run(adapter: Path) -> None:
    """A new demo replaces the adapter of an earlier one in the same --output, and nothing else."""
    if not adapter.exists():
        return
    if not (adapter / "train_config.json").is_file():
        raise TurkclipError(f"{adapter} exists and is not the output of an earlier demo; choose another --output")
    shutil.rmtree(adapter)


def _compare(base: Base, stage1: Stage1, trained: dict[str, Clip], output: Path, seed: int) -> dict:
    """Test-split metrics before stage 2 and after it by each road, and the example grid."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache_dir = cache.default_dir()
    clip = load_clip(str(base.folder))
    test = load_image_text_set(read_captions(base.world.turkish, "tr").split("test"), base.world.images,
                               clip.preprocess, cache_dir=cache_dir)
    sets = {"turkish": test, "english": test.with_captions(read_captions(base.world.english, "en")),
            "heldout_pairs": _only_heldout(test, base, stage1, seed)}
    # Both roads keep the stage-1 image tower: one image pass serves every measurement.
    images = cached_image_embeddings(clip.model, test, clip.preprocess, device, "fp32", cache_dir)
    texts, owner = test.texts()

    def measure(route: Clip) -> tuple[dict, torch.Tensor]:
        model = route.model.to(device)
        metrics = {name: evaluate(model, route.text, clip.preprocess, data, device, image_emb=images)
                   for name, data in sets.items()}
        return metrics, embed_texts(model, route.text, texts, "tr", device)

    before, text_before = measure(clip)
    after = {r: measure(route) for r, route in trained.items()}

    # The grid: for a few scenes, the caption of the whole test set that each model ranks first.
    image_n = F.normalize(images, dim=-1)
    ranked = {"before": text_before, **{("after" if len(after) == 1 else LABELS[r]): t for r, (_, t) in after.items()}}
    top = {k: (image_n @ F.normalize(t, dim=-1).t()).argmax(1) for k, t in ranked.items()}
    picks = torch.linspace(0, len(test) - 1, EXAMPLES).long().tolist()
    plot_examples([Example(test.pixels[i], test.captions[i][0],
                           {k: (texts[top[k][i]], owner[top[k][i]].item() == i) for k in ranked})
                   for i in picks], output / "examples.png")
    return {r: {name: {"before": before[name], "after": metrics[name]} for name in sets}
            for r, (metrics, _) in after.items()}


def _only_heldout(test: ImageTextSet, base: Base, stage1: Stage1, seed: int) -> ImageTextSet:
    """The test set with captions only on scenes that show a colour–shape pair held out of Turkish training
    (every test image stays in the gallery)."""
    heldout = set(base.world.heldout)
    scenes = make_scenes(seed, stage1.n_train, stage1.n_val, stage1.n_test, base.world.heldout)
    names = {f"{i:05d}.png" for i, (_, scene) in enumerate(scenes) if scene.pairs() & heldout}
    return replace(test, captions=[caps if name in names else [] for name, caps in zip(test.filenames, test.captions)])


def _records(metrics_jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line]
