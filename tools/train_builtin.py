"""Reproduce the built-in model with one command: data, training, release checkpoint, evaluation.

    python -m tools.train_builtin                       # everything, on the CPU
    python -m tools.train_builtin --skip-data --skip-train   # only export + evaluate
    python -m tools.train_builtin --recognize           # + stage 2: the model that names what it segments
    python -m tools.train_builtin --recognize --skip-data \
        --stage1-weights models/builtin/semantic_sam_builtin.pth   # stage 2 only, from the shipped stage 1
    python -m tools.train_builtin --recognize --skip-data --resume   # continue a killed run where it stopped

(from the repository root, which is also where the steps run).

Steps (each one a plain command you can also run by hand; they are printed):

1. ``python -m tools.make_builtin_data --output DATA`` (synthetic scenes; train TSV shards, val SA-1B +
   COCO panoptic).
2. ``train_net.py --config-file configs/semantic_sam_builtin.yaml OUTPUT_DIR=OUT`` with the
   environment pointing at DATA (:func:`tools.make_builtin_data.builtin_env`).
3. Export ``OUT/model_final.pth`` to the release format (``model.``-prefixed flat state dict,
   float16 to halve the file) at ``--checkpoint`` (default models/builtin/semantic_sam_builtin.pth).
4. ``train_net.py --eval_only ... MODEL.WEIGHTS=<checkpoint>``: multi-granularity 1-IoU on the
   SA-1B-format val split and 1-IoU Max/Oracle on its COCO-panoptic copy.

With ``--recognize`` (issue 17) the data also has its labelled layouts (``--labelled panoptic parts``), its
regions take everyday colours of their class (``--colours typical``; both stages train on it) and stage 2
follows: ``train_net.py --config-file configs/semantic_sam_builtin_recognize.yaml
MODEL.WEIGHTS=<stage 1> OUTPUT_DIR=OUT2`` (text encoder, labelled clicks, generic panoptic queries, on
top of the stage-1 weights; ``--stage1-weights`` starts from an existing stage-1 checkpoint instead of
training one), then its later cycles (``--cycles``, default :data:`RECOGNIZE_CYCLES`, the shipped model's):
cycle k >= 2 is ``train_net.py --config-file configs/semantic_sam_builtin_recognize_restart.yaml
MODEL.WEIGHTS=<cycle k-1>/model_final.pth OUTPUT_DIR=OUT2/cycle<k> SEED=<15 + k>`` (a warm restart of the same
training with another data order), the export of the last cycle's weights at ``--recognize-checkpoint`` and their
evaluation on the held-out scenes: interactive (multi-granularity, 1-IoU Max/Oracle), object and part label
accuracy of clicked masks, PQ.

``--resume`` continues a killed run with the same arguments: a training step whose ``OUTPUT_DIR`` holds
``model_final.pth`` is skipped, the others run ``train_net.py --resume`` (from their last checkpoint, if any).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import Sequence

import torch

if __name__ == "__main__" and not __package__:
    raise SystemExit("run it from the repository root as a module: python -m tools.train_builtin [options]")

from tools.make_builtin_data import builtin_env  # noqa: E402

# The repository root: the steps run there (train_net.py, configs/, the default paths are relative to it).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = os.path.join("configs", "semantic_sam_builtin.yaml")
CHECKPOINT = os.path.join("models", "builtin", "semantic_sam_builtin.pth")
RECOGNIZE_CONFIG = os.path.join("configs", "semantic_sam_builtin_recognize.yaml")
RECOGNIZE_RESTART_CONFIG = os.path.join("configs", "semantic_sam_builtin_recognize_restart.yaml")
RECOGNIZE_CHECKPOINT = os.path.join("models", "builtin", "semantic_sam_builtin_recognize.pth")
RECOGNIZE_CYCLES = 8
"""Stage-2 cycles of the shipped recognize checkpoint (the first config, then warm restarts)."""

__all__ = ["export_release_checkpoint", "main"]


def export_release_checkpoint(src: str, dst: str, half: bool = True) -> str:
    """Write ``src`` (a detectron2 training checkpoint) as a released-format file at ``dst``.

    Float tensors are stored as float16 when ``half`` (loading casts them back to the
    model's float32). Optimizer and scheduler state are dropped.
    """
    from semantic_sam.checkpoint import RELEASE_PREFIX, read_state_dict

    state, _ = read_state_dict(src)
    out, converted = {}, {}
    for k, v in state.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            # aliases of one shared tensor stay one tensor in the file
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.stride())
            v = converted.setdefault(key, v.half())
        out[RELEASE_PREFIX + k] = v
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(out, dst)
    return dst


def _run(cmd: Sequence[str], env: dict[str, str], threads: int) -> float:
    # OMP_NUM_THREADS / MKL_NUM_THREADS from the environment take precedence over ``threads``.
    full_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **os.environ, **env}
    shown = " ".join(f"{k}={full_env[k]}" for k in full_env if k.startswith(("SAM_", "DETECTRON2", "OMP_NUM")))
    print(f"\n$ {shown} {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, env=full_env, cwd=ROOT, check=True)
    return time.time() - start


def _train(cmd: Sequence[str], output_dir: str, env: dict[str, str], args: argparse.Namespace) -> float | None:
    """Run the training command ``cmd`` (``[python, "train_net.py", ...]``) writing to ``output_dir``; with
    ``args.resume``, skip it when ``output_dir`` holds ``model_final.pth`` and else add ``--resume``. Returns the
    wall time in seconds, or None when skipped."""
    if args.resume:
        final = os.path.join(output_dir, "model_final.pth")
        if os.path.isfile(final):
            print(f"\n{final} exists: this training step is done (--resume)", flush=True)
            return None
        cmd = [*cmd[:2], "--resume", *cmd[2:]]
    return _run(cmd, env, args.threads)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join("datasets", "builtin"), help="data root (step 1 output)")
    p.add_argument("--output-dir", default=os.path.join("output", "builtin"), help="training OUTPUT_DIR")
    p.add_argument("--checkpoint", default=CHECKPOINT, help="where the release checkpoint goes")
    p.add_argument("--skip-data", action="store_true", help="reuse the data in --data")
    p.add_argument("--skip-train", action="store_true", help="reuse OUTPUT_DIR/model_final.pth")
    p.add_argument("--recognize", action="store_true", help="also train, export and evaluate stage 2 (naming)")
    p.add_argument(
        "--stage1-weights", default="", help="with --recognize: start stage 2 from this checkpoint, skip stage 1"
    )
    p.add_argument("--recognize-output-dir", default=os.path.join("output", "builtin_recognize"))
    p.add_argument("--recognize-checkpoint", default=RECOGNIZE_CHECKPOINT)
    p.add_argument(
        "--cycles",
        type=int,
        help=f"with --recognize: stage-2 cycles, the first config then warm restarts (default {RECOGNIZE_CYCLES}, "
        "the shipped model's; each takes about an hour on 2 CPU cores)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run: skip the training steps that wrote model_final.pth, resume the others",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="intra-op threads (default: 2 = the 2 cores the recipe is timed on). On a busy machine use 1: "
        "OpenMP threads that spin-wait for each other made a shared-core run ~10x slower",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY=VALUE config overrides for the last training stage (with --recognize: every cycle of stage 2)",
    )
    args = p.parse_args(argv)

    if args.stage1_weights and not args.recognize:
        p.error("--stage1-weights needs --recognize")
    if args.stage1_weights and not os.path.isfile(args.stage1_weights):
        p.error(f"--stage1-weights: no such file: {args.stage1_weights}")
    if args.cycles is not None and not args.recognize:
        p.error("--cycles needs --recognize")
    if args.cycles is None:
        args.cycles = RECOGNIZE_CYCLES
    if args.cycles < 1:
        p.error(f"--cycles: expected at least 1, got {args.cycles}")

    py = sys.executable
    env = builtin_env(args.data)
    times = {}
    if not args.skip_data:
        labelled = ["--labelled", "panoptic", "parts", "--colours", "typical"] if args.recognize else []
        cmd = [py, "-m", "tools.make_builtin_data", "--output", args.data, "--no-progress", *labelled]
        times["data"] = _run(cmd, {}, args.threads)
    stage1 = args.stage1_weights
    if not stage1:
        if not args.skip_train:
            opts = () if args.recognize else args.opts
            cmd = [py, "train_net.py", "--config-file", CONFIG, f"OUTPUT_DIR={args.output_dir}", *opts]
            times["train"] = _train(cmd, args.output_dir, env, args)
        export_release_checkpoint(os.path.join(args.output_dir, "model_final.pth"), args.checkpoint)
        print(f"\nwrote {args.checkpoint} ({os.path.getsize(args.checkpoint) / 2**20:.1f} MiB)")
        cmd = [
            py, "train_net.py", "--eval_only", "--config-file", CONFIG,
            f"OUTPUT_DIR={os.path.join(args.output_dir, 'eval')}", f"MODEL.WEIGHTS={args.checkpoint}",
        ]
        times["eval"] = _run(cmd, env, args.threads)
        stage1 = args.checkpoint
    if args.recognize:
        out = args.recognize_output_dir
        cycle_dirs = [out] + [os.path.join(out, f"cycle{k}") for k in range(2, args.cycles + 1)]
        if not args.skip_train:
            cmd = [
                py, "train_net.py", "--config-file", RECOGNIZE_CONFIG, f"OUTPUT_DIR={out}", f"MODEL.WEIGHTS={stage1}",
                *args.opts,
            ]
            times["train stage 2"] = _train(cmd, out, env, args)
            for k in range(2, args.cycles + 1):
                cmd = [
                    py, "train_net.py", "--config-file", RECOGNIZE_RESTART_CONFIG, f"OUTPUT_DIR={cycle_dirs[k - 1]}",
                    f"MODEL.WEIGHTS={os.path.join(cycle_dirs[k - 2], 'model_final.pth')}", f"SEED={15 + k}", *args.opts,
                ]
                times[f"train stage 2, cycle {k}"] = _train(cmd, cycle_dirs[k - 1], env, args)
        export_release_checkpoint(os.path.join(cycle_dirs[-1], "model_final.pth"), args.recognize_checkpoint)
        size = os.path.getsize(args.recognize_checkpoint) / 2**20
        print(f"\nwrote {args.recognize_checkpoint} ({size:.1f} MiB)")
        cmd = [
            py, "train_net.py", "--eval_only", "--config-file", RECOGNIZE_CONFIG,
            f"OUTPUT_DIR={os.path.join(out, 'eval')}", f"MODEL.WEIGHTS={args.recognize_checkpoint}",
        ]
        times["eval stage 2"] = _run(cmd, env, args.threads)
    print("\nwall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items() if v is not None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
