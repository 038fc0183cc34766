#!/usr/bin/env python
"""Semantic-SAM training and evaluation entry point (detectron2 engine).

Train (N processes, one per GPU; on a machine without GPUs, N CPU processes with gloo):
    python train_net.py --num-gpus N --config-file configs/semantic_sam_only_sa-1b_swinT.yaml \
        SAM.TRAIN.BATCH_SIZE_TOTAL=N
Resume the last checkpoint in OUTPUT_DIR:
    python train_net.py --resume --num-gpus N --config-file ...
Zero-shot COCO interactive evaluation of MODEL.WEIGHTS (or, with --resume and no MODEL.WEIGHTS, of the
last checkpoint in OUTPUT_DIR):
    python train_net.py --eval_only --num-gpus N --config-file ... \
        COCO.TEST.BATCH_SIZE_TOTAL=N MODEL.WEIGHTS=/path/to/weights.pth
With generic queries, DATASETS.TEST may also name coco_2017_val_panoptic_generic (PQ, box and mask AP,
mIoU) and pascal_part_val (part AP); the run then ends with one table of every dataset's numbers.

Resume is exact: model, optimizer, scheduler, grad scaler, iteration, the data stream's position and
every process's random generators are checkpointed, so a killed and resumed run ends with the same
weights as an uninterrupted one (same config and number of processes).
"""
from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import weakref
from collections import OrderedDict

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, default_setup, hooks, launch
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing import ProcessExitedException
from torch.nn.parallel import DistributedDataParallel

from semantic_sam import build_model
from semantic_sam.checkpoint import apply_state_dict, load_checkpoint, state_dict_from_checkpoint
from semantic_sam.config import load_config
from semantic_sam.engine import (
    CollectPerRankState,
    TrainingCheckpointer,
    capture_rng_state,
    preserved_rng_state,
    restore_rng_state,
)
from semantic_sam.evaluation import GenericInference, PromptedInference, is_generic_dataset, summary_table
from semantic_sam.solver import build_lr_scheduler, build_optimizer, freeze_all_but
from semantic_sam.utils.cli import UserError, check_launch_args, exit_on_user_error

import datasets.builtin as data_builtin

logger = logging.getLogger("semantic_sam")

# DefaultTrainer's PeriodicWriter writes the metrics every 20 iterations and after the last one.
_WRITE_PERIOD = 20


class BadRowMetric(HookBase):
    """Puts ``data/bad_rows`` into the metrics before each write: the corrupt SA-1B rows skipped so
    far, summed over all processes (an all-gather, so it runs on every process)."""

    def __init__(self, period: int = _WRITE_PERIOD):
        self._period = period

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self._period == 0 or done == self.trainer.max_iter:
            count = getattr(self.trainer.data_loader, "bad_rows", 0)
            total = sum(comm.all_gather(count))
            self.trainer.storage.put_scalar("data/bad_rows", total, smoothing_hint=False)


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with Semantic-SAM's model, data, optimizer and evaluators."""

    def __init__(self, cfg):
        super(DefaultTrainer, self).__init__()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = _wrap_ddp(model)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = TrainingCheckpointer(
            model, cfg.OUTPUT_DIR, per_rank_state=_PerRankState(self), trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        hook_list = super().build_hooks()
        # On every process, before the (main-process-only) checkpointer and the collective hooks.
        schedulers = [i for i, h in enumerate(hook_list) if isinstance(h, hooks.LRScheduler)]
        collect = CollectPerRankState(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD)
        hook_list.insert(schedulers[0] + 1 if schedulers else 0, collect)
        writers = [i for i, h in enumerate(hook_list) if isinstance(h, hooks.PeriodicWriter)]
        hook_list.insert(writers[0] if writers else len(hook_list), BadRowMetric())
        return hook_list

    @classmethod
    def build_model(cls, cfg):
        """The model; for training, only the parameters of ``SOLVER.TRAINABLE_PARAMS`` (when set) keep
        ``requires_grad``."""
        model = build_model(cfg, device=cfg.MODEL.DEVICE)
        if cfg.SOLVER.TRAINABLE_PARAMS:
            kept = freeze_all_but(model, cfg.SOLVER.TRAINABLE_PARAMS)
            logger.info("SOLVER.TRAINABLE_PARAMS: training %d parameter tensors, the rest frozen", len(kept))
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        return data_builtin.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return data_builtin.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None, weights: str | None = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return data_builtin.build_evaluator(cfg, dataset_name, output_folder, weights)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST``, each through its own wrapper:
        interactive datasets (COCO clicks, SA-1B) through :class:`PromptedInference` (images without
        segments are counted, not fatal), generic ones (COCO panoptic generic, part datasets) through
        :class:`GenericInference` (whole-image segmentation by the generic queries). When a generic dataset
        was evaluated, the headline numbers of all datasets are logged in one table. The random generators
        are left as they were, so that evaluating during training does not change what the training draws
        next.

        Returns:
            ``{task: {metric: value}}`` for one dataset, else ``{dataset: {task: {metric: value}}}``.
        """
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} DATASETS.TEST")
        model = _unwrap(model)
        results = OrderedDict()
        with preserved_rng_state():
            for idx, name in enumerate(cfg.DATASETS.TEST):
                data_loader = cls.build_test_loader(cfg, name)
                evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
                if is_generic_dataset(name):
                    wrapped = GenericInference(model, MetadataCatalog.get(name), precision=cfg.TEST.PRECISION)
                else:
                    wrapped = PromptedInference(model, precision=cfg.TEST.PRECISION)
                results[name] = inference_on_dataset(wrapped, data_loader, evaluator)
                if comm.is_main_process():
                    if not isinstance(results[name], dict):
                        raise TypeError(f"the evaluator of {name} returned {results[name]!r}, not a dict")
                    logger.info("Evaluation results for %s in csv format:", name)
                    print_csv_format(results[name])
        if comm.is_main_process() and any(is_generic_dataset(name) for name in results):
            logger.info("Evaluation summary (%s):\n%s", ", ".join(results), summary_table(results))
        if len(results) == 1:
            return list(results.values())[0]
        return results

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["data"] = self._trainer.data_loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "data" in state_dict:
            self._trainer.data_loader.load_state_dict(state_dict["data"])
        else:
            logger.warning("the checkpoint has no data-stream state: the data stream starts again from its seed")

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume everything (model strictly, optimizer, scheduler, grad scaler, iteration, data
        stream, random generators) from OUTPUT_DIR's newest readable checkpoint; without one (or
        without ``--resume``) load MODEL.WEIGHTS strictly."""
        if resume and self.checkpointer.has_checkpoint():
            extra = self.checkpointer.resume()
            self.start_iter = self.iter + 1
            _restore_per_rank(extra.get("per_rank"), self._trainer.data_loader)
            logger.info("Resumed from %s: training continues at iteration %d", extra["path"], self.start_iter)
            return
        _load_weights(self.model, self.cfg.MODEL.WEIGHTS)
        self.start_iter = 0


class _PerRankState:
    """What each process adds to a checkpoint: its random generators and its corrupt-row count."""

    def __init__(self, trainer: Trainer):
        self._trainer = weakref.proxy(trainer)

    def __call__(self) -> dict:
        return {"rng": capture_rng_state(), "bad_rows": int(self._trainer._trainer.data_loader.bad_rows)}


def _restore_per_rank(per_rank: list[dict] | None, data_loader) -> None:
    """Put this process's saved random generators and corrupt-row count back."""
    world, rank = comm.get_world_size(), comm.get_rank()
    if per_rank is not None and len(per_rank) == world:
        restore_rng_state(per_rank[rank]["rng"])
        data_loader.bad_rows = int(per_rank[rank]["bad_rows"])
        return
    saved = "none" if per_rank is None else f"{len(per_rank)} processes"
    logger.warning(
        "the checkpoint holds random-generator states for %s, this run has %d processes: the data stream "
        "continues where it stopped, but the random draws differ from an uninterrupted run",
        saved, world,
    )
    if per_rank is not None and rank == 0:
        data_loader.bad_rows = sum(int(p["bad_rows"]) for p in per_rank)


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def _load_weights(model, path: str | None) -> None:
    if path:
        report = load_checkpoint(_unwrap(model), path, strict=True)
        logger.info("Loaded weights from %s: %s", path, report)


def _load_eval_weights(cfg, model, resume: bool) -> str:
    """Load the weights to evaluate, strictly: MODEL.WEIGHTS when set, else (with ``--resume``) the
    newest readable checkpoint of OUTPUT_DIR. Returns the file's path."""
    checkpointer = TrainingCheckpointer(model, cfg.OUTPUT_DIR)
    if cfg.MODEL.WEIGHTS:
        if resume and checkpointer.has_checkpoint():
            logger.info("--resume: not used, MODEL.WEIGHTS names the weights to evaluate")
        _load_weights(model, cfg.MODEL.WEIGHTS)
        return cfg.MODEL.WEIGHTS
    if resume and checkpointer.has_checkpoint():
        path, checkpoint = checkpointer.newest_readable()
        state, report = state_dict_from_checkpoint(checkpoint["model"], path)
        apply_state_dict(_unwrap(model), state, report, strict=True)
        return path
    raise UserError(
        "--eval_only needs weights: set MODEL.WEIGHTS=/path/to/weights.pth, or add --resume to evaluate the "
        f"last checkpoint of OUTPUT_DIR ({cfg.OUTPUT_DIR}, which has none)"
    )


def _wrap_ddp(model):
    """DistributedDataParallel when there are several processes. ``find_unused_parameters`` is off:
    every trainable parameter is in the loss graph of every step (the decoder keeps its unused
    projections in with a ``0 *`` term; tests/modeling/test_gradients.py checks it), so DDP need not
    search the graph for unused ones."""
    if comm.get_world_size() == 1:
        return model
    on_gpu = next(model.parameters()).is_cuda
    # Buffers are constants (pixel statistics, position indices): synced once, not at every forward.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        no_forward_sync = {"forward_sync_buffers": False}
    else:
        no_forward_sync = {"broadcast_buffers": False}
    return DistributedDataParallel(
        model,
        device_ids=[comm.get_local_rank()] if on_gpu else None,
        find_unused_parameters=False,
        **no_forward_sync,
    )


def setup(args):
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if not cfg.MODEL.DEVICE:
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.SOLVER.AMP.ENABLED = False
        logging.getLogger(__name__).info("SOLVER.AMP.ENABLED turned off: AMP needs CUDA")
    cfg.freeze()
    default_setup(cfg, args)  # logs, saves the merged config to OUTPUT_DIR/config.yaml, seeds
    for name in ("semantic_sam", "datasets"):  # the package's and the data pipeline's loggers
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name)
    data_builtin.register_datasets(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        weights = _load_eval_weights(cfg, model, args.resume)
        logger.info("Evaluating the weights of %s", weights)
        evaluators = [Trainer.build_evaluator(cfg, name, weights=weights) for name in cfg.DATASETS.TEST]
        results = Trainer.test(cfg, model, evaluators)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    missing = data_builtin.unavailable_test_datasets(cfg)
    if missing:
        for name, why in missing.items():
            logger.warning("Evaluation of %s after training is disabled: %s", name, why)
        cfg.defrost()
        cfg.DATASETS.TEST = [n for n in cfg.DATASETS.TEST if n not in missing]
        cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", "--config_file", required=True, metavar="FILE")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--eval-only", "--eval_only", dest="eval_only", action="store_true")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine (GPUs, or CPU processes)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY.SUB=value config overrides")
    return parser


def _launched_main(args):
    """``main`` in a launched process: a user error prints its one-line message and ends the
    process with status 2, which :func:`invoke_main` passes on.

    A process started by the launcher (more than one process) ends with ``os._exit`` once its work
    is done and its logs are flushed: at a normal interpreter exit, the C++ teardown of torch's
    communication and thread-pool objects sometimes aborts the process ("terminate called without
    an active exception", seen in 2-process runs on CPU) after every result was written, and the
    launcher would report the run as failed."""
    try:
        results, status = exit_on_user_error(main)(args), 0
    except SystemExit as e:
        results, status = None, e.code if isinstance(e.code, int) else 1
    if comm.get_world_size() > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    if status:
        sys.exit(status)
    return results


@exit_on_user_error
def invoke_main() -> None:
    args = argument_parser().parse_args()
    check_launch_args(args.num_gpus, args.num_machines, args.machine_rank)
    cfg = load_config(args.config_file, args.opts)  # fail fast, before spawning processes
    if not args.eval_only:
        data_builtin.images_per_process(cfg, args.num_gpus * args.num_machines)
    try:
        launch(
            _launched_main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessExitedException as e:
        if e.exit_code == 2:  # a process reported a user error (its message is above)
            sys.exit(2)
        raise


if __name__ == "__main__":
    invoke_main()
