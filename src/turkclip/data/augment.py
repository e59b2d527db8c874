"""Image augmentations that keep the caption true, as pure functions of (seed, epoch, image).

A caption describes the whole picture, so only mild changes are safe:

* `crop`  — random resized crop (the only augmentation open_clip uses): a box covering a random
  fraction of the image (`crop_scale`, default 0.9–1.0 of its area as in open_clip, aspect
  3:4–4:3), resized back to full size (bilinear, antialiased). Captions are not changed, so the
  crop must not cut away what a caption names: in the demo world 0.6–1.0 cost 15 points of R@1
  (bench/RESULTS.md), because its shapes sit near the left and right edges.
* `flip`  — horizontal mirror, half of the time, with the caption's left/right words swapped
  (`flip_caption`). An item whose caption cannot be swapped safely is never flipped. The coin is
  tossed here (`flip_coin`) and the decision travels with the item (`sampling.Item.flip`).
* `color` — mild brightness/contrast/saturation jitter (±20%, no hue shift). Off unless asked:
  colours are words in captions ("kırmızı", "white"), and even mild jitter can move a colour
  across a word's boundary.

Everything is drawn from a NumPy generator seeded by (seed, what, epoch or view, image), never
from a global RNG: a resumed run redraws exactly the same crops and flips, and the batch order
or the number of processes changes nothing. The pixels are the uint8 [N, 3, S, S] tensors the
project keeps (already CLIP-resized and centre-cropped); the output is uint8 of the same shape.
No torchvision: cropping and resizing are tensor indexing and `F.interpolate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from turkclip.data.flip_caption import LANGS as FLIP_LANGS
from turkclip.errors import TurkclipError

OPS = ("crop", "flip", "color")
DEFAULT_CROP_SCALE = (0.9, 1.0)  # open_clip's; 0.6 cut captioned shapes away in the demo world
CROP_RATIO = (3 / 4, 4 / 3)
COLOR_STRENGTH = 0.2  # brightness, contrast and saturation factors drawn from [0.8, 1.2]
_SALT = {"flip": 1, "epoch": 2, "view": 3, "choose-view": 4}


@dataclass(frozen=True)
class AugmentPolicy:
    crop: bool = False
    flip: bool = False
    color: bool = False
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE

    @property
    def active(self) -> bool:
        return self.crop or self.flip or self.color

    @property
    def changes_pixels_beyond_flip(self) -> bool:
        return self.crop or self.color

    def __str__(self) -> str:
        """The canonical spelling, which `parse_policy` reads back (and caches and checkpoints key on)."""
        parts = ([f"crop:{self.crop_scale[0]:g}-{self.crop_scale[1]:g}"] if self.crop else []) + (
            ["flip"] if self.flip else []) + (["color"] if self.color else [])
        return ",".join(parts) or "none"


def parse_policy(text: str, crop_scale: str | tuple[float, float] | None = None,
                 langs: tuple[str, ...] | list[str] = ()) -> AugmentPolicy:
    """'crop,flip' (or a canonical 'crop:0.9-1,flip', or 'none') → AugmentPolicy.

    `crop_scale` ('0.8,1.0') overrides the scale; `langs` are the caption languages of the run,
    checked when `flip` is asked for (captions can only be flipped in Turkish and English)."""
    names = [n.strip() for n in str(text).split(",")]
    if not text or not str(text).strip() or "" in names:
        raise TurkclipError(f"--augment {text!r}: give a comma list of {', '.join(OPS)} (or none), e.g. crop,flip")
    scale = None
    chosen: set[str] = set()
    for name in names:
        op, _, arg = name.partition(":")
        if op not in OPS + ("none",):
            raise TurkclipError(f"--augment: unknown augmentation {op!r}; choose from {', '.join(OPS)} or none")
        if op in chosen:
            raise TurkclipError(f"--augment: {op!r} is listed twice")
        if arg and op != "crop":
            raise TurkclipError(f"--augment: {op!r} takes no value ({name!r})")
        if arg:
            scale = _parse_scale(arg.replace("-", ","))
        chosen.add(op)
    if "none" in chosen and len(chosen) > 1:
        raise TurkclipError("--augment: 'none' cannot be combined with other augmentations")
    if crop_scale is not None:
        if "crop" not in chosen:
            raise TurkclipError(f"--crop-scale {crop_scale} is for the crop augmentation; add crop to --augment")
        scale = _parse_scale(crop_scale)
    bad = sorted(set(langs) - set(FLIP_LANGS))
    if "flip" in chosen and bad:
        raise TurkclipError(f"--augment flip: captions in {', '.join(bad)} cannot be flipped (left/right words are"
                            f" known in {' and '.join(FLIP_LANGS)} only); leave flip out")
    return AugmentPolicy("crop" in chosen, "flip" in chosen, "color" in chosen, scale or DEFAULT_CROP_SCALE)


def _parse_scale(value: str | tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except ValueError:
        raise TurkclipError(f"--crop-scale {value!r}: give two numbers LO,HI, e.g. 0.9,1.0") from None
    if not 0 < lo <= hi <= 1:
        raise TurkclipError(f"--crop-scale {value!r}: need 0 < LO <= HI <= 1 (fractions of the image's area)")
    return lo, hi


# ---------------------------------------------------------------- deterministic draws


def _rng(what: str, seed: int, key: int, image: int) -> np.random.Generator:
    return np.random.default_rng([_SALT[what], seed % 2**64, key, image])


def flip_coin(seed: int, epoch: int, image: int) -> bool:
    """Whether image `image` is mirrored in `epoch` (if its caption allows it): a fair coin per (seed, epoch, image)."""
    return bool(_rng("flip", seed, epoch, image).random() < 0.5)


def choose_view(seed: int, epoch: int, image: int, views: int) -> int:
    """Which of an image's cached augmented views text-only training uses in `epoch`."""
    return int(_rng("choose-view", seed, epoch, image).integers(views))


@dataclass(frozen=True)
class Draw:
    box: tuple[int, int, int, int] | None  # top, left, height, width of the crop; None: whole image
    color: tuple[float, float, float] | None  # brightness, contrast, saturation factors; None: unchanged


def draw(policy: AugmentPolicy, seed: int, image: int, size: int, epoch: int | None = None,
         view: int | None = None) -> Draw:
    """The crop box and colour factors of one image in one epoch (both towers) or one cached view (text only)."""
    what, key = ("epoch", epoch) if view is None else ("view", view)
    rng = _rng(what, seed, key, image)
    box = _crop_box(rng, size, policy.crop_scale) if policy.crop else None
    color = tuple(float(f) for f in rng.uniform(1 - COLOR_STRENGTH, 1 + COLOR_STRENGTH, 3)) if policy.color else None
    return Draw(box, color)


def _crop_box(rng: np.random.Generator, size: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params on a square image: 10 tries, else the whole image."""
    area = size * size
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= size and 0 < h <= size:
            return int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1)), h, w
    return 0, 0, size, size


# ---------------------------------------------------------------- pixels


def apply(pixels: torch.Tensor, d: Draw, flip: bool) -> torch.Tensor:
    """One uint8 [3, S, S] image → its augmented uint8 [3, S, S]: crop and resize, colour, mirror."""
    size = pixels.shape[-1]
    x = pixels
    if d.box is not None:
        top, left, h, w = d.box
        x = x[:, top : top + h, left : left + w]
    if d.box is not None or d.color is not None:
        x = x.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        if d.color is not None:
            x = _jitter(x, *d.color)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.flip(-1) if flip else x


def _jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """torchvision's ColorJitter without hue, in a fixed order, on float pixels in [0, 255]."""
    x = (x * brightness).clamp(0, 255)
    gray = _gray(x)
    x = ((x - gray.mean()) * contrast + gray.mean()).clamp(0, 255)
    gray = _gray(x)
    return (gray + (x - gray) * saturation).clamp(0, 255)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def augment_batch(pixels: torch.Tensor, images: list[int], flips: list[bool], policy: AugmentPolicy, seed: int,
                  epoch: int | None = None, view: int | None = None) -> torch.Tensor:
    """`pixels[images]`, each augmented for (seed, epoch or view, image); `flips` says which to mirror."""
    return augment_rows(pixels[torch.tensor(images, dtype=torch.long)], images, flips, policy, seed, epoch, view)


def augment_rows(rows: torch.Tensor, images: list[int], flips: list[bool], policy: AugmentPolicy, seed: int,
                 epoch: int | None = None, view: int | None = None) -> torch.Tensor:
    """Rows already read (row j is image `images[j]`), each augmented for (seed, epoch or view, image)."""
    size = rows.shape[-1]
    out = [apply(row, draw(policy, seed, i, size, epoch, view), f) for row, i, f in zip(rows, images, flips)]
    return torch.stack(out) if out else rows[:0]


def batch_pixels(pixels: torch.Tensor, items, policy: AugmentPolicy, seed: int, epoch: int) -> torch.Tensor:
    """The uint8 pixels of a training batch (both towers): plain when the policy is none."""
    images = [it.image for it in items]
    if not policy.active:
        return pixels[torch.tensor(images)]
    return augment_batch(pixels, images, [it.flip for it in items], policy, seed, epoch=epoch)
