"""Typed config from YAML plus `a.b=value` overrides, with errors that name the key and the closest valid one.

Generic over any dataclass schema (the schema itself is in `endo_rl.core.config`). Values are checked against the
field's type annotation: int, float, bool, str, Optional[...], list[...], Literal[...] and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from endo_rl.core.errors import UserError


def _suggest(key: str, valid: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; valid keys: {', '.join(prefix + v for v in sorted(valid))}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted for floats. Raises UserError naming `key`."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key)
            except UserError:
                continue
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(f"config key '{key}': expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise UserError(f"config key '{key}': expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(schema: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `schema` from a nested dict; unknown keys and wrong types raise UserError."""
    where = prefix or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config section '{where}': expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else key
            raise UserError(f"unknown config key '{full}'{_suggest(key, list(fields), full[: -len(key)])}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return schema(**kwargs)
    except TypeError as err:  # a required field is missing
        raise UserError(f"config section '{where}': {err}") from err


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], value parsed as YAML, so 1e-3, true, null and [1, 2] work)."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any, schema: type, raw: str | None = None) -> None:
    """Set tree[a][b] = value, checking each key against the schema so typos fail with a suggestion.

    `raw`: the text after '=' of a command-line override; a text key (output_dir=2024) keeps it as written
    instead of the number YAML would read.
    """
    node, cls = tree, schema
    for depth, part in enumerate(path):
        full = ".".join(path[: depth + 1])
        if not dataclasses.is_dataclass(cls):
            raise UserError(
                f"config key '{'.'.join(path[:depth])}' is not a section, so '{'.'.join(path)}' cannot be set"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise UserError(f"unknown config key '{full}'{_suggest(part, names, full[: -len(part)])}")
        if depth == len(path) - 1:
            text_key = typing.get_type_hints(cls)[part] in (str, str | None)
            keep_raw = raw is not None and text_key and isinstance(value, (int, float))
            node[part] = raw if keep_raw else value
            return
        cls = typing.get_type_hints(cls)[part]
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"config key '{full}' is not a section, so '{'.'.join(path)}' cannot be set")
        node = child


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise UserError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is given twice in the same section "
                    "(the second would silently replace the first); merge them"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"config file {p} is a directory; expected a YAML recipe file")
    if not p.is_file():
        raise UserError(f"config file {p} does not exist")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise UserError(f"config file {p}: not UTF-8 text (byte 0x{err.object[err.start]:02x})") from err
    except UserError as err:
        raise UserError(f"config file {p} {err}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {p}{line}: invalid YAML ({getattr(err, 'problem', err)})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_moved_override(keys: list[str], moved: dict[str, str], where: str) -> None:
    old = ".".join(keys)
    if old in moved:
        raise UserError(f"config key '{old}' ({where}) has moved: write '{moved[old]}' instead")


def check_moved_tree(tree: Any, moved: dict[str, str], where: str) -> None:
    """Raise for the first moved key present in a nested dict read from YAML."""
    for old in moved:
        node = tree
        for part in old.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            check_moved_override(old.split("."), moved, where)


def merge(base: dict, update: dict) -> dict:
    """`update` laid over `base`, section by section (a value that is not a mapping replaces the old one)."""
    out = dict(base)
    for key, value in update.items():
        both_sections = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both_sections else value
    return out


def load(
    schema: type,
    path: str | Path | None = None,
    overrides: list[str] = (),
    moved: dict[str, str] | None = None,
    defaults: Any = None,
) -> Any:
    """YAML file (optional) + overrides -> validated instance of `schema`.

    `moved` maps old dotted keys to their new names; an old key is an error that names the new one.
    `defaults` (an instance of `schema`) replaces the schema's own defaults underneath the file and overrides.
    """
    moved = moved or {}
    recipe = read_yaml(path) if path is not None else {}
    check_moved_tree(recipe, moved, f"in {path}")
    tree = merge(to_dict(defaults), recipe) if defaults is not None else recipe
    for text in overrides:
        keys, value = parse_override(text)
        check_moved_override(keys, moved, "on the command line")
        _set_path(tree, keys, value, schema, raw=text.split("=", 1)[1])
    return from_dict(schema, tree)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    try:
        Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    except OSError as err:  # a full disk: one line naming the file, not a traceback
        raise UserError(f"cannot write {path}: {err.strerror or err}") from err
