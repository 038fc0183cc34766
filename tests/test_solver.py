import os

import pytest
import torch
from torch import nn

from semantic_sam.config import load_config
from semantic_sam.solver import build_lr_scheduler, build_optimizer, get_param_groups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(3, 2))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Block()
        self.head = nn.Linear(4, 2)
        self.tokens = nn.Embedding(6, 4)
        self.gn = nn.GroupNorm(2, 4)
        self.level_embed = nn.Parameter(torch.zeros(4, 4))
        self.shared = self.head  # alias: must be counted once


def _groups_by_name(model, **kw):
    return {g["name"]: g for g in get_param_groups(model, **kw)}


def test_param_groups_lr_and_weight_decay():
    g = _groups_by_name(_Toy(), base_lr=1e-4, weight_decay=0.05, lr_multiplier={"backbone": 0.1})
    assert g["backbone.fc.weight"]["lr"] == pytest.approx(1e-5)
    assert g["backbone.fc.weight"]["weight_decay"] == 0.05
    assert g["backbone.norm.weight"]["weight_decay"] == 0.0
    assert g["backbone.relative_position_bias_table"]["weight_decay"] == 0.0
    assert g["head.weight"]["lr"] == pytest.approx(1e-4) and g["head.bias"]["weight_decay"] == 0.05
    assert g["tokens.weight"]["weight_decay"] == 0.0
    assert g["gn.weight"]["weight_decay"] == 0.0
    assert g["level_embed"]["weight_decay"] == 0.05  # free parameters keep weight decay (reference)
    assert not any(name.startswith("shared.") for name in g)
    assert len(g) == len({id(p) for p in _Toy().parameters()})


def test_full_model_clipping_and_schedule():
    cfg = load_config(
        os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"),
        ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE=0.01", "SOLVER.BASE_LR=1.0", "SOLVER.WEIGHT_DECAY=0.0",
         "SOLVER.LR_MULTIPLIER={}", "SOLVER.STEPS=[2]", "SOLVER.MAX_ITER=4", "SOLVER.WARMUP_ITERS=0"],
    )
    model = _Toy()
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    opt.step()
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in {id(q): q for q in model.parameters()}.values()))
    assert total.item() == pytest.approx(0.01, rel=1e-4)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == pytest.approx(1.0) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(0.1) and lrs[3] == pytest.approx(0.1)
