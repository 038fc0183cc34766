"""YAML configs with ``KEY.SUB=value`` overrides, checked against a schema of defaults.

The schema is the union of the YAML files in ``semantic_sam/config_defaults/`` (merged in
file-name order): every key of the reference's configs plus the options this project adds.
A config file (optionally with ``_BASE_: other.yaml``) and command-line overrides are merged
on top of it. Unknown keys, values of the wrong type and values the code cannot use (checked at
load time by :mod:`semantic_sam.config_checks`) are errors that name the key.

    >>> cfg = load_config("configs/semantic_sam_only_sa-1b_swinT.yaml", ["MODEL.WEIGHTS=/x.pth"])
    >>> cfg.MODEL.DECODER.HIDDEN_DIM == cfg["MODEL"]["DECODER"]["HIDDEN_DIM"] == 256
    True
"""
from __future__ import annotations

import difflib
import glob
import logging
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import yaml
from detectron2.config import CfgNode

from .errors import UserError

__all__ = ["ConfigError", "CfgNode", "get_default_config", "load_config", "parse_overrides", "save_config"]

logger = logging.getLogger(__name__)

_DEFAULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config_defaults")
# Nodes whose keys are free-form (user-chosen names rather than a schema).
_FREE_FORM = {"SOLVER.LR_MULTIPLIER"}
_BASE_KEY = "_BASE_"
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError, UserError):
    """A config file or override is invalid; the one-line message names the file, line or key."""


class _DuplicateKeyError(yaml.YAMLError):
    """A key repeated in one YAML mapping; ``line`` and ``first_line`` are 0-based."""

    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r} (first at line {first_line + 1})")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (PyYAML keeps the last one
    silently). Keys brought in by a ``<<`` merge may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first
                except TypeError:  # unhashable: the base class reports it
                    continue
                if seen:
                    raise _DuplicateKeyError(key, key_node.start_mark.line, first[key])
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _read_yaml(path: str) -> dict:
    if os.path.isdir(path):
        raise ConfigError(f"config path is a directory, not a YAML file: {path}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save the config as UTF-8"
        ) from None
    try:
        data = _yaml_load(text)
    except _DuplicateKeyError as e:
        raise ConfigError(f"{path}:{e.line + 1}: {e}; each key may appear once per mapping") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty (no keys); expected a mapping such as 'MODEL: ...'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def _deep_update(dst: dict, src: Mapping) -> dict:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v
    return dst


_DEFAULTS_CACHE: dict | None = None


def _defaults_dict() -> dict:
    global _DEFAULTS_CACHE
    if _DEFAULTS_CACHE is None:
        merged: dict = {}
        paths = sorted(glob.glob(os.path.join(_DEFAULTS_DIR, "*.yaml")))
        if not paths:
            raise RuntimeError(f"the config schema is missing: no *.yaml in {_DEFAULTS_DIR} (reinstall the package)")
        for path in paths:
            _deep_update(merged, _read_yaml(path))
        _DEFAULTS_CACHE = merged
    return _DEFAULTS_CACHE


def _to_node(d: Mapping) -> CfgNode:
    node = CfgNode()
    for k, v in d.items():
        node[k] = _to_node(v) if isinstance(v, Mapping) else v
    return node


def get_default_config() -> CfgNode:
    """A fresh, unfrozen copy of the defaults schema (every valid key with its default)."""
    import copy

    return _to_node(copy.deepcopy(_defaults_dict()))


def _all_keys(node: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, Mapping):
            keys += _all_keys(v, full + ".")
    return keys


def _unknown_key_error(full_key: str, root: CfgNode, source: str) -> ConfigError:
    known = _all_keys(root)
    close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.6)
    leaf = full_key.rsplit(".", 1)[-1]
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close][:3]
    hint = f"; closest known keys: {', '.join(close)}" if close else ""
    return ConfigError(f"{source}: unknown config key '{full_key}'{hint}")


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _coerce(full_key: str, default: Any, value: Any, source: str) -> Any:
    """Return ``value`` checked (and where lossless, converted) against the default's type."""
    if default is None or value is None and isinstance(default, str):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        # YAML 1.1 reads "1e-4" as a string; accept it as the float users mean.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok:
            value = list(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{source}: wrong type for config key '{full_key}': got {value!r} ({_type_name(value)}), "
            f"expected {_type_name(default)} (default {default!r})"
        )
    return value


def _merge(
    node: CfgNode, data: Mapping, prefix: str, root: CfgNode, source: str, sources: dict | None = None
) -> None:
    """Merge ``data`` into ``node``; ``sources`` (if given) records ``full key -> source`` of each value set."""
    free = prefix.rstrip(".") in _FREE_FORM
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in node:
            if free:
                node[k] = _to_node(v) if isinstance(v, Mapping) else v
                _record_source(sources, full, source)
                continue
            raise _unknown_key_error(full, root, source)
        cur = node[k]
        if isinstance(cur, CfgNode):
            if not isinstance(v, Mapping):
                raise ConfigError(
                    f"{source}: config key '{full}' is a section; got {v!r} ({_type_name(v)}), expected a mapping"
                )
            _merge(cur, v, full + ".", root, source, sources)
        else:
            node[k] = _coerce(full, cur, v, source)
            _record_source(sources, full, source)


def _record_source(sources: dict | None, key: str, source: str) -> None:
    """Record the source of ``key``'s value; the dict stays ordered by when each key was last set."""
    if sources is not None:
        sources.pop(key, None)
        sources[key] = source


def _load_file_chain(path: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: circular {_BASE_KEY} chain: {' -> '.join(seen + (path,))}")
    data = _read_yaml(path)
    chain = []
    base = data.pop(_BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: {_BASE_KEY} must be a file path, got {base!r}")
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        chain += _load_file_chain(base_path, seen + (path,))
    chain.append((path, data))
    return chain


def _check_override_list(overrides: Any) -> None:
    if isinstance(overrides, (str, bytes)):
        raise TypeError(
            f"overrides must be a list of 'KEY.SUB=value' strings, got the string {overrides!r}; "
            f"pass [{overrides!r}]"
        )


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``KEY.SUB=value`` strings; values are YAML (``1e-4``, ``[1, 2]``, ``true``, ``~``).

    Raises:
        TypeError: ``overrides`` is a single string rather than a list of them.
        ConfigError: an item without ``=``, with an empty key or a value that is not valid YAML.
    """
    _check_override_list(overrides)
    parsed = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form KEY.SUB=value (e.g. MODEL.WEIGHTS=/path/to/model.pth)"
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        parsed.append((key, value))
    return parsed


def _apply_override(cfg: CfgNode, key: str, value: Any, sources: dict | None = None) -> None:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node, CfgNode) or p not in node:
            raise _unknown_key_error(key, cfg, "command-line override")
        node = node[p]
    nested: Any = value
    for p in reversed(parts[1:]):
        nested = {p: nested}
    if not isinstance(node, CfgNode):
        raise _unknown_key_error(key, cfg, "command-line override")
    # Reuse the merge so the same checks and messages apply.
    _merge(cfg, {parts[0]: nested}, "", cfg, f"command-line override {key}", sources)


def load_config(path: str | None, overrides: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Load a YAML config over the defaults schema, then apply ``KEY.SUB=value`` overrides.

    Args:
        path: YAML file (may name a ``_BASE_`` file, relative to itself); ``None`` = defaults only.
        overrides: strings like ``"MODEL.WEIGHTS=/x.pth"``; values are parsed as YAML.
        freeze: return a frozen node (``cfg.defrost()`` to edit).

    Returns:
        A detectron2 ``CfgNode``: ``cfg.MODEL.DECODER.HIDDEN_DIM`` and
        ``cfg["MODEL"]["DECODER"]["HIDDEN_DIM"]`` both work.

    Raises:
        ConfigError: missing, empty or non-UTF-8 file, YAML syntax error or duplicated key (with
            the line), unknown key (with the closest known keys), wrongly typed value, an override
            without ``=``, or a value the code cannot use (:func:`semantic_sam.config_checks.check_config`:
            the message names the key, the value and the allowed values).
        TypeError: ``overrides`` is a single string rather than a list of them.
    """
    from .config_checks import check_config  # here: config_checks imports ConfigError from this module

    _check_override_list(overrides)
    cfg = get_default_config()
    sources: dict[str, str] = {}
    if path is not None:
        for file_path, data in _load_file_chain(path):
            _merge(cfg, data, "", cfg, file_path, sources)
    for key, value in parse_overrides(overrides):
        _apply_override(cfg, key, value, sources)
    check_config(cfg, sources)
    if freeze:
        cfg.freeze()
    return cfg


def save_config(cfg: CfgNode, output_dir: str, name: str = "config.yaml") -> str:
    """Write the merged config to ``output_dir/name`` and return the path."""
    os.makedirs(output_dir, exist_ok=True)
    out = os.path.join(output_dir, name)
    with open(out, "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    logger.info("Full config saved to %s", out)
    return out
