"""Config files and dotted-key overrides (``optim.lr=1e-3``) for any tree of dataclasses, type-checked by field hint.

Generic on purpose (no TrainConfig knowledge): training/config.py holds the schema; this is how a YAML/TOML mapping
or a ``--set`` string reaches a typed field, with a one-line error that names the key (and the closest real key).
Supported leaf hints: bool, int, float, str, Literal[...], tuple[...] and ``X | None`` of those.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml


def setting(default: Any, help: str) -> Any:
    """A config field with its help text as metadata: markdown_table() (the README table) reads it from here."""
    return dataclasses.field(default=default, metadata={"help": help})


def update(config: Any, data: Mapping[str, Any], source: str | None = None, prefix: str = "") -> None:
    """Apply a nested (or dotted-key) mapping; sections recurse, leaves are type-checked. `source` (a file, a
    recipe) starts each error message, so the user knows where the bad key or value was written."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and _is_section(type(config), dotted):
            update(config, value, source, prefix=dotted + ".")
            continue
        try:
            set_value(config, dotted, value)
        except ValueError as e:
            raise ValueError(f"{source}: {e}" if source else str(e)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml/.json) or TOML file's mapping of sections; one-line errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML ({e})") from None
    elif path.suffix in (".yaml", ".yml", ".json"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    else:
        raise ValueError(f"{path}: config files must end in .yaml, .yml, .json or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, str]:
    """'a.b=value' -> ('a.b', 'value'); the value stays text until set_value knows the field's type."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"bad override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
    return key.strip(), value


def set_value(config: Any, key: str, value: Any, from_text: bool = False) -> None:
    """Set one dotted key; `from_text` parses the value with yaml.safe_load (raw text kept for str fields)."""
    owner, name, hint = _resolve(config, key)
    if from_text:
        value = _parse_text(value, hint)
    setattr(owner, name, _coerce(key, value, hint))


def all_keys(cls: type) -> list[str]:
    """Every leaf's dotted key, in declaration order."""
    return [key for key, _ in walk(cls)]


def walk(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every leaf of a dataclass type; nested dataclass fields are sections."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += walk(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f))
    return out


def values(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a config object."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out += values(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [(prefix + f.name, value)]
    return out


def markdown_table(cls: type) -> str:
    """Markdown rows (key, default as YAML, meaning) of every leaf; the meaning is field(metadata={"help": ...})."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, f in walk(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        shown = yaml.safe_dump(plain(default), default_flow_style=True).strip().removesuffix("\n...")
        note = f.metadata.get("help", "").replace("|", "\\|")  # a pipe would end the Markdown cell
        rows.append(f"| `{key}` | `{shown}` | {note} |")
    return "\n".join(rows)


def lookup(data: Mapping[str, Any], key: str) -> Any:
    """A dotted key's value in a nested mapping (a saved config as written), None where it is missing."""
    for part in key.split("."):
        data = data.get(part) if isinstance(data, Mapping) else None  # type: ignore[assignment]
    return data


def plain(value: Any) -> Any:
    """Tuples to lists, recursively: what YAML/JSON write and read back."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------- internals


def _is_section(cls: type, key: str) -> bool:
    return any(k.startswith(key + ".") for k in all_keys(cls))


def _resolve(config: Any, key: str) -> tuple[Any, str, Any]:
    """(object holding the field, field name, type hint) of a dotted key, or a one-line error naming it."""
    owner: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(type(owner))
        if part not in hints:
            keys = all_keys(type(config))
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) or \
                [k for k in keys if k.rsplit(".", 1)[-1] == parts[-1]][:1]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown config key '{key}'{hint}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(hints[part]):
                raise ValueError(f"config key '{key}' is a section; set one of its keys, e.g. '{key}."
                                 f"{dataclasses.fields(hints[part])[0].name}'")
            return owner, part, hints[part]
        if not dataclasses.is_dataclass(hints[part]):
            raise ValueError(f"unknown config key '{key}' ('{'.'.join(parts[:i + 1])}' is not a section)")
        owner = getattr(owner, part)
    raise AssertionError("unreachable")


def _is_optional(hint: Any) -> tuple[bool, Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return False, hint


def _parse_text(text: str, hint: Any) -> Any:
    optional, inner = _is_optional(hint)
    if optional and text.strip() in ("null", "None", "~", ""):
        return None
    if inner is str:
        return text  # keep paths and names verbatim ("2024", "on" or "1e3" stay strings)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _describe(hint: Any) -> str:
    optional, inner = _is_optional(hint)
    if typing.get_origin(inner) is Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(inner)))
    elif typing.get_origin(inner) is tuple:
        text = "a list of " + ", ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(inner))
    else:
        text = getattr(inner, "__name__", str(inner))
    return text + (" or null" if optional else "")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    optional, inner = _is_optional(hint)
    bad = ValueError(f"bad value for '{key}': {value!r} (expected {_describe(hint)})")
    if value is None:
        if optional:
            return None
        raise bad
    origin = typing.get_origin(inner)
    if origin is Literal:
        if value not in typing.get_args(inner):
            raise bad
        return value
    if origin is tuple:
        args = typing.get_args(inner)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if inner is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if inner is int:
        if isinstance(value, str):  # YAML 1.1 reads "1e4" as a string
            value = _number(value, bad)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():  # 1e4 from YAML is a float
                return int(value)
            raise bad
        return value
    if inner is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            value = _number(value, bad)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"config key '{key}' has an unsupported type {hint!r}")  # pragma: no cover


def _number(text: str, bad: ValueError) -> float:
    try:
        return float(text)
    except ValueError:
        raise bad from None
