"""Typed dataclass configs from YAML files and dotted ``key=value`` overrides, validated by pydantic.

A config is a plain (nested) dataclass; each section may define ``validate()`` for checks that
span fields. ``from_dict(cls, data)`` validates a raw dict with pydantic (``TypeAdapter``: types,
nested sections, ``Literal`` choices, numbers given as YAML strings such as ``1e-5``), then
refuses NaN and infinite numbers anywhere, then calls every section's ``validate()``, innermost
first. ``apply_overrides(data, ["optim.lr=1e-5"])`` edits the raw dict first; ``read_config_file`` follows a ``base: other.yaml`` chain. Unknown keys
and wrong types raise ``ConfigKeyError`` naming the full dotted key.

What pydantic has no notion of stays here: a section given in part fills in over the field's
own default (which may differ from the section class's defaults), YAML files with ``base:``,
and dotted overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from typing import Any, Literal, Union

import pydantic
import yaml


class ConfigKeyError(ValueError):
    """A config key is unknown, missing, or holds a value of the wrong type."""


# pydantic error type -> what the value should have been.
EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping",
}


@functools.lru_cache(maxsize=None)
def _adapter(cls) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


def _section_default(f: dataclasses.Field, section_cls):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default if f.default is not dataclasses.MISSING else section_cls()


def _fill_sections(cls, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`data` with every dataclass section present and complete: keys given for a section fill in
    over the field's default. Unknown keys are errors naming their dotted key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigKeyError(f"unknown config key {prefix + unknown[0]!r}; known keys of "
                             f"{prefix.rstrip('.') or 'the config'}: {sorted(fields)}")
    out = dict(data)
    for name, f in fields.items():
        section = hints[name]
        if not dataclasses.is_dataclass(section) or isinstance(out.get(name), section):
            continue
        given = out.get(name, {})
        if not isinstance(given, dict):
            raise ConfigKeyError(f"{prefix + name}: expected a mapping for section {section.__name__}, got {given!r}")
        default = to_dict(_section_default(f, section))
        out[name] = _fill_sections(section, {**default, **given}, f"{prefix}{name}.")
    return out


def _step(tp, part) -> tuple[Any, str | None]:
    """The annotation one `loc` step below `tp`, and the key text the step adds (None: a union tag)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _step(options[0], part)
        match = [a for a in options if getattr(a, "__name__", str(a)) in str(part)]
        return (match[0] if match else Any), None
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(part, Any), f".{part}"
    if origin in (list, tuple):
        return (args[0] if args else Any), f"[{part}]"
    if origin is dict:
        return (args[1] if len(args) == 2 else Any), f".{part}"
    return Any, f".{part}"


def _message(cls, error: dict, prefix: str) -> str:
    """A pydantic error as 'dotted.key: expected ..., got ...'."""
    tp, key = cls, prefix.rstrip(".")
    for part in error["loc"]:
        tp, text = _step(tp, part)
        if text is not None:
            key = (key + text).lstrip(".")
    kind, value = error["type"], error.get("input")
    while typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if kind == "missing":
        return f"missing config key {key!r}"
    if kind == "literal_error" and typing.get_origin(tp) is Literal:
        return f"{key}: expected one of {list(typing.get_args(tp))}, got {value!r}"
    if kind in ("dataclass_type", "dataclass_exact_type"):
        return f"{key}: expected a mapping for section {getattr(tp, '__name__', tp)}, got {value!r}"
    if kind in EXPECTED:
        return f"{key}: expected {EXPECTED[kind]}, got {value!r}"
    return f"{key}: {error['msg']}, got {value!r}"


def _non_finite(value, key: str) -> tuple[str, float] | None:
    """(dotted key, value) of the first NaN / inf number inside `value` (a section, list or dict), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    else:
        return None
    for name, v in items:
        found = _non_finite(v, f"{key}.{name}".lstrip("."))
        if found is not None:
            return found
    return None


def _validate_sections(obj) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate_sections(value)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()  # messages name their full dotted keys


def from_dict(cls, data: dict[str, Any] | None, prefix: str = ""):
    """Builds dataclass `cls` from `data`, validating keys, types and every section's ``validate()``."""
    data = _fill_sections(cls, dict(data or {}), prefix)
    try:
        obj = _adapter(cls).validate_python(data)
    except pydantic.ValidationError as e:
        raise ConfigKeyError(_message(cls, e.errors()[0], prefix)) from None
    # NaN compares False with every bound, so a per-section check such as ``lr <= 0`` lets it
    # through; no config number has a meaning for NaN or inf, so they are refused everywhere.
    bad = _non_finite(obj, prefix.rstrip("."))
    if bad is not None:
        raise ConfigKeyError(f"{bad[0]}: expected a finite number, got {bad[1]}")
    _validate_sections(obj)
    return obj


def to_dict(obj) -> dict[str, Any]:
    """A plain (YAML-serialisable) dict of a dataclass config."""
    return _adapter(type(obj)).dump_python(obj, mode="json")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-5' -> (['optim', 'lr'], 1e-05); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigKeyError(f"override {text!r}: expected key=value (dotted keys allowed)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigKeyError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigKeyError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str], cls=None) -> dict[str, Any]:
    """Applies dotted overrides to a raw config dict (a new dict). With `cls`, a key that its
    sections do not have is an error at once."""
    data = merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node, node_cls = data, cls
        for i, part in enumerate(parts):
            if node_cls is not None and dataclasses.is_dataclass(node_cls):
                names = {f.name for f in dataclasses.fields(node_cls)}
                if part not in names:
                    raise ConfigKeyError(f"unknown config key {'.'.join(parts[: i + 1])!r}; "
                                         f"known keys here: {sorted(names)}")
                node_cls = typing.get_type_hints(node_cls)[part]
            if i == len(parts) - 1:
                node[part] = value
            else:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
    return data


def merge(a: dict, b: dict) -> dict:
    """A new dict: `b` over `a`, merging nested dicts key by key (lists and values are replaced)."""
    out = {k: merge({}, v) if isinstance(v, dict) else v for k, v in a.items()}
    for k, v in b.items():
        out[k] = merge(out[k] if isinstance(out.get(k), dict) else {}, v) if isinstance(v, dict) else v
    return out


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML file as a dict ({} for an empty file); errors name the file."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigKeyError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigKeyError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigKeyError(f"{path}: expected a mapping at the top level")
    return data


def read_config_file(path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A YAML config as a dict; a top-level ``base: other.yaml`` (relative to the file) is merged under it."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigKeyError(f"{path}: 'base' chain loops back to itself")
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigKeyError(f"{path}: base: expected a file name, got {base!r}")
    return merge(read_config_file(os.path.join(os.path.dirname(path), base), _seen + (path,)), data)
