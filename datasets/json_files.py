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
