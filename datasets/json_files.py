"""Reading an annotation JSON whose every problem is a one-line error naming the file."""
from __future__ import annotations

import json


def read_json_object(path: str, error: type[Exception], kind: str, layout: str) -> dict:
    """The JSON object in ``path``.

    Args:
        path: the file.
        error: the exception type raised for every problem (a ``UserError`` subclass of the caller).
        kind: what the file is, for messages, e.g. ``"panoptic JSON"``.
        layout: the format it must follow, e.g. ``"COCO panoptic JSON"``.

    Raises:
        ``error``: unreadable, empty, not UTF-8, not valid JSON (e.g. truncated) or not an object; the
            message names ``path``.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise error(f"{path}: cannot read the {kind} ({e.strerror or e})") from None
    if not raw.strip():
        raise error(f"{path}: the {kind} is empty")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        where = f"{e.msg} at line {e.lineno} column {e.colno}"
        raise error(f"{path}: not valid JSON ({where}; truncated download?)") from None
    if not isinstance(data, dict):
        raise error(
            f"{path}: not a {layout} (expected an object with 'images', 'annotations' and 'categories', "
            f"got {type(data).__name__})"
        )
    return data


def json_list(data: dict, key: str, path: str, error: type[Exception], layout: str, required: bool = True) -> list[dict]:
    """``data[key]``: a list of objects (``[]`` when absent and not ``required``).

    Raises:
        ``error``: ``key`` missing (when required), not a list, or an item that is not an object; the message
            names ``path`` and says the file is not a ``layout``.
    """
    if key not in data:
        if required:
            raise error(f"{path}: not a {layout} (no {key!r} list)")
        return []
    items = data[key]
    if not isinstance(items, list):
        raise error(f"{path}: {key!r} must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise error(f"{path}: {key}[{i}] must be an object, got {type(item).__name__}")
    return items


def json_field(item: dict, name: str, types: type | tuple, where: str, path: str, error: type[Exception]):
    """``item[name]``, which must be of ``types`` (a bool is never a number).

    Raises:
        ``error``: the field is missing or of another type; the message names ``path``, ``where`` and the value.
    """
    if name not in item:
        raise error(f"{path}: {where} has no {name!r}")
    value = item[name]
    if isinstance(value, bool) or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise error(f"{path}: {where}.{name} must be {expected}, got {value!r:.60}")
    return value
