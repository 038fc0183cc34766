"""YAML configs with ``KEY.SUB=value`` overrides, checked against a schema of defaults.

The schema is the union of the YAML files in ``semantic_sam/config_defaults/`` (merged in
file-name order): every key of the reference's configs plus the options this project adds.
A config file (optionally with ``_BASE_: other.yaml``) and command-line overrides are merged
on top of it. Unknown keys and values of the wrong type are errors that name the key.

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

__all__ = ["ConfigError", "CfgNode", "get_default_config", "load_config", "parse_overrides", "save_config"]

logger = logging.getLogger(__name__)

_DEFAULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config_defaults")
# Nodes whose keys are free-form (user-chosen names rather than a schema).
_FREE_FORM = {"SOLVER.LR_MULTIPLIER"}
_BASE_KEY = "_BASE_"
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, line or key."""


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
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
        for path in sorted(glob.glob(os.path.join(_DEFAULTS_DIR, "*.yaml"))):
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


def _merge(node: CfgNode, data: Mapping, prefix: str, root: CfgNode, source: str) -> None:
    free = prefix.rstrip(".") in _FREE_FORM
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in node:
            if free:
                node[k] = _to_node(v) if isinstance(v, Mapping) else v
                continue
            raise _unknown_key_error(full, root, source)
        cur = node[k]
        if isinstance(cur, CfgNode):
            if not isinstance(v, Mapping):
                raise ConfigError(
                    f"{source}: config key '{full}' is a section; got {v!r} ({_type_name(v)}), expected a mapping"
                )
            _merge(cur, v, full + ".", root, source)
        else:
            node[k] = _coerce(full, cur, v, source)


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


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``KEY.SUB=value`` strings; values are YAML (``1e-4``, ``[1, 2]``, ``true``, ``~``)."""
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
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        parsed.append((key, value))
    return parsed


def _apply_override(cfg: CfgNode, key: str, value: Any) -> None:
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
    _merge(cfg, {parts[0]: nested}, "", cfg, f"command-line override {key}")


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
        ConfigError: missing file, YAML syntax error (with line), unknown key (with the
            closest known keys), wrongly typed value, or an override without ``=``.
    """
    cfg = get_default_config()
    if path is not None:
        for file_path, data in _load_file_chain(path):
            _merge(cfg, data, "", cfg, file_path)
    for key, value in parse_overrides(overrides):
        _apply_override(cfg, key, value)
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
