"""Typed dataclass configs from YAML dicts and dotted ``key=value`` overrides.

``from_dict(cls, data)`` builds a (nested) dataclass, checking every key and value type against
the annotations; ``apply_overrides(data, ["optim.lr=1e-5", ...])`` edits the raw dict first.
Unknown keys and wrong types raise ``ConfigKeyError`` naming the full dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

import yaml


class ConfigKeyError(ValueError):
    """A config key is unknown, missing, or holds a value of the wrong type."""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigKeyError as e:
                errors.append(str(e))
        raise ConfigKeyError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigKeyError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigKeyError(f"{key}: expected a mapping for section {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigKeyError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigKeyError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads "1e-5" as a string
                except ValueError:
                    pass
            raise ConfigKeyError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigKeyError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigKeyError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigKeyError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigKeyError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls, data: dict[str, Any] | None, prefix: str = ""):
    """Builds dataclass `cls` from `data`, validating keys and types (recursively)."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigKeyError(f"unknown config key {prefix + unknown[0]!r}; known keys of "
                             f"{prefix.rstrip('.') or 'the config'}: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        section = dataclasses.is_dataclass(hints[name])
        # A section's keys fill in over the field's own default (which may differ from the section
        # class's defaults), and the result is validated.
        default = (f.default_factory() if f.default_factory is not dataclasses.MISSING else hints[name]()) \
            if section else None
        if name in data and section and isinstance(data[name], dict):
            kwargs[name] = from_dict(hints[name], {**to_dict(default), **data[name]}, prefix=key + ".")
        elif name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif section:
            kwargs[name] = from_dict(hints[name], to_dict(default), prefix=key + ".")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigKeyError(f"missing config key {key!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()  # messages name their full dotted keys
    return obj


def to_dict(obj) -> dict[str, Any]:
    """A plain (YAML-serialisable) dict of a dataclass config."""
    out = dataclasses.asdict(obj)

    def clean(x):
        if isinstance(x, tuple):
            return [clean(v) for v in x]
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return clean(out)


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
    """Applies dotted overrides to a raw config dict (a new dict); keys are checked against `cls`."""
    data = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node, node_cls = data, cls
        for i, part in enumerate(parts):
            dotted = ".".join(parts[: i + 1])
            if node_cls is not None and dataclasses.is_dataclass(node_cls):
                names = {f.name for f in dataclasses.fields(node_cls)}
                if part not in names:
                    raise ConfigKeyError(f"unknown config key {dotted!r}; known keys here: {sorted(names)}")
                sub_cls = typing.get_type_hints(node_cls)[part]
                node_cls = sub_cls if dataclasses.is_dataclass(sub_cls) else None
            else:
                node_cls = None
            if i == len(parts) - 1:
                node[part] = value
            else:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
    return data


def _deep_copy(x):
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


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
