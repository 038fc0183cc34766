"""Load released Semantic-SAM weights and this project's checkpoints safely and loudly.

Formats read by :func:`load_checkpoint` (all through ``torch.load(weights_only=True)``):

* **Released** (``swint_only_sam_many2many.pth``, ``swinl_only_sam_many2many.pth``): a flat dict whose
  keys are prefixed ``model.`` (the reference wraps the network in ``BaseModel.model``), e.g.
  ``model.backbone.patch_embed.proj.weight``; or the same dict under a top-level ``'model'`` entry.
* **Ours** (training): detectron2's ``DetectionCheckpointer(model)`` format, ``{'model':
  model.state_dict(), 'iteration': int, 'optimizer': ..., 'scheduler': ...}``, keys *without* the
  ``model.`` prefix. Keys with the prefix are accepted too.

Rule: the ``model.`` prefix is stripped from every key that has it; other keys are used as they are.
A ``'model'`` (or ``'state_dict'``) entry holding a dict is taken as the state dict; otherwise the
top-level dict itself is. Entries that are not tensors are ignored (and listed in the report).

The reference's state dict lists shared modules under every alias (``decoder_norm`` =
``decoder.norm``; ``_bbox_embed`` = ``bbox_embed.{i}`` = ``decoder.bbox_embed.{i}``). A checkpoint
that stores only one name of an alias group still loads: the other names are filled from it.

:func:`save_release_checkpoint` writes the released (flat, ``model.``-prefixed) format, which the
reference's ``BaseModel.from_pretrained`` and this module both read.

**Optional parts** (the text encoder). A model may name state-dict prefixes in its
``optional_key_prefixes`` attribute (``SemanticSAM``: ``sem_seg_head.predictor.lang_encoder.`` when it has
a text encoder). A checkpoint with *no* key under such a prefix (an SA-1B-only checkpoint, as released)
still loads strictly: those model keys keep the values they have (the language weights loaded from
``MODEL.TEXT.WEIGHTS``, or their initialisation) and are listed in ``report.kept``. A checkpoint with
*some* keys under the prefix must have all of them, as for every other key.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import torch
from torch import Tensor, nn

from .errors import UserError
from .utils.atomic_write import atomic_torch_save

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadReport",
    "apply_state_dict",
    "load_checkpoint",
    "read_checkpoint_file",
    "read_state_dict",
    "state_dict_from_checkpoint",
    "save_release_checkpoint",
    "state_dict_for_release",
]

logger = logging.getLogger(__name__)

RELEASE_PREFIX = "model."
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError, UserError):
    """A checkpoint file cannot be read or has an unknown layout."""


class CheckpointMismatchError(CheckpointError):
    """``strict=True`` loading found missing, unexpected or shape-mismatched keys (see ``.report``)."""

    def __init__(self, report: "LoadReport") -> None:
        super().__init__(str(report))
        self.report = report

    def one_line(self) -> str:
        """The report's first line and its counts of problems, e.g. ``...; strict loading failed: 2
        missing (e.g. bias), 1 unexpected (e.g. extra)``."""
        r = self.report
        problems = [
            (r.missing, "missing", r.missing[:1]),
            (r.unexpected, "unexpected", r.unexpected[:1]),
            (r.mismatched, "shape mismatches", [m[0] for m in r.mismatched[:1]]),
            (r.alias_conflicts, "alias conflicts", [" = ".join(g) for g in r.alias_conflicts[:1]]),
        ]
        counts = ", ".join(f"{len(items)} {what} (e.g. {example[0]})" for items, what, example in problems if items)
        return f"{str(self).splitlines()[0]}; strict loading failed: {counts}"


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` found and did.

    Attributes:
        path: the file.
        layout: ``"flat"`` (keys at the top level) or ``"wrapped:<entry>"`` (under ``'model'`` / ``'state_dict'``).
        prefixed: number of keys that carried the ``model.`` prefix (stripped).
        loaded: model keys that received a value.
        missing: model keys with no value in the checkpoint.
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(key, checkpoint shape, model shape)`` of keys skipped for a shape mismatch.
        alias_filled: model keys filled from another name of the same shared tensor.
        alias_conflicts: alias groups whose names hold different values in the checkpoint.
        ignored_entries: top-level entries that are not part of the weights (``iteration``, ``optimizer``...).
        kept: model keys of an optional part (see the module docstring) absent from the checkpoint: kept as they were.
        kept_prefixes: the prefixes of those parts.
        applied: whether weights were copied into the model.
    """

    path: str
    layout: str = "flat"
    prefixed: int = 0
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    alias_filled: list[str] = field(default_factory=list)
    alias_conflicts: list[list[str]] = field(default_factory=list)
    ignored_entries: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    kept_prefixes: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and every checkpoint key was used."""
        return not (self.missing or self.unexpected or self.mismatched or self.alias_conflicts)

    def __str__(self) -> str:
        lines = [
            f"checkpoint {self.path} ({self.layout}, {self.prefixed} keys had the '{RELEASE_PREFIX}' prefix): "
            f"{len(self.loaded)} model keys loaded"
            + (f", {len(self.alias_filled)} filled from aliases" if self.alias_filled else "")
        ]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing (in the model, not in the checkpoint):")
            lines += [f"    {k}" for k in _abbreviate(self.missing)]
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected (in the checkpoint, not in the model):")
            lines += [f"    {k}" for k in _abbreviate(self.unexpected)]
        if self.mismatched:
            lines.append(f"  {len(self.mismatched)} shape mismatches (checkpoint vs model), not loaded:")
            lines += [f"    {k}: {tuple(a)} vs {tuple(b)}" for k, a, b in _abbreviate(self.mismatched)]
        if self.alias_conflicts:
            lines.append(f"  {len(self.alias_conflicts)} shared tensors stored with different values under:")
            lines += [f"    {' = '.join(g)}" for g in _abbreviate(self.alias_conflicts)]
        if self.kept:
            lines.append(
                f"  {len(self.kept)} keys of optional parts ({', '.join(p + '*' for p in self.kept_prefixes)}) "
                "not in the checkpoint, kept as they were"
            )
        if self.ignored_entries:
            lines.append(f"  ignored non-weight entries: {', '.join(self.ignored_entries)}")
        return "\n".join(lines)


def _abbreviate(items: list, limit: int = 40) -> list:
    if len(items) <= limit:
        return items
    return items[:limit] + [f"... and {len(items) - limit} more"]  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def read_checkpoint_file(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, whatever the file's extension: the one way
    this project reads a checkpoint. A file that needs arbitrary unpickling is refused.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable (truncated, not a checkpoint) or needs arbitrary unpickling.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it contains Python objects that only arbitrary unpickling can "
            "restore (torch.load(weights_only=True) rejected it), and unpickling can run code from the file. "
            "If you trust the file, convert it once with `sd = torch.load(path, weights_only=False)` and "
            "`torch.save({k: v for k, v in sd['model'].items()}, new_path)` (tensors only), then load new_path. "
            f"Details: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None


def read_state_dict(path: PathLike) -> tuple[dict[str, Tensor], LoadReport]:
    """Read a checkpoint file into a state dict with the ``model.`` prefix stripped.

    Returns:
        ``(state_dict, report)``; the report has ``layout``, ``prefixed`` and ``ignored_entries`` filled.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, needs arbitrary unpickling, or holds no tensors.
    """
    path = os.fspath(path)
    return state_dict_from_checkpoint(read_checkpoint_file(path), path)


def state_dict_from_checkpoint(obj: Any, path: str) -> tuple[dict[str, Tensor], LoadReport]:
    """What :func:`read_state_dict` does after reading: ``obj`` is the loaded file, ``path`` names it
    in messages. Floating-point tensors must be finite (NaN or infinite weights are refused)."""
    report = LoadReport(path=path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    source: Mapping = obj
    for entry in ("model", "state_dict"):
        if isinstance(obj.get(entry), Mapping):
            source = obj[entry]
            report.layout = f"wrapped:{entry}"
            report.ignored_entries = sorted(str(k) for k in obj if k != entry)
            break
    state: dict[str, Tensor] = {}
    for key, value in source.items():
        if not torch.is_tensor(value):
            report.ignored_entries.append(str(key))
            continue
        if key.startswith(RELEASE_PREFIX):
            key = key[len(RELEASE_PREFIX) :]
            report.prefixed += 1
        state[key] = value
    if not state:
        raise CheckpointError(f"checkpoint {path} contains no tensors ({report.layout} layout)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {', '.join(bad[:3])}"
        )
    return state, report


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _alias_groups(model: nn.Module) -> list[list[str]]:
    """Names of the model's state dict that refer to one shared tensor (groups of 2 or more)."""
    by_id: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        by_id.setdefault(id(t), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def load_checkpoint(model: nn.Module, path: PathLike, strict: bool = True) -> LoadReport:
    """Load weights from ``path`` into ``model`` (see the module docstring for the formats).

    Args:
        model: the network (e.g. ``SemanticSAM``); its state-dict names are the released ones
            without the ``model.`` prefix.
        path: the checkpoint file.
        strict: if True, any missing, unexpected or shape-mismatched key raises
            :class:`CheckpointMismatchError` and the model is left unchanged. If False, the problems
            are logged as one warning and every matching tensor is loaded.

    Returns:
        The :class:`LoadReport` (``str(report)`` is a readable summary).

    Raises:
        FileNotFoundError, CheckpointError, CheckpointMismatchError.
    """
    state, report = read_state_dict(path)
    return apply_state_dict(model, state, report, strict)


def apply_state_dict(model: nn.Module, state: dict[str, Tensor], report: LoadReport, strict: bool) -> LoadReport:
    """Copy ``state`` (from :func:`read_state_dict` or :func:`state_dict_from_checkpoint`) into
    ``model`` with :func:`load_checkpoint`'s rules; fills and returns ``report``."""
    state = dict(state)
    expected = model.state_dict()

    # Fill alias names that the checkpoint does not store; flag aliases stored with different values.
    for group in _alias_groups(model):
        present = [k for k in group if k in state]
        if not present:
            continue
        first = state[present[0]]
        if any(state[k].shape != first.shape or not torch.equal(state[k], first) for k in present[1:]):
            report.alias_conflicts.append(group)
        for k in group:
            if k not in state:
                state[k] = first
                report.alias_filled.append(k)

    to_load: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in expected:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(expected[key].shape)))
        else:
            to_load[key] = value
    report.missing = [k for k in expected if k not in state]
    report.loaded = [k for k in expected if k in to_load]
    for prefix in getattr(model, "optional_key_prefixes", ()):
        if not any(k.startswith(prefix) for k in state):
            kept = [k for k in report.missing if k.startswith(prefix)]
            if kept:
                report.kept += kept
                report.kept_prefixes.append(prefix)
            report.missing = [k for k in report.missing if not k.startswith(prefix)]

    if not report.ok:
        if strict:
            raise CheckpointMismatchError(report)
        logger.warning("Loading with problems (strict=False):\n%s", report)
    model.load_state_dict(to_load, strict=False)
    report.applied = True
    if report.ok:
        logger.info("%s", report)
    return report


# ------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------
def state_dict_for_release(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict in the released format: every key prefixed ``model.``, tensors on CPU.

    Shared tensors keep sharing storage, so aliases cost no extra space in the file.
    """
    return {RELEASE_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_release_checkpoint(model: nn.Module, path: PathLike) -> str:
    """Write ``state_dict_for_release(model)`` with ``torch.save``, atomically (readable by the reference too)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic_torch_save(state_dict_for_release(model), path)
