"""`turkclip export-onnx`: a base CLIP with its road as two ONNX graphs, a tokenizer and a manifest.

    image.onnx            pixel_values float32 [N, 3, S, S] → embeddings float32 [N, D], L2-normalised
    text.onnx             input_ids, attention_mask int64 [N, T] → embeddings float32 [N, D], L2-normalised
    tokenizer.json        the text side's tokenizer (padding and truncation are set from the manifest)
    turkclip-onnx.json    the manifest (see manifest.py)

The text graph is the whole text side of the road: CLIP's text tower with any LoRA merged into its weights, or
a swapped tower's encoder + mean pooling + the Dense projection into CLIP's space (the projection that optimum's
sentence-transformers export leaves out, which gives vectors from another space). The image graph is the base's
image tower (with the adapter's LoRA merged, when it has one for that tower).

Graphs come from torch.onnx's TorchScript exporter (`dynamo=False`): with torch 2.13 and transformers 5.23 it
exports both towers of CLIPModel and BERT-style towers with dynamic batch and length, needs no onnxscript, and
takes about a sixth of the dynamo exporter's time. Every export is checked before it is kept: the ONNX embeddings
of probe captions and images must equal torch's within cosine 0.9999 (int8 weights: reported, not required).
`int8` quantises the weights of both graphs dynamically (onnxruntime.quantization: int8 MatMul/Gemm weights,
activations quantised per call), about a quarter of the size.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from turkclip.embedding.embed import features
from turkclip.errors import TurkclipError
from turkclip.models.text import CASE_FOLDS
from turkclip.onnx.manifest import Export, read_manifest, write_manifest
from turkclip.search.language import road_language
from turkclip.search.photo_index import model_id

OPSET = 17
MIN_COSINE = 0.9999
# captions that exercise Turkish case folding (İ/I), punctuation, English and a long, truncated one
PROBES = ["İstanbul'da kırmızı bir araba", "ISPARTA'DA İKİ KÖPEK", "a dog runs on the beach",
          "sahilde koşan, zıplayan ve havlayan üç küçük beyaz köpek " * 12]


class _Side(torch.nn.Module):
    """One side of a model as a graph: its features, L2-normalised."""

    def __init__(self, model, side: str):
        super().__init__()
        self.model, self.side = model, side

    def forward(self, *inputs):
        if self.side == "image":
            out = self.model.get_image_features(pixel_values=inputs[0])
        else:
            out = self.model.get_text_features(input_ids=inputs[0], attention_mask=inputs[1])
        return F.normalize(features(out), dim=-1)


def export_onnx(output: str | Path, model: str, adapter: str | None = None, text_model: str | None = None,
                tokenizer: str | None = None, int8: bool = False) -> tuple[Export, dict[str, float]]:
    """Export `model` with its road into the new folder `output`; returns the export and the lowest cosine between
    ONNX and torch embeddings of the probes, per side."""
    from turkclip.roads import load_clip
    from turkclip.search.torch_encoder import TorchEncoder

    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TurkclipError(f"{output} already exists and is not empty; export-onnx writes a new folder")
    clip = load_clip(model, tokenizer, text_model=text_model, adapter=adapter)
    if adapter:  # one set of weights: LoRA (and trained token rows) folded in, as `turkclip merge` does
        clip.model = clip.model.merge_and_unload()
    reference = TorchEncoder(clip)
    work = output.with_name(f".{output.name}.partial")  # renamed to output once verified
    shutil.rmtree(work, ignore_errors=True)  # left by a killed export
    work.mkdir(parents=True)
    try:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (2, 3, reference.image_size, reference.image_size), dtype=np.uint8)
        tokens = clip.text(PROBES[:2], "tr")  # two lengths: the graph is traced with padding
        _export(_Side(reference.model, "image"), (clip.preprocess.normalize(torch.from_numpy(pixels)),),
                work / "image.onnx", {"pixel_values": {0: "batch"}})
        _export(_Side(reference.model, "text"), (tokens["input_ids"], tokens["attention_mask"]), work / "text.onnx",
                {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}})
        if int8:
            for name in ("image.onnx", "text.onnx"):
                _quantize(work / name)
        _save_tokenizer(clip.text.tokenizer, work / "tokenizer.json")
        write_manifest(work, _manifest(clip, reference, model, adapter, text_model, tokenizer, int8))
        cosines = _agreement(reference, work, pixels)
        if not int8 and min(cosines.values()) < MIN_COSINE:
            raise TurkclipError(f"the ONNX graphs disagree with torch (lowest cosine {min(cosines.values()):.6f} <"
                                f" {MIN_COSINE}): this model does not export faithfully; please report it")
        if output.exists():
            output.rmdir()  # empty (checked above)
        work.rename(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return read_manifest(output), cosines


def _export(module: torch.nn.Module, inputs: tuple, path: Path, dynamic: dict) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-level shape checks, the legacy exporter's notice
        torch.onnx.export(module.eval(), inputs, str(path), input_names=list(dynamic), output_names=["embeddings"],
                          dynamic_axes={**dynamic, "embeddings": {0: "batch"}}, opset_version=OPSET, dynamo=False)


def _quantize(path: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph first: the retrieval cost without it is measured
    try:
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    quantized.replace(path)


def _save_tokenizer(tokenizer, path: Path) -> None:
    """The tokenizers-library object transformers runs (with the normaliser turkclip set on it), as it was loaded:
    without padding or truncation, which the runtime sets from the manifest."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(path))


def _manifest(clip, reference, model: str, adapter: str | None, text_model: str | None, tokenizer: str | None,
              int8: bool) -> dict:
    tok, pre = clip.text.tokenizer, clip.preprocess
    tower = getattr(clip.text, "tower", None)  # a swapped text tower's TowerText; CLIP's TextEncoder has none
    return {
        "road": "adapter" if adapter else "text-tower" if text_model else "base",
        "model": model_id(model), "adapter": model_id(adapter), "text_model": model_id(text_model),
        "weights": "int8" if int8 else "fp32", "lang": road_language(model, adapter, text_model, tokenizer),
        "dim": reference.dim, "logit_scale": reference.logit_scale,
        "image": {
            "file": "image.onnx", "input": "pixel_values", "output": "embeddings (L2-normalised)",
            "size": pre.size, "mean": list(pre.mean), "std": list(pre.std),
            "how": "RGB (transparency composited onto white); shortest edge resized to size with Pillow's bicubic"
                   " (reducing_gap None), the other edge int(size * long / short); centre crop size × size at"
                   " ((h - size) // 2, (w - size) // 2); uint8 → float32 / 255, then (x - mean) / std per channel;"
                   " layout [N, 3, size, size]",
        },
        "text": {
            "file": "text.onnx", "inputs": ["input_ids", "attention_mask"], "output": "embeddings (L2-normalised)",
            "tokenizer": "tokenizer.json", "max_length": clip.text.max_length, "pad_id": tok.pad_token_id,
            "pad_token": tok.pad_token, "padding_side": tok.padding_side, "truncation_side": tok.truncation_side,
            "clip_normalize": tower is None, "case_folds": CASE_FOLDS if tower is None else {},
            "prompt": tower.prompt if tower is not None else "",
            "how": ("NFC; whitespace runs → one space, stripped; for a language in case_folds its replacements, then"
                    " lower case; then the tokenizer (truncated at max_length, padded to the longest)")
                   if tower is None else "prompt + the text as typed; then the tokenizer (truncated at max_length,"
                                         " padded to the longest)",
        },
        "exported_with": {"torch": torch.__version__, "opset": OPSET, "exporter": "torch.onnx (TorchScript)"},
    }


def _agreement(reference, folder: Path, pixels: np.ndarray) -> dict[str, float]:
    """The lowest cosine between ONNX and torch embeddings of the probe captions and images, per side."""
    from turkclip.onnx.runtime import OnnxEncoder

    exported = OnnxEncoder(folder)
    text = (exported.texts(PROBES) * reference.texts(PROBES)).sum(-1).min()
    image = (exported.pixels(pixels) * reference.pixels(pixels)).sum(-1).min()
    return {"text": float(text), "image": float(image)}
