"""The transformers/PEFT pairs that are known not to work together, refused in one line when the LoRA road loads.

pyproject.toml keeps pip from choosing such a pair (`transformers<5.24` while PEFT 0.22 is unreleased); a user who
installs one by hand would otherwise meet a PEFT version error deep inside the first adapter call.
"""

from __future__ import annotations

import importlib.metadata

from packaging.version import Version

from turkclip.errors import TurkclipError

# (first transformers that needs more, the PEFT it needs): transformers 5.24 asks for PEFT >= 0.22 in its adapter
# API (tests/test_parity.py); transformers 5.23 works with PEFT >= 0.20.
BROKEN_PAIRS = [(Version("5.24"), Version("0.22"))]


def check_pair(transformers_version: str, peft_version: str) -> None:
    """Raise a one-line TurkclipError when the installed transformers needs a newer PEFT than the installed one."""
    t, p = Version(transformers_version), Version(peft_version)
    for first_transformers, needs_peft in BROKEN_PAIRS:
        if t.release >= first_transformers.release and p < needs_peft:
            raise TurkclipError(
                f"transformers {transformers_version} needs PEFT >= {needs_peft} for LoRA adapters, but PEFT"
                f" {peft_version} is installed: install transformers<{first_transformers} (pip install -c"
                f" constraints.txt -e .) or PEFT >= {needs_peft}")


def check_installed() -> None:
    """`check_pair` on the installed distributions (what pip installed, whatever a module says of itself)."""
    check_pair(importlib.metadata.version("transformers"), importlib.metadata.version("peft"))
