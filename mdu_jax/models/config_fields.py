"""``ConfigError`` and the readers of HF ``config.json`` fields that the family modules share."""

from __future__ import annotations

from typing import Any, Mapping


class ConfigError(ValueError):
    """A model config is missing a field or holds an inconsistent value."""


def require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...] = int) -> Any:
    """Reads `key` from a HF config dict, raising ConfigError if it is absent or mistyped."""
    if key not in data or data[key] is None:
        raise ConfigError(f"missing config field {key!r}")
    value = data[key]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config field {key!r}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def require_all(data: Mapping[str, Any], fields: Mapping[str, tuple[str, type]]) -> dict[str, Any]:
    """{ModelConfig field: value} for a table {field: (config.json key, type)}, each read with `require`."""
    return {field: require(data, key, kind) for field, (key, kind) in fields.items()}


def expect(data: Mapping[str, Any], key: str, allowed: tuple, default: Any = None) -> None:
    """Raises ConfigError if `key` holds a value this implementation does not support."""
    value = data.get(key, default)
    if value not in allowed:
        raise ConfigError(f"config field {key!r}: unsupported value {value!r}; supported: {allowed}")
