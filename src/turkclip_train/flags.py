"""Command-line flags made from dataclass fields: a setting is written once — name, type, default, help — and
both the library (`TrainConfig(...)`) and the CLI (`turkclip train --help`) read it from there.

A field becomes `--field-name`; its `metadata` may hold `help`, `choices`, `metavar`, `group` (an argparse
group title), `required`, `convert` (maps the parsed flag to the field's value), `negate` (a bool that defaults to True becomes this `--no-...` flag) and `flag: False` (no flag).
A field whose type is itself a dataclass (e.g. `lora: LoraSettings`) contributes its own fields under a prefix
(`--lora-r`, `--lora-alpha`, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from types import UnionType


def add_flags(parser: argparse.ArgumentParser, cls, only: typing.Iterable[str] | None = None,
              defaults: dict | None = None, prefix: str = "") -> None:
    """Add a flag for each field of `cls` (or the fields named in `only`); `defaults` overrides shown defaults."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("flag", True) is False or (only is not None and f.name not in only):
            continue
        kind = _plain(hints[f.name])
        if dataclasses.is_dataclass(kind):
            add_flags(parser, kind, prefix=f"{prefix}{meta.get('prefix', f.name + '_')}")
            continue
        target = parser
        if meta.get("group"):
            title, _, description = meta["group"].partition(": ")
            target = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title, description or None))
        default = (defaults or {}).get(f.name, _default(f))
        dest = prefix + f.name
        name = "--" + dest.replace("_", "-")
        help_text = meta.get("help", "")
        if kind is bool:
            if default:  # on by default: the flag turns it off
                target.add_argument(meta.get("negate", "--no-" + f.name.replace("_", "-")), dest=dest,
                                    action="store_false", help=help_text)
            else:
                target.add_argument(name, dest=dest, action="store_true", help=help_text)
            continue
        shown = ",".join(default) if isinstance(default, tuple) else default
        if shown not in (None, "") and "default" not in help_text:
            help_text += f" (default {shown})"
        target.add_argument(name, dest=dest, type=_parser_of(kind), default=default, choices=meta.get("choices"),
                            metavar=meta.get("metavar"), required=meta.get("required", False), help=help_text)


def from_args(cls, args: argparse.Namespace, prefix: str = "", **overrides):
    """An instance of `cls` from parsed flags (what `add_flags` added), then `overrides`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("flag", True) is False:
            continue
        kind = _plain(hints[f.name])
        if dataclasses.is_dataclass(kind):
            values[f.name] = from_args(kind, args, prefix=f"{prefix}{f.metadata.get('prefix', f.name + '_')}")
        elif hasattr(args, prefix + f.name):
            value = getattr(args, prefix + f.name)
            if value is None and f.default is dataclasses.MISSING:
                continue  # not given: the field's default_factory decides
            values[f.name] = f.metadata["convert"](value) if "convert" in f.metadata else value
    return cls(**{**values, **overrides})


def _plain(kind):
    """`int | None` → int; `X` → X."""
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return None  # a default_factory (e.g. the cache folder) is made by the dataclass itself


def _parser_of(kind):
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]: a comma list
        return lambda text: tuple(part.strip() for part in text.split(",") if part.strip())
    return kind if kind in (int, float, str) else str
