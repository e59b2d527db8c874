"""A small synthetic world for the offline demo.

Scenes are a background colour plus 1-3 groups of identical shapes.  Each
scene is rendered to a small PNG and described in English and Turkish from the
same scene description.  `build_world` writes Karpathy-style caption files and an
English–Turkish parallel corpus of the train scenes (`parallel_pairs`: the translation corpus a
user would bring to the text-tower road); `build_tokenizer` trains a small byte-level BPE
tokenizer on caption text.
"""

from __future__ import annotations

import json
import math
import os
import random
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageDraw

VERSION = 1
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# English name -> (Turkish name, RGB).  Object colours and background colours
# overlap on purpose so colour words alone do not say what is a background.
COLOURS = {
    "red": ("kırmızı", (220, 30, 30)),
    "blue": ("mavi", (30, 70, 225)),
    "green": ("yeşil", (30, 165, 50)),
    "yellow": ("sarı", (245, 220, 30)),
    "purple": ("mor", (140, 40, 180)),
    "orange": ("turuncu", (250, 140, 20)),
    "white": ("beyaz", (250, 250, 250)),
    "black": ("siyah", (15, 15, 15)),
}
BACKGROUNDS = {
    "gray": ("gri", (128, 128, 128)),
    "pink": ("pembe", (245, 175, 200)),
    "white": ("beyaz", (250, 250, 250)),
    "black": ("siyah", (15, 15, 15)),
    "yellow": ("sarı", (245, 220, 30)),
}
SHAPES = {"circle": "daire", "square": "kare", "triangle": "üçgen", "star": "yıldız"}
SIZES = {"small": ("küçük", 0.055), "big": ("büyük", 0.08)}
COUNTS = {1: ("a", "bir"), 2: ("two", "iki"), 3: ("three", "üç")}
# English position phrase, Turkish noun that takes the locative suffix.
POSITIONS = {
    "left": ("on the left", "sol"),
    "right": ("on the right", "sağ"),
    "top": ("at the top", "üst"),
    "bottom": ("at the bottom", "alt"),
    "middle": ("in the middle", "orta"),
}
N_HELDOUT = 3


@dataclass(frozen=True)
class Group:
    colour: str
    shape: str
    size: str
    count: int
    position: str


@dataclass(frozen=True)
class Scene:
    background: str
    groups: tuple[Group, ...]

    def key(self) -> str:
        # Canonical description: group order does not make a different scene.
        parts = sorted(f"{g.count}-{g.size}-{g.colour}-{g.shape}-{g.position}" for g in self.groups)
        return self.background + "|" + "|".join(parts)

    def pairs(self) -> set[tuple[str, str]]:
        return {(g.colour, g.shape) for g in self.groups}


@dataclass(frozen=True)
class WorldFiles:
    images: Path  # folder with the PNGs
    english: Path  # captions_en.json
    turkish: Path  # captions_tr.json
    parallel: Path  # parallel_en_tr.tsv: English<TAB>Turkish caption pairs of the train scenes
    heldout: list[tuple[str, str]]  # held-out (colour, shape) combos, English names


# ---------------------------------------------------------------- Turkish

BACK_VOWELS, FRONT_VOWELS = "aıou", "eiöü"
VOICELESS = "çfhkpsşt"  # "fıstıkçı şahap"


def last_vowel(word: str) -> str:
    for ch in reversed(word):
        if ch in BACK_VOWELS + FRONT_VOWELS:
            return ch
    raise ValueError(f"no vowel in {word!r}")


def locative(word: str) -> str:
    """sol -> solda, üst -> üstte, alt -> altta, zemin -> zeminde."""
    vowel = "a" if last_vowel(word) in BACK_VOWELS else "e"
    consonant = "t" if word[-1] in VOICELESS else "d"
    return word + consonant + vowel


def plural(word: str) -> str:
    """şekil -> şekiller, daire -> daireler, plan -> planlar."""
    return word + ("lar" if last_vowel(word) in BACK_VOWELS else "ler")


# ---------------------------------------------------------------- captions


def join(items: list[str], word: str) -> str:
    """["a", "b", "c"] -> "a, b and c" (or "ve")."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def english_object(g: Group, with_size: bool = True) -> str:
    words = ([g.size] if with_size else []) + [g.colour, g.shape + ("s" if g.count > 1 else "")]
    if g.count == 1:
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article] + words)
    return " ".join([COUNTS[g.count][0]] + words)


def turkish_object(g: Group, with_size: bool = True) -> str:
    # After a number Turkish keeps the noun singular: "iki kırmızı daire".
    # Indefinite "bir" goes between the adjectives and the noun: "küçük mavi bir kare".
    adjectives = ([SIZES[g.size][0]] if with_size else []) + [COLOURS[g.colour][0]]
    noun = SHAPES[g.shape]
    if g.count == 1:
        return " ".join(adjectives + ["bir", noun])
    return " ".join([COUNTS[g.count][1]] + adjectives + [noun])


def english_captions(scene: Scene) -> list[str]:
    bg = scene.background
    placed = [f"{english_object(g)} {POSITIONS[g.position][0]}" for g in scene.groups]
    short = [english_object(g, with_size=False) for g in scene.groups]
    there = "there is" if scene.groups[0].count == 1 else "there are"
    total = sum(g.count for g in scene.groups)
    shapes = "shapes" if total > 1 else "shape"
    return [
        f"{join(placed, 'and')}, on a {bg} background",
        f"a {bg} picture with {join(placed, 'and')}",
        f"on a {bg} background {there} {join(placed, 'and')}",
        f"the {shapes} on the {bg} background: {join(short, 'and')}",
    ]


def turkish_captions(scene: Scene) -> list[str]:
    bg = BACKGROUNDS[scene.background][0]
    placed = [f"{locative(POSITIONS[g.position][1])} {turkish_object(g)}" for g in scene.groups]
    short = [turkish_object(g, with_size=False) for g in scene.groups]
    total = sum(g.count for g in scene.groups)
    shapes = plural("şekil") if total > 1 else "şekil"
    return [
        f"{bg} zemin üzerinde {join(placed, 've')}",
        f"{join(placed, 've')} bulunan {bg} bir resim",
        f"{bg} arka {locative('plan')} {join(placed, 've')} var",
        f"{bg} {locative('zemin')}ki {shapes}: {join(short, 've')}",
    ]


# ---------------------------------------------------------------- scenes


def choose_heldout(seed: int) -> list[tuple[str, str]]:
    """A few (colour, shape) pairs with distinct colours and distinct shapes."""
    rng = random.Random(f"heldout-{seed}")
    colours = rng.sample(sorted(COLOURS), N_HELDOUT)
    shapes = rng.sample(sorted(SHAPES), N_HELDOUT)
    return list(zip(colours, shapes))


def random_scene(rng: random.Random, force: tuple[str, str] | None = None) -> Scene:
    n_groups = rng.choices([1, 2, 3], weights=[3, 4, 3])[0]
    backgrounds = [b for b in sorted(BACKGROUNDS) if force is None or b != force[0]]
    background = rng.choice(backgrounds)
    positions = rng.sample(sorted(POSITIONS), n_groups)
    used: set[tuple[str, str]] = set()
    groups = []
    for i, position in enumerate(positions):
        if i == 0 and force is not None:
            pair = force
        else:
            while True:
                pair = (rng.choice(sorted(c for c in COLOURS if c != background)), rng.choice(sorted(SHAPES)))
                if pair not in used:
                    break
        used.add(pair)
        groups.append(Group(pair[0], pair[1], rng.choice(sorted(SIZES)), rng.choice([1, 2, 3]), position))
    return Scene(background, tuple(groups))


def make_scenes(seed: int, n_train: int, n_val: int, n_test: int, heldout: list[tuple[str, str]]):
    """Return [(split, scene)] with no scene description repeated anywhere."""
    rng = random.Random(f"scenes-{seed}")
    seen: set[str] = set()
    out = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        made = 0
        while made < n:
            # Every 4th val/test scene contains a held-out pair, so the
            # generalisation check always has material to look at.
            force = heldout[(made // 4) % len(heldout)] if split != "train" and made % 4 == 0 else None
            scene = random_scene(rng, force)
            if scene.key() in seen:
                continue
            seen.add(scene.key())
            out.append((split, scene))
            made += 1
    return out


def parallel_pairs(scenes: list[tuple[str, Scene]], heldout: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    """One (English, Turkish) translation per train scene whose Turkish captions are trained on — no val or test
    scene, and no scene that shows a held-out colour–shape pair (kept out of Turkish training) — its caption
    template drawn at random: a corpus of translated captions, one per scene, ~2,400 pairs for 3,000 scenes."""
    held = set(heldout)
    rng = random.Random(f"parallel-{seed}")
    return [pairs[rng.randrange(len(pairs))] for split, scene in scenes if split == "train" and not scene.pairs() & held
            for pairs in [list(zip(english_captions(scene), turkish_captions(scene)))]]


def write_parallel(path: Path, pairs: list[tuple[str, str]]) -> None:
    """A TSV as translation corpora come: an `en<TAB>tr` header, one pair per line (written atomically)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("en\ttr\n" + "".join(f"{en}\t{tr}\n" for en, tr in pairs), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- rendering

# Slot centres (fractions of the image) for 1, 2 or 3 shapes in each position.
SPREAD = {1: [0.5], 2: [0.38, 0.62], 3: [0.27, 0.5, 0.73]}
MIDDLE = {1: [(0.5, 0.5)], 2: [(0.38, 0.5), (0.62, 0.5)], 3: [(0.38, 0.41), (0.62, 0.41), (0.5, 0.62)]}


def slots(position: str, count: int) -> list[tuple[float, float]]:
    if position == "left":
        return [(0.14, y) for y in SPREAD[count]]
    if position == "right":
        return [(0.86, y) for y in SPREAD[count]]
    if position == "top":
        return [(x, 0.14) for x in SPREAD[count]]
    if position == "bottom":
        return [(x, 0.86) for x in SPREAD[count]]
    return MIDDLE[count]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = r * 0.85
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(shape)


def render(scene: Scene, image_size: int = 64, seed: int = 0) -> Image.Image:
    """Draw a scene; small jitter is seeded from the scene and the seed."""
    rng = random.Random(f"render-{seed}-{scene.key()}")
    image = Image.new("RGB", (image_size, image_size), BACKGROUNDS[scene.background][1])
    draw = ImageDraw.Draw(image)
    for g in scene.groups:
        r = SIZES[g.size][1] * image_size
        for x, y in slots(g.position, g.count):
            x += rng.uniform(-0.01, 0.01)
            y += rng.uniform(-0.01, 0.01)
            draw_shape(draw, g.shape, x * image_size, y * image_size, r, COLOURS[g.colour][1])
    return image


def _render_job(job) -> None:
    path, scene, image_size, seed = job
    render(scene, image_size, seed).save(path, format="PNG")


# ---------------------------------------------------------------- world


def build_world(root: Path, seed: int = 0, n_train: int = 3000, n_val: int = 300, n_test: int = 500,
                image_size: int = 64, workers: int = 2) -> WorldFiles:
    root = Path(root)
    images = root / "images"
    files = WorldFiles(images, root / "captions_en.json", root / "captions_tr.json", root / "parallel_en_tr.tsv",
                       choose_heldout(seed))
    args = {"seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size}
    manifest = root / "world.json"
    total = n_train + n_val + n_test

    # Cached: same version and arguments, and every file is still there.
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if (old.get("version") == VERSION and old.get("args") == args and files.english.exists()
                and files.turkish.exists() and all((images / f"{i:05d}.png").exists() for i in range(total))):
            if not files.parallel.exists():  # a world from before the parallel corpus: only that is added
                write_parallel(files.parallel, parallel_pairs(make_scenes(seed, n_train, n_val, n_test, files.heldout),
                                                              files.heldout, seed))
            return files
        manifest.unlink()

    images.mkdir(parents=True, exist_ok=True)
    for old_png in images.glob("*.png"):
        old_png.unlink()

    scenes = make_scenes(seed, n_train, n_val, n_test, files.heldout)
    jobs = [(images / f"{i:05d}.png", scene, image_size, seed) for i, (_, scene) in enumerate(scenes)]
    done = False
    if workers > 1:
        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
            done = True
        except (OSError, BrokenProcessPool):  # no usable multiprocessing here: draw in this process
            pass
    if not done:
        for job in jobs:
            _render_job(job)

    heldout = set(files.heldout)
    for path, captions_of, skip_heldout_train in ((files.english, english_captions, False),
                                                  (files.turkish, turkish_captions, True)):
        entries, sentid = [], 0
        for imgid, (split, scene) in enumerate(scenes):
            if skip_heldout_train and split == "train" and scene.pairs() & heldout:
                continue
            sentences = []
            for raw in captions_of(scene):
                sentences.append({"raw": raw, "sentid": sentid, "imgid": imgid})
                sentid += 1
            entries.append({"split": split, "filename": f"{imgid:05d}.png", "imgid": imgid, "sentences": sentences})
        data = {"dataset": "turkclip-demo", "images": entries}
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    write_parallel(files.parallel, parallel_pairs(scenes, files.heldout, seed))

    # The manifest is written last, so a half-built world is never "complete".
    info = {"version": VERSION, "args": args, "heldout": [list(p) for p in files.heldout]}
    manifest.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return files


# ---------------------------------------------------------------- tokenizer


def build_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 1000) -> None:
    """Train a byte-level BPE tokenizer and save it for AutoTokenizer.

    Ids: 0 = <|startoftext|> (bos), 1 = <|endoftext|> (eos = pad = unk).
    Every encoding is [bos] ... [eos]; byte-level BPE never needs unk.
    model_max_length is 32, or more if a training text would not fit.
    On a small corpus BPE runs out of merges before vocab_size: use len(tokenizer).
    """
    texts = list(texts)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B:1 {EOS}:1", special_tokens=[(BOS, bos), (EOS, eos)])
    longest = max((len(e.ids) for e in tok.encode_batch(texts)), default=0)
    max_length = max(32, -(-longest // 8) * 8)  # round up to a multiple of 8
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   unk_token=EOS, model_max_length=max_length)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
