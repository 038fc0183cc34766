"""detectron2's checkpointer made safe for resuming: atomic writes, weights-only reads, strict
loading, a ``last_checkpoint`` that can only name a file of its own folder, a fallback to the
newest readable checkpoint, and per-process state (RNG) gathered from every process.

Files are detectron2's format (``{"model": ..., "trainer": ..., "iteration": ...}``), plus
``"per_rank"``: one entry per process of what ``per_rank_state()`` returned at that iteration.
detectron2 saves on the main process only, so the states are gathered before, by the
:class:`CollectPerRankState` hook that runs on every process.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Optional

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..checkpoint import CheckpointError, apply_state_dict, read_checkpoint_file, state_dict_from_checkpoint
from ..utils.atomic_write import atomic_torch_save, atomic_write_text

__all__ = ["CollectPerRankState", "TrainingCheckpointer", "LAST_CHECKPOINT"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
_FINAL = "model_final.pth"


def _recency(name: str) -> tuple[int, int] | None:
    """Sort key of a checkpoint written by training (``model_final`` after every ``model_NNNNNNN``)."""
    if name == _FINAL:
        return (1, 0)
    m = _PERIODIC.match(name)
    return (0, int(m.group(1))) if m else None


class TrainingCheckpointer(DetectionCheckpointer):
    """A :class:`DetectionCheckpointer` for training runs (see the module docstring).

    Args:
        model: the network (DDP-wrapped or not).
        save_dir: ``OUTPUT_DIR``.
        per_rank_state: called on every process by :meth:`collect_per_rank`; the list of results
            (rank order) is stored under ``"per_rank"`` by the next save of that iteration. It must
            return weights-only types (tensors, numbers, strings, lists, dicts).
        checkpointables: as detectron2's (``trainer=...``).
    """

    def __init__(
        self,
        model,
        save_dir: str,
        *,
        per_rank_state: Optional[Callable[[], Any]] = None,
        **checkpointables: Any,
    ):
        super().__init__(model, save_dir, **checkpointables)
        self.per_rank_state = per_rank_state
        self._per_rank: tuple[int, list[Any]] | None = None

    def collect_per_rank(self, iteration: int) -> None:
        """Gather every process's ``per_rank_state()`` for the save of ``iteration`` (collective:
        every process calls it)."""
        if self.per_rank_state is not None:
            self._per_rank = (int(iteration), comm.all_gather(self.per_rank_state()))

    # -- writing ----------------------------------------------------------------------------
    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` and then ``last_checkpoint``, each atomically (main
        process only). The per-process states collected for ``kwargs["iteration"]`` go with it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self._per_rank is not None and self._per_rank[0] == kwargs.get("iteration"):
            data["per_rank"] = self._per_rank[1]
        data.update(kwargs)
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"checkpoint name must be a file name, got {name!r}")
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if comm.is_main_process():
            atomic_write_text(last_filename_basename, os.path.join(self.save_dir, LAST_CHECKPOINT))

    # -- finding ----------------------------------------------------------------------------
    def _saved_checkpoints(self) -> list[str]:
        """Checkpoints written by training in ``save_dir``, newest first."""
        if not os.path.isdir(self.save_dir):
            return []
        found = [(_recency(n), n) for n in os.listdir(self.save_dir)]
        found = [(k, n) for k, n in found if k is not None and os.path.isfile(os.path.join(self.save_dir, n))]
        return [os.path.join(self.save_dir, n) for _, n in sorted(found, reverse=True)]

    def has_checkpoint(self) -> bool:
        """Whether ``save_dir`` has a ``last_checkpoint`` or any training checkpoint."""
        return os.path.exists(os.path.join(self.save_dir, LAST_CHECKPOINT)) or bool(self._saved_checkpoints())

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names ("" when it is missing or empty).

        Raises:
            CheckpointError: it names anything but a file name inside ``save_dir``.
        """
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        try:
            with open(tag, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return ""
        if not name:
            return ""
        if os.path.basename(name) != name or name in (".", "..") or "\x00" in name:
            raise CheckpointError(
                f"{tag} names {name!r}; it may only name a checkpoint file inside {self.save_dir} (a file name, no path)"
            )
        return os.path.join(self.save_dir, name)

    def resume_candidates(self) -> list[str]:
        """The file ``last_checkpoint`` names, then every other training checkpoint, newest first."""
        named = self.get_checkpoint_file()
        rest = [p for p in self._saved_checkpoints() if p != named]
        return ([named] if named else []) + rest

    def newest_readable(self) -> tuple[str, dict[str, Any]]:
        """The first of :meth:`resume_candidates` that reads, and its content. Unreadable files
        (empty, truncated, missing) are skipped with a warning.

        Raises:
            CheckpointError: none is readable.
        """
        candidates = self.resume_candidates()
        for k, path in enumerate(candidates):
            try:
                checkpoint = self._load_file(path)
            except (CheckpointError, FileNotFoundError) as e:
                logger.warning("cannot use checkpoint %s: %s", path, e)
                continue
            if k:
                logger.warning("using %s, the newest readable checkpoint in %s", path, self.save_dir)
            return path, checkpoint
        raise CheckpointError(
            f"no readable checkpoint in {self.save_dir} (tried: {', '.join(candidates) or 'none found'})"
        )

    def resume(self) -> dict[str, Any]:
        """Load :meth:`newest_readable` into the model (strictly) and the checkpointables.

        Returns:
            The checkpoint's data not consumed by the model and checkpointables (``"per_rank"``,
            ``"iteration"``, ...), with ``"path"`` added.

        Raises:
            CheckpointError: no readable checkpoint. CheckpointMismatchError: it does not fit the model.
        """
        path, checkpoint = self.newest_readable()
        extra = self._load_checkpoint(path, checkpoint)
        extra["path"] = path
        return extra

    # -- reading ----------------------------------------------------------------------------
    def _load_file(self, f: str) -> dict[str, Any]:
        obj = read_checkpoint_file(f)
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            raise CheckpointError(f"{f} is not a training checkpoint (no 'model' state dict)")
        return obj

    def _load_checkpoint(self, path: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
        self.logger.info("Loading %s", path)
        state, report = state_dict_from_checkpoint(checkpoint.pop("model"), path)
        apply_state_dict(self.model, state, report, strict=True)  # CheckpointMismatchError if it does not fit
        for key, obj in self.checkpointables.items():
            if key in checkpoint:
                obj.load_state_dict(checkpoint.pop(key))
        return checkpoint

    def load(self, path: str, checkpointables: Optional[list[str]] = None) -> dict[str, Any]:
        """detectron2's ``load`` through the safe reader and strict model loading."""
        if not path:
            return {}
        checkpoint = self._load_file(path)
        if checkpointables is not None:
            checkpoint = {k: v for k, v in checkpoint.items() if k == "model" or k in checkpointables
                          or k not in self.checkpointables}
        return self._load_checkpoint(path, checkpoint)


class CollectPerRankState(HookBase):
    """Runs on every process and, at each iteration a :class:`~detectron2.engine.hooks.PeriodicCheckpointer`
    with ``period`` saves (and the last one), gathers the per-process states for it. Place it
    before the checkpointer hook."""

    def __init__(self, checkpointer: TrainingCheckpointer, period: int):
        self._checkpointer = checkpointer
        self._period = int(period)

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self._period == 0 or done >= self.trainer.max_iter:
            self._checkpointer.collect_per_rank(self.trainer.iter)
