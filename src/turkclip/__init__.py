"""turkclip: teach CLIP a new language with LoRA adapters.

The library: data readers, model loading, adapters, loss, metrics, evaluation and
prediction. The command-line tool and the training loop live in `turkclip_train`.
"""

from .adapters import LoraSettings, attach_lora, load_adapter
from .data.captions import CaptionSet, read_captions
from .data.dataset import ImageTextSet, load_image_text_set
from .data.flip_caption import flip_caption
from .errors import TurkclipError
from .evaluate import evaluate
from .loss import bank_loss, clip_loss
from .metrics import retrieval_metrics
from .model import DEFAULT_MODEL, Clip, load_clip, save_clip
from .predict import predict

__all__ = [
    "DEFAULT_MODEL", "CaptionSet", "Clip", "ImageTextSet", "LoraSettings", "TurkclipError", "attach_lora",
    "bank_loss", "clip_loss", "evaluate", "flip_caption", "load_adapter", "load_clip", "load_image_text_set", "predict",
    "read_captions", "retrieval_metrics", "save_clip",
]
__version__ = "0.1.0"
