import os

import pytest
import torch
from torch import nn

from semantic_sam.config import ConfigError, load_config
from semantic_sam.solver import build_lr_scheduler, build_optimizer, freeze_all_but, get_param_groups

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
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(0.1) and lrs[3] == pytest.approx(0.1)


def test_freeze_all_but_keeps_only_matching_parameters_in_the_optimizer():
    model = _Toy()
    kept = freeze_all_but(model, ["^head\\.", "level_embed"])
    assert sorted(kept) == ["head.bias", "head.weight", "level_embed"]  # named_parameters lists the alias once
    assert model.shared.weight.requires_grad  # the alias is the kept head
    assert not model.backbone.fc.weight.requires_grad and not model.tokens.weight.requires_grad
    assert sorted(g["name"] for g in get_param_groups(model, base_lr=1e-3, weight_decay=0.0)) == sorted(kept)
    # the frozen part gets no gradient, the kept part does
    x = torch.randn(3, 4)
    (model.head(model.backbone.fc(x)).sum() + model.level_embed.sum()).backward()
    assert model.backbone.fc.weight.grad is None and model.head.weight.grad is not None


def test_freeze_all_but_without_patterns_changes_nothing_and_a_typo_is_an_error():
    model = _Toy()
    assert len(freeze_all_but(model, [])) == len(list(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match=r"SOLVER.TRAINABLE_PARAMS: 'hed' matches no parameter"):
        freeze_all_but(model, ["head", "hed"])
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen on the error


@pytest.mark.parametrize("value", ['["class_embed", "("]', '[""]', "[3]"])
def test_trainable_params_must_be_regular_expressions(value):
    with pytest.raises(ConfigError, match=r"TRAINABLE_PARAMS.*regular expressions on parameter names"):
        load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"), [f"SOLVER.TRAINABLE_PARAMS={value}"])
