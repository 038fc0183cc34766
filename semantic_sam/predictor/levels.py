"""User granularity levels (1 = coarsest ... K = finest) and the model's K output tokens.

With K = 6 tokens the reference's demos map level -> token as {1: 3, 2: 2, 3: 0, 4: 4, 5: 1, 6: 5}
(its ``prompt_switch``). The ordering is an empirical property of the trained ``mask_tokens``; the
README calls levels 1-2 "semantic", 3 "instance" and 4-6 "part" levels. For any other K (3 in the
reproduce-SAM config) level l is token l - 1.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["ALL_LEVELS", "LEVEL_TO_TOKEN_6", "levels_to_tokens"]

LEVEL_TO_TOKEN_6: dict[int, int] = {1: 3, 2: 2, 3: 0, 4: 4, 5: 1, 6: 5}
ALL_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)


def levels_to_tokens(levels: Iterable[int], num_tokens: int) -> list[int]:
    """Map user levels (1..num_tokens) to token indices (0..num_tokens-1), keeping their order.

    Raises:
        ValueError: empty list, a level out of range or given twice.
    """
    levels = list(levels)
    if not levels:
        raise ValueError(f"levels is empty; give at least one of 1..{num_tokens}")
    tokens = []
    for lv in levels:
        try:
            ok = not isinstance(lv, (bool, str)) and int(lv) == lv and 1 <= int(lv) <= num_tokens
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"level {lv!r} is out of range: this model has levels 1..{num_tokens}")
        lv = int(lv)
        tokens.append(LEVEL_TO_TOKEN_6[lv] if num_tokens == 6 else lv - 1)
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"levels {levels} contain a duplicate")
    return tokens
