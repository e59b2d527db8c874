"""turkclip: teach CLIP a new language with LoRA adapters.

The library: data readers, model loading, the two roads to a new language (LoRA adapters on
CLIP's own text tower, or a swapped pretrained text tower), loss, metrics, evaluation and
prediction. The command-line tool and the training loop live in `turkclip_train`.
"""

from .adapters import LoraSettings, attach_lora, load_adapter
from .data.captions import CaptionSet, read_captions
from .data.dataset import ImageTextSet, load_image_text_set
from .errors import TurkclipError
from .evaluate import evaluate
from .loss import bank_loss, clip_loss
from .metrics import retrieval_metrics
from .model import DEFAULT_MODEL, Clip, load_clip, save_clip
from .predict import predict
from .text_tower import SwappedClip, TextTower, load_text_tower, new_text_tower, swap_text_tower

__all__ = [
    "DEFAULT_MODEL", "CaptionSet", "Clip", "ImageTextSet", "LoraSettings", "TurkclipError", "attach_lora",
    "bank_loss", "clip_loss", "evaluate", "load_adapter", "load_clip", "load_image_text_set", "predict",
    "read_captions", "retrieval_metrics", "save_clip", "SwappedClip", "TextTower", "load_text_tower", "new_text_tower",
    "swap_text_tower",
]
__version__ = "0.1.0"
