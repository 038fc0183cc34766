"""train_net.py end to end on CPU: DDP training in 2 processes (gloo), overfitting one image,
resuming, ``--eval_only``, command-line errors and corrupt SA-1B rows.

The runs use the tiny config at 64 px on a few synthetic SA-1B images (tools/make_synthetic_sa1b.py
-> tools/convert_sa1b_to_tsv.py) and the tiny COCO panoptic set (datasets/tiny_coco_panoptic.py).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng

import datasets.builtin as data_builtin
import train_net
from datasets.register_coco_panoptic_interactive import COCO_INTERACTIVE_VAL
from datasets.register_sa1b import register_sa1b_tsv
from datasets.sa1b_dataset_mapper import SA1BDatasetMapper
from datasets.tiny_coco_panoptic import write_tiny_coco_panoptic
from semantic_sam.checkpoint import read_state_dict
from semantic_sam.config import ConfigError, load_config
from semantic_sam.data.tsv import lineidx_path_for
from semantic_sam.solver import build_optimizer
from tools.convert_sa1b_to_tsv import convert_sa1b_to_tsv
from tools.make_synthetic_sa1b import make_synthetic_sa1b

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "train_net.py")
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")
TINY_WEIGHTS = os.path.join(ROOT, "tests", "fixtures", "parity_tiny", "tiny_parity.pth")
# Small inputs everywhere; SEED fixed so that the runs are repeatable.
SMALL = [
    "SEED=0",
    "SAM.INPUT.IMAGE_SIZE=64",
    "COCO.INPUT.MIN_SIZE_TEST=64",
    "COCO.INPUT.MAX_SIZE_TEST=96",
    "COCO.DATALOADER.NUM_WORKERS=0",
]
# Environment variables that would redirect the datasets (DATASET.md); the tests set their own.
_DATA_ENV = ("SAM_DATASET", "SAM_DATASETS", "SAM_DATASET_START", "SAM_SUBSET_START", "SAM_DATASET_END",
             "SAM_SUBSET_END", "SAM_DATASET_VAL", "SAM_JSON", "SAM_JSON_VAL", "DETECTRON2_DATASETS", "DATASET")
LOSS_KEYS = {f"{name}_{i}" for i in range(3) for name in
             ("loss_mask_bce", "loss_mask_dice", "iou_score_loss", "loss_bbox", "loss_giou")}


# ------------------------------------------------------------------------------------------ data


def _corrupt_json_of_row(tsv_path: str, row: int) -> None:
    """Make the annotation JSON of ``row`` unparsable without changing any byte offset."""
    with open(lineidx_path_for(tsv_path)) as f:
        offset = int(f.read().splitlines()[row].split()[0])
    with open(tsv_path, "r+b") as f:
        f.seek(offset)
        json_start = offset + f.readline().index(b"\t") + 1  # <file name>\t<JSON>\t<base64 JPEG>
        f.seek(json_start)
        assert f.read(1) == b"{"
        f.seek(json_start)
        f.write(b"X")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """``tsv``: 4 synthetic images in 2 shards; ``corrupt_tsv``: the same with shard 0 row 1
    unparsable; ``coco``: the tiny COCO panoptic root; ``no_coco``: a root without COCO."""
    root = tmp_path_factory.mktemp("train_net_data")
    make_synthetic_sa1b(str(root / "raw"), num_images=4, seed=0, size=96)
    convert_sa1b_to_tsv(str(root / "raw"), str(root / "tsv"), 2, progress=False)
    convert_sa1b_to_tsv(str(root / "raw"), str(root / "corrupt_tsv"), 2, progress=False)
    _corrupt_json_of_row(str(root / "corrupt_tsv" / "sa1b-00000.tsv"), 1)
    write_tiny_coco_panoptic(str(root / "coco"))
    os.makedirs(root / "no_coco")
    return {k: str(root / k) for k in ("tsv", "corrupt_tsv", "coco", "no_coco")}


@pytest.fixture()
def one_thread():
    """In-process training steps on one thread (the cores are shared; 2 threads oversubscribe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ running


def _run(args: list[str], sam_dataset: str, coco_root: str, script: str = TRAIN_NET, timeout: int = 500):
    env = {k: v for k, v in os.environ.items() if k not in _DATA_ENV}
    env.update(
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",  # 2 processes on 2 cores
        SAM_DATASET=sam_dataset,
        DETECTRON2_DATASETS=coco_root,
    )
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


def _metrics(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _last_training_metrics(output_dir: str) -> dict:
    return [m for m in _metrics(output_dir) if "total_loss" in m][-1]


def _assert_same(a, b, path: str = "") -> None:
    """Recursive equality of (nested) state dicts: tensors exactly, other values with ==."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------------------ 1. DDP

# train_net.py with test-only recording. Each process saves, after training, its weights before
# and after training, its gradients of the first step (after DDP's all-reduce, captured by a hook
# on the inner SimpleTrainer, which is the one that calls after_backward), the images it trained
# on and its own corrupt-row count. Under `spawn` the children re-run this file's top level
# (as __mp_main__), so the patched Trainer is the one train_net.main builds there too.
_RECORDING_TRAIN_NET = '''
import os

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

import train_net


def _state(model):
    return {k: v.detach().clone() for k, v in train_net._unwrap(model).state_dict().items()}


class FirstGradients(HookBase):
    grads = None

    def after_backward(self):
        if self.grads is None:
            named = train_net._unwrap(self.trainer.model).named_parameters()
            self.grads = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}


class FileNames:
    def __init__(self, loader):
        self.loader, self.names = loader, []

    def __iter__(self):
        for batch in self.loader:
            self.names += [d["file_name"] for d in batch]
            yield batch

    def __getattr__(self, name):  # bad_rows, state_dict, ...: the wrapped loader's
        return getattr(self.loader, name)


class RecordingTrainer(train_net.Trainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.first_gradients = FirstGradients()
        self._trainer.register_hooks([self.first_gradients])
        self.initial_state = _state(self.model)

    @classmethod
    def build_train_loader(cls, cfg):
        return FileNames(super().build_train_loader(cfg))

    def train(self):
        results = super().train()
        record = {"initial": self.initial_state, "final": _state(self.model), "grads": self.first_gradients.grads,
                  "names": self.data_loader.names, "bad_rows": self.data_loader.bad_rows}
        torch.save(record, os.path.join(self.cfg.OUTPUT_DIR, f"record_rank{comm.get_rank()}.pt"))
        return results


train_net.Trainer = RecordingTrainer

if __name__ == "__main__":
    train_net.invoke_main()
'''


@pytest.mark.slow
def test_ddp_training_in_two_cpu_processes(data, tmp_path):
    """--num-gpus 2 on CPU: real DDP over gloo. Ranks train on different images, yet their
    gradients after the all-reduce and their weights are identical; the run writes its config,
    metrics (losses, corrupt rows summed over both ranks, the final COCO evaluation) and checkpoint."""
    script = tmp_path / "recording_train_net.py"
    script.write_text(_RECORDING_TRAIN_NET)
    out = str(tmp_path / "out")
    proc = _run(
        ["--num-gpus", "2", "--dist-url", "auto", "--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL,
         "SOLVER.MAX_ITER=2", "SAM.TRAIN.BATCH_SIZE_TOTAL=2"],
        sam_dataset=data["corrupt_tsv"], coco_root=data["coco"], script=str(script),
    )
    _check_ok(proc)

    for name in ("config.yaml", "metrics.json", "model_final.pth", "last_checkpoint", "log.txt"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert load_config(os.path.join(out, "config.yaml")).SOLVER.MAX_ITER == 2
    last = _last_training_metrics(out)
    assert last["iteration"] == 1
    assert LOSS_KEYS <= set(last) and all(math.isfinite(last[k]) for k in LOSS_KEYS)
    # Metrics are medians over the steps; of 2 steps, means: the total is the sum of the terms.
    assert last["total_loss"] == pytest.approx(sum(last[k] for k in LOSS_KEYS), rel=1e-5)

    r0, r1 = (torch.load(os.path.join(out, f"record_rank{r}.pt"), weights_only=False) for r in (0, 1))
    # 2 iterations x 2 ranks draw the whole first permutation of the 4 rows: the corrupt row once.
    assert (r0["bad_rows"], r1["bad_rows"]) in {(1, 0), (0, 1)}
    assert last["data/bad_rows"] == 1  # summed over the ranks
    assert r0["names"] != r1["names"] and len(r0["names"]) == len(r1["names"]) == 2

    _assert_same(r0["initial"], r1["initial"])  # different seeds (SEED + rank): DDP broadcast rank 0's
    assert set(r0["grads"]) == set(r1["grads"]) and len(r0["grads"]) > 100
    for name, g in r0["grads"].items():
        torch.testing.assert_close(g, r1["grads"][name], rtol=0, atol=0, msg=name)
    assert sum(g.abs().sum().item() for g in r0["grads"].values()) > 0
    _assert_same(r0["final"], r1["final"])
    changed = [k for k in r0["final"] if not torch.equal(r0["final"][k], r0["initial"][k])]
    assert len(changed) > 100
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert saved["iteration"] == 1
    _assert_same({k: saved["model"][k] for k in r0["final"]}, r0["final"])

    # The evaluation after training (EvalHook), on both ranks' halves of the tiny COCO set.
    evaluated = {k: v for m in _metrics(out) for k, v in m.items() if k.startswith("interactive/")}
    assert evaluated["interactive/num_images"] == 2 and evaluated["interactive/num_segments"] == 3
    assert 0 <= evaluated["interactive/1-IoU@Max"] <= evaluated["interactive/1-IoU@Oracle"] <= 100


# ------------------------------------------------------------------------------------------ 2. overfit


@pytest.mark.slow
def test_overfitting_one_image_halves_the_loss(data, one_thread):
    """The model and optimizer train_net builds (AdamW, LR multipliers, full-model clipping) fit one
    mapped image with fixed prompts: the loss of the last steps is under half the first one."""
    name = "test_train_net_overfit"
    cfg = load_config(TINY, [*SMALL, "MODEL.DEVICE=cpu", "SOLVER.BASE_LR=2e-3"])
    register_sa1b_tsv(name, data["tsv"])
    try:
        seed_all_rng(0)
        sample = SA1BDatasetMapper(cfg, is_train=True, dataset_name=name)(DatasetCatalog.get(name)[0])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert len(sample["instances"]) >= 3

    seed_all_rng(0)
    model = train_net.Trainer.build_model(cfg).train()
    optimizer = train_net.Trainer.build_optimizer(cfg, model)
    losses = []
    for _ in range(40):
        seed_all_rng(1)  # the same clicks, boxes and noise at every step
        loss = sum(model([sample]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def test_trainable_params_train_only_what_they_name(data, tmp_path):
    """SOLVER.TRAINABLE_PARAMS: after 2 steps from the tiny weights, the decoder's parameters moved and every
    other parameter is bit-identical to the weights it started from; the optimizer holds only the decoder's."""
    out = str(tmp_path / "out")
    opts = ["--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL, "SOLVER.MAX_ITER=2", "DATASETS.TEST=[]",
            f"MODEL.WEIGHTS={TINY_WEIGHTS}", r"SOLVER.TRAINABLE_PARAMS=['^sem_seg_head\.predictor\.']"]
    proc = _run(opts, data["tsv"], data["no_coco"])
    _check_ok(proc)
    assert "SOLVER.TRAINABLE_PARAMS: training" in proc.stdout + proc.stderr
    start, _ = read_state_dict(TINY_WEIGHTS)
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    end = saved["model"]
    decoder = [k for k in start if k.startswith("sem_seg_head.predictor.") and start[k].is_floating_point()]
    others = [k for k in start if not k.startswith("sem_seg_head.predictor.")]
    assert decoder and others
    assert all(torch.equal(start[k].float(), end[k].float()) for k in others)
    moved = [k for k in decoder if not torch.equal(start[k].float(), end[k].float())]
    assert len(moved) > len(decoder) // 2, moved
    assert len(_optimizer_state(saved)["state"]) <= len(decoder)


# ------------------------------------------------------------------------------------------ 3. resume


def _optimizer_state(ckpt: dict) -> dict:
    return ckpt["trainer"]["_trainer"]["optimizer"]


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(data, tmp_path, monkeypatch, one_thread):
    """Stop after 2 iterations; the trainer built with --resume starts at iteration 2 with the saved
    model, optimizer and LR-scheduler state; the resumed run continues the optimizer's state."""
    out = str(tmp_path / "out")
    opts = ["--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL, "SOLVER.CHECKPOINT_PERIOD=1"]
    _check_ok(_run([*opts, "SOLVER.MAX_ITER=2"], data["tsv"], data["no_coco"]))
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == [
        "model_0000000.pth", "model_0000001.pth", "model_final.pth"]
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert saved["iteration"] == 1

    # In process: what --resume loads is exactly what was saved.
    monkeypatch.setenv("SAM_DATASET", data["tsv"])
    monkeypatch.setenv("DETECTRON2_DATASETS", data["no_coco"])
    cfg = load_config(TINY, [f"OUTPUT_DIR={out}", *SMALL, "SOLVER.MAX_ITER=4", "MODEL.DEVICE=cpu",
                             "DATASETS.TEST=[]"])
    data_builtin.register_datasets(cfg)
    trainer = train_net.Trainer(cfg)
    fresh_optimizer = trainer.optimizer.state_dict()
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    _assert_same(trainer.model.state_dict(), saved["model"])
    _assert_same(trainer.optimizer.state_dict(), _optimizer_state(saved))
    assert fresh_optimizer["state"] == {}  # so the state above was loaded, not rebuilt
    scheduler = trainer.scheduler.state_dict()
    _assert_same(scheduler, saved["trainer"]["hooks"]["LRScheduler"])
    assert scheduler["last_epoch"] == 2

    # The resumed command runs iterations 2 and 3 only.
    proc = _run(["--resume", *opts, "SOLVER.MAX_ITER=4"], data["tsv"], data["no_coco"])
    _check_ok(proc)
    assert "Starting training from iteration 2" in proc.stdout
    resumed = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert resumed["iteration"] == 3
    steps = {float(s["step"]) for s in _optimizer_state(resumed)["state"].values()}
    assert steps == {4.0}  # AdamW's step count continued from 2
    iterations = [m["iteration"] for m in _metrics(out) if "total_loss" in m]
    assert iterations[-1] == 3


# train_net.py that dies like a killed process (os._exit: no cleanup, data workers still running)
# right after the step of iteration $CRASH_AFTER_ITER, once every process has passed its hooks.
_CRASHING_TRAIN_NET = '''
import os

from detectron2.engine import HookBase
from detectron2.utils import comm

import train_net


class Crash(HookBase):
    def after_step(self):
        if self.trainer.iter == int(os.environ["CRASH_AFTER_ITER"]):
            comm.synchronize()
            os._exit(9)


class CrashingTrainer(train_net.Trainer):
    def build_hooks(self):
        return super().build_hooks() + [Crash()]


train_net.Trainer = CrashingTrainer

if __name__ == "__main__":
    train_net.invoke_main()
'''


def _final_state(out: str) -> dict:
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    return {"model": ckpt["model"], "optimizer": _optimizer_state(ckpt), "iteration": ckpt["iteration"],
            "data": ckpt["trainer"]["data"]}


@pytest.mark.slow
@pytest.mark.parametrize("processes, workers", [(1, 2), (2, 1)], ids=["1-process-2-workers", "2-processes"])
def test_killed_and_resumed_run_ends_with_the_same_model(data, tmp_path, processes, workers):
    """6 iterations straight through vs. killed after iteration 3 and resumed with --resume: the final
    weights, optimizer state and data-stream state are bit-identical. The straight run uses no data
    workers: what a step trains on does not depend on the workers either."""
    script = tmp_path / "crashing_train_net.py"
    script.write_text(_CRASHING_TRAIN_NET)
    opts = ["--num-gpus", str(processes), "--dist-url", "auto", "--config-file", TINY, *SMALL,
            "SOLVER.MAX_ITER=6", "SOLVER.CHECKPOINT_PERIOD=2", f"SAM.TRAIN.BATCH_SIZE_TOTAL={processes}"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    _check_ok(_run([*opts, f"OUTPUT_DIR={straight}", "SAM.DATALOADER.NUM_WORKERS=0"], data["tsv"], data["no_coco"]))

    with_workers = [*opts, f"OUTPUT_DIR={killed}", f"SAM.DATALOADER.NUM_WORKERS={workers}"]
    os.environ["CRASH_AFTER_ITER"] = "3"
    try:
        proc = _run(with_workers, data["tsv"], data["no_coco"], script=str(script))
    finally:
        del os.environ["CRASH_AFTER_ITER"]
    assert proc.returncode != 0
    assert not os.path.exists(os.path.join(killed, "model_final.pth"))
    with open(os.path.join(killed, "last_checkpoint")) as f:
        assert f.read() == "model_0000003.pth"

    proc = _run(["--resume", *with_workers], data["tsv"], data["no_coco"])
    _check_ok(proc)
    assert "Starting training from iteration 4" in proc.stdout
    a, b = _final_state(straight), _final_state(killed)
    assert a["iteration"] == b["iteration"] == 5
    assert a["data"] == b["data"] == {"seed": 0, "position": 6 * processes}
    _assert_same(a["optimizer"], b["optimizer"])
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ, e.g. {differ[:5]}"
    # The resumed run trained: its weights are not those of the checkpoint it started from.
    start = torch.load(os.path.join(killed, "model_0000003.pth"), weights_only=True)["model"]
    assert any(not torch.equal(start[k], b["model"][k]) for k in start)


# ------------------------------------------------------------------------------------------ 4. eval


def _eval_results(out: str) -> dict:
    path = os.path.join(out, "inference", COCO_INTERACTIVE_VAL, "interactive_results.json")
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def eval_one_process(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval_1"))
    proc = _run(["--eval_only", "--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL, f"MODEL.WEIGHTS={TINY_WEIGHTS}"],
                data["tsv"], data["coco"])
    return proc, out


@pytest.mark.slow
def test_eval_only(eval_one_process):
    proc, out = eval_one_process
    _check_ok(proc)
    results = _eval_results(out)
    point = results["interactive"]
    assert (point["num_images"], point["num_images_without_segments"], point["num_segments"]) == (2, 1, 3)
    assert 0 <= point["1-IoU@Max"] <= point["1-IoU@Oracle"] <= 100
    for key in ("1-IoU@Max", "1-IoU@Oracle"):  # the printed table: "|   1-IoU@Max |   33.33 |"
        (row,) = [line.split("|") for line in proc.stdout.splitlines() if f" {key} |" in line]
        assert float(row[-2]) == pytest.approx(point[key], abs=0.006)
    assert os.path.isfile(os.path.join(out, "config.yaml"))


@pytest.mark.slow
def test_eval_only_in_two_processes_matches_one(data, tmp_path, eval_one_process):
    _check_ok(eval_one_process[0])
    out = str(tmp_path / "out")
    proc = _run(["--eval_only", "--num-gpus", "2", "--dist-url", "auto", "--config-file", TINY, f"OUTPUT_DIR={out}",
                 *SMALL, f"MODEL.WEIGHTS={TINY_WEIGHTS}", "COCO.TEST.BATCH_SIZE_TOTAL=2"],
                data["tsv"], data["coco"])
    _check_ok(proc)
    one, two = _eval_results(eval_one_process[1]), _eval_results(out)
    assert set(one) == set(two)
    assert one.pop("weights") == two.pop("weights") == TINY_WEIGHTS
    for task in one:
        assert one[task] == pytest.approx(two[task], abs=1e-6), task


def _plant_checkpoint(out: str, model: torch.nn.Module) -> None:
    """OUTPUT_DIR with a last_checkpoint naming ``model``'s weights (not the tiny model's)."""
    from semantic_sam.engine import TrainingCheckpointer

    os.makedirs(out, exist_ok=True)
    TrainingCheckpointer(model, out).save("model_0000001", iteration=1)


@pytest.mark.slow
def test_eval_only_evaluates_model_weights_even_with_resume(data, tmp_path):
    """The README's evaluation command has --resume and MODEL.WEIGHTS; OUTPUT_DIR has a checkpoint of
    another model. MODEL.WEIGHTS is evaluated (loading the other checkpoint strictly would fail),
    and the log and the results say so."""
    out = str(tmp_path / "out")
    _plant_checkpoint(out, torch.nn.Linear(2, 2))
    proc = _run(["--eval_only", "--resume", "--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL,
                 f"MODEL.WEIGHTS={TINY_WEIGHTS}"], data["tsv"], data["coco"])
    _check_ok(proc)
    assert f"Evaluating the weights of {TINY_WEIGHTS}" in proc.stdout + proc.stderr
    assert "--resume: not used, MODEL.WEIGHTS names the weights to evaluate" in proc.stdout + proc.stderr
    assert _eval_results(out)["weights"] == TINY_WEIGHTS


def _user_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc.stderr


def test_eval_only_needs_weights(data, tmp_path):
    err = _user_error(_run(["--eval_only", "--resume", "--config-file", TINY, f"OUTPUT_DIR={tmp_path / 'out'}",
                            "MODEL.WEIGHTS="], data["tsv"], data["coco"]))
    assert "error: --eval_only needs weights: set MODEL.WEIGHTS" in err, err


@pytest.mark.parametrize("processes", [1, 2])
def test_eval_only_resume_loads_the_checkpoint_strictly(data, tmp_path, processes):
    """Without MODEL.WEIGHTS, --resume evaluates the last checkpoint; one of another model is refused
    (it used to load non-strictly and evaluate a partly random model), also when the error happens
    inside launched processes."""
    out = str(tmp_path / "out")
    _plant_checkpoint(out, torch.nn.Linear(2, 2))
    err = _user_error(_run(["--eval_only", "--resume", "--num-gpus", str(processes), "--dist-url", "auto",
                            "--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL, "MODEL.WEIGHTS=",
                            f"COCO.TEST.BATCH_SIZE_TOTAL={processes}"], data["tsv"], data["coco"]))
    assert "error: checkpoint" in err and "model_0000001.pth" in err and "strict loading failed" in err, err


# ------------------------------------------------------------------------------------------ 5. CLI errors


@pytest.fixture()
def bad_yaml(tmp_path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  NAME: [a\n")
    return str(path)


def _invoke_train_net(monkeypatch, capsys, argv: list[str]) -> str:
    monkeypatch.setattr(sys, "argv", ["train_net.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config-file", TINY, "FOO.BAR=1"], "unknown config key 'FOO.BAR'"),
        (["--config-file", TINY, "SOLVER.MAX_ITER=abc"], "SOLVER.MAX_ITER"),
        (["--config-file", "/nonexistent/config.yaml"], "config file not found: /nonexistent/config.yaml"),
        (["--config-file", "BAD_YAML"], "YAML syntax error"),
        (["--config-file", TINY, "SOLVER.MAX_ITER"], "not of the form KEY.SUB=value"),
        (["--config-file", TINY, "SOLVER.MAX_ITER", "4"], "not of the form KEY.SUB=value"),
        (["--num-gpus", "2", "--config-file", TINY], "SAM.TRAIN.BATCH_SIZE_TOTAL=1 must be a positive multiple"),
        (["--config-file", TINY, "--bogus"], "unrecognized arguments: --bogus"),
        (["SOLVER.MAX_ITER=4"], "--config-file"),
    ],
    ids=["unknown-key", "wrong-type", "missing-file", "yaml-syntax", "no-equals", "key-space-value",
         "batch-vs-processes", "unknown-flag", "no-config"],
)
def test_train_net_user_errors(argv, message, bad_yaml, monkeypatch, capsys):
    argv = [bad_yaml if a == "BAD_YAML" else a for a in argv]
    err = _invoke_train_net(monkeypatch, capsys, argv)
    assert "error:" in err and message in err, err


def test_train_net_user_error_as_a_process(data):
    proc = _run(["--config-file", TINY, "MODEL.NOT_A_KEY=3"], data["tsv"], data["no_coco"])
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "unknown config key 'MODEL.NOT_A_KEY'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_train_net_missing_training_data_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAM_DATASET", str(tmp_path / "no_shards"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    err = _invoke_train_net(monkeypatch, capsys, ["--config-file", TINY, f"OUTPUT_DIR={tmp_path / 'out'}"])
    assert "error:" in err and "no_shards" in err and "SAM_DATASET" in err, err


def test_tool_user_errors(tmp_path, bad_yaml, capsys):
    import demo
    from tools import check_parity
    from tools import convert_sa1b_to_tsv as convert_tool
    from tools import make_synthetic_sa1b as synthetic_tool

    def check(code: int, *messages: str) -> None:
        captured = capsys.readouterr()
        assert code == 2, captured
        assert "Traceback" not in captured.err
        for m in messages:
            assert m in captured.err, captured

    check(check_parity.main([str(tmp_path / "missing")]), "error:", "missing")
    check(check_parity.main([str(tmp_path)]), "error:", "golden.pt")
    check(convert_tool.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o"),
                             "--num-shards", "1", "--no-progress"]), "error:", "SA-1B folder not found")
    check(synthetic_tool.main(["--output", str(tmp_path / "s"), "--num-images", "-1", "--no-progress"]),
          "error:", "num_images")
    image = os.path.join(ROOT, "tests", "fixtures", "parity_tiny", "image.png")
    check(demo.main(["--config", bad_yaml, "--ckpt", TINY_WEIGHTS, "--image", image, "--output",
                     str(tmp_path / "d"), "--auto"]), "error:", "YAML syntax error")


@pytest.mark.parametrize(
    "overrides, optimizer_class",
    [
        ([], "FullModelGradientClippingOptimizer"),
        (["SOLVER.CLIP_GRADIENTS.CLIP_VALUE=0.0"], "AdamW"),  # the reference: no clipping
        (["SOLVER.CLIP_GRADIENTS.CLIP_TYPE=norm"], "AdamWWithGradientClip"),  # detectron2's per-parameter
        (["SOLVER.CLIP_GRADIENTS.ENABLED=False"], "AdamW"),
    ],
)
def test_gradient_clipping_settings(overrides, optimizer_class):
    cfg = load_config(TINY, overrides)
    assert type(build_optimizer(cfg, torch.nn.Linear(2, 2))).__name__ == optimizer_class


def test_unknown_clip_type_is_a_config_error():
    with pytest.raises(ConfigError, match="SOLVER.CLIP_GRADIENTS.CLIP_TYPE.*'bogus'.*full_model"):
        load_config(TINY, ["SOLVER.CLIP_GRADIENTS.CLIP_TYPE=bogus"])


# ------------------------------------------------------------------------------------------ 6. corrupt rows


@pytest.mark.slow
def test_corrupt_row_is_skipped_and_reported(data, tmp_path):
    out = str(tmp_path / "out")
    proc = _run(["--config-file", TINY, f"OUTPUT_DIR={out}", *SMALL, "SOLVER.MAX_ITER=4"],
                data["corrupt_tsv"], data["no_coco"])
    _check_ok(proc)
    last = _last_training_metrics(out)
    assert last["iteration"] == 3
    assert last["data/bad_rows"] == 1  # 4 iterations draw each of the 4 rows once
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    assert "skipping corrupt SA-1B record" in log and "row 1" in log and "sa1b-00000" in log
