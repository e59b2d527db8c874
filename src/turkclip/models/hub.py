"""Where a model comes from: a local folder or a Hugging Face hub id, and one-line reasons when it cannot be loaded.

Used by every loader (the base CLIP, text towers), so none of them imports another to share it.

turkclip never runs code that comes with a model: every `from_pretrained` passes `trust_remote_code=False`
(transformers then refuses, instead of asking on the terminal), and a local folder whose configs name classes of
their own (`auto_map`) is refused before transformers reads it (`refuse_remote_code`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from turkclip.errors import TurkclipError

DEFAULT_MODEL = "openai/clip-vit-base-patch32"  # the base every command uses unless --model says otherwise


def offline_kwargs(name: str) -> dict:
    """`from_pretrained` keywords for `name`: read the local Hugging Face cache only when `name` is a hub id and
    the hub is unreachable, instead of a minute of retries and warnings before the same failure."""
    if Path(name).expanduser().exists() or hub_reachable():
        return {}
    return {"local_files_only": True}


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (any HTTP status), asked once per process."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # DNS failure, refused, timed out, proxy error...
        return False
    return True


NO_REMOTE_CODE = {"trust_remote_code": False}  # for every from_pretrained
_CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")


def refuse_remote_code(name: str, flag: str) -> None:
    """A one-line refusal when the local folder `name` asks for code of its own (an `auto_map` in its configs)."""
    path = Path(name).expanduser()
    for file in _CONFIG_FILES if path.is_dir() else ():
        try:
            config = json.loads((path / file).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # absent or malformed: transformers explains the latter
            continue
        if isinstance(config, dict) and "auto_map" in config:
            raise TurkclipError(f"{name} asks to run code of its own ({file} has an auto_map): turkclip never runs"
                                f" code that comes with a model; give {flag} a folder of a model transformers knows")


def check_clip_source(name: str) -> None:
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub ids are "org/name"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TurkclipError(f"{name} is not a model folder: it has no config.json")
        refuse_remote_code(name, "--model")
        try:
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError, RecursionError):
            return  # transformers explains a malformed config.json itself
        if model_type != "clip":
            raise TurkclipError(f"{name} is not a CLIP model: its config.json says model_type {model_type!r}")
    elif looks_like_path:
        raise TurkclipError(f"model folder not found: {name}")


def load_failure(name: str, what: str, error: Exception, flag: str = "--model") -> str:
    """One line saying why `name` (a folder or hub id) could not be loaded, and what to do."""
    if Path(name).expanduser().exists():
        return f"could not load the {what} from {name}: {str(error).splitlines()[0]}"
    return (
        f"could not load {what} {name!r}: it is not a local folder and the Hugging Face hub is unreachable"
        f" (or the id is wrong). On a connected machine run `hf download {name} --local-dir DIR`,"
        f" copy DIR here and pass {flag} DIR"
    )
