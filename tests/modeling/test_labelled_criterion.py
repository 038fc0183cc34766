"""Labelled clicks: the sigmoid focal loss and the many-to-one criterion's object and part class losses.

Expected values are computed here with plain floats (``math``), independently of the loss code:
``FL(z, y) = alpha_t (1 - p_t) ** gamma * BCE(z, y)`` (SEMANTIC_SPEC §4).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from semantic_sam.config import ConfigError, load_config
from semantic_sam.data.prompt_sampling import prepare_click_targets
from semantic_sam.modeling.criterion import SemanticSamCriterion, build_criterion, expand_weight_dict
from semantic_sam.modeling.losses import sigmoid_focal_loss
from semantic_sam.modeling.matcher import ManyToManyMatcher

TINY_TEXT = "configs/semantic_sam_tiny_text.yaml"


def _focal(z: float, y: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-z))
    p_t = p if y else 1 - p
    weight = 1.0 if alpha < 0 else (alpha if y else 1 - alpha)
    return weight * (1 - p_t) ** gamma * -math.log(p_t)


# ------------------------------------------------------------------------------------------------
# Focal loss
# ------------------------------------------------------------------------------------------------
def test_focal_loss_matches_hand_computed_values():
    # z = 0: p = 1/2, BCE = ln 2, (1 - p_t)^2 = 1/4.
    # z = 2, y = 0: p_t = 1 - sigmoid(2) = 0.1192029, BCE = ln(1 + e^2) = 2.1269280.
    # z = -1, y = 1: p_t = sigmoid(-1) = 0.2689414, BCE = ln(1 + e) = 1.3132617.
    logits = torch.tensor([[0.0, 0.0, 2.0], [2.0, -1.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    expected = torch.tensor(
        [
            [0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2), 0.25 * (1 - 0.8807971) ** 2 * 0.1269280],
            [0.75 * 0.8807971**2 * 2.1269280, 0.25 * 0.7310586**2 * 1.3132617, 0.75 * 0.2689414**2 * 0.3132617],
        ],
        dtype=torch.float64,
    )
    got = sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, expected, rtol=2e-6, atol=1e-9)
    assert got[0, 0].item() == pytest.approx(0.0433217, abs=1e-7)
    assert got[1, 0].item() == pytest.approx(1.2375586, abs=1e-6)


def test_focal_loss_without_alpha_and_other_gamma():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0], dtype=torch.float64)
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    zs, ys = logits.tolist(), [int(v) for v in labels.tolist()]
    no_alpha = torch.tensor([_focal(z, y, alpha=-1) for z, y in zip(zs, ys)], dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, alpha=-1, gamma=2.0), no_alpha)
    assert no_alpha[0].item() == pytest.approx(0.25 * math.log(2))  # alpha -1: the unweighted 0.1732868
    # gamma 0, alpha -1: plain BCE
    torch.testing.assert_close(
        sigmoid_focal_loss(logits, labels, alpha=-1, gamma=0.0),
        F.binary_cross_entropy_with_logits(logits, labels, reduction="none"),
    )
    gamma1 = torch.tensor([_focal(z, y, alpha=0.25, gamma=1.0) for z, y in zip(zs, ys)], dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=1.0), gamma1)


# ------------------------------------------------------------------------------------------------
# Many-to-one criterion with class losses
# ------------------------------------------------------------------------------------------------
K, N, SIZE, C_O, C_P = 3, 5, 64, 4, 3


def _criterion(normalization="reference", num_layers=2, class_losses=True, many_to_one=True, alpha=0.25):
    base = {
        "loss_mask_bce": 5.0, "loss_mask_dice": 5.0, "iou_score_loss": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0,
        "loss_mask_cls": 4.0, "loss_mask_part_cls": 3.0,
    }
    return SemanticSamCriterion(
        matcher=ManyToManyMatcher(num_points=32, num_tokens=K),
        weight_dict=expand_weight_dict(base, num_layers),
        num_points=32,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        num_tokens=K,
        many_to_one=many_to_one,
        class_losses=class_losses,
        focal_alpha=alpha,
        focal_gamma=2.0,
        class_loss_normalization=normalization,
    )


def _layer(gen, target, best):
    """Outputs of one decoder layer whose token ``best[i]`` reproduces prompt i's GT mask and box."""
    q = N * K
    out = {
        "pred_masks": torch.randn(1, q, SIZE // 4, SIZE // 4, generator=gen),
        "pred_boxes": torch.rand(1, q, 4, generator=gen) * 0.4 + 0.1,
        "pred_ious": torch.randn(1, N, K, generator=gen),
        "pred_logits": torch.randn(1, q, C_O, generator=gen) * 2,
        "pred_logits_part": torch.randn(1, q, C_P, generator=gen) * 2,
    }
    for i in range(N):
        g = int(target["prompt_gt_inds"][i])
        small = F.interpolate(target["ori_masks"][g][None, None].float(), size=(SIZE // 4,) * 2, mode="area")[0, 0]
        out["pred_masks"][0, i * K + best[i]] = (small - 0.5) * 60
        out["pred_boxes"][0, i * K + best[i]] = target["ori_boxes"][g]
    return {key: v.requires_grad_() for key, v in out.items()}


@pytest.fixture
def case():
    """One image, N = 5 clicks on 4 GT masks; the last layer's best tokens differ from the aux layer's."""
    gen = torch.Generator().manual_seed(7)
    masks = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    for g, (y, x) in enumerate([(2, 2), (2, 34), (34, 2), (34, 34)]):
        masks[g, y : y + 24, x : x + 20] = True
    target = prepare_click_targets(masks, (SIZE, SIZE), (SIZE, SIZE), N, K, generator=gen)
    best_last = torch.tensor([2, 0, 1, 2, 0])
    best_aux = torch.tensor([0, 1, 2, 1, 1])
    last = _layer(gen, target, best_last)
    aux = _layer(gen, target, best_aux)
    outputs = {**last, "aux_outputs": [aux]}
    gt_object = torch.tensor([3, 0, 2, 1])
    gt_part = torch.tensor([1, -1, 0, 2])
    gt = target["prompt_gt_inds"]
    labels = [{"object": gt_object[gt], "part": gt_part[gt]}]
    return target, outputs, labels, {0: best_last, 1: best_aux}


def _expected_class_loss(logits, best, classes, normalization, num_masks):
    """(Q, C) logits of one layer; the focal loss of each labelled click's best output, by hand."""
    per_click = []
    for i, c in enumerate(classes.tolist()):
        if c < 0:
            continue
        row = logits[i * K + int(best[i])].tolist()
        per_click.append(sum(_focal(z, int(j == c)) for j, z in enumerate(row)))
    if normalization == "reference":
        return N * K / num_masks * sum(per_click) / len(per_click)
    return sum(per_click) / num_masks


@pytest.mark.parametrize("normalization", ["reference", "num_masks"])
def test_class_losses_use_each_layers_best_output(case, normalization):
    target, outputs, labels, best = case
    details = {}
    losses = _criterion(normalization)(
        outputs, [target], generator=torch.Generator().manual_seed(0), details=details, labels=labels
    )
    assert details["num_masks"] == N
    for suffix, layer in ((0, outputs), (1, outputs["aux_outputs"][0])):
        layer_details = details["layers"][1 - suffix]  # keyed by decoder layer: the last layer is 1
        assert torch.equal(layer_details["best_token"], best[suffix])
        for name, key, label_key in (
            ("loss_mask_cls", "pred_logits", "object"),
            ("loss_mask_part_cls", "pred_logits_part", "part"),
        ):
            expected = _expected_class_loss(layer[key][0], best[suffix], labels[0][label_key], normalization, N)
            assert losses[f"{name}_{suffix}"].item() == pytest.approx(expected, rel=1e-5), (name, suffix)


def test_reference_normalisation_is_queries_over_clicks_times_the_click_mean(case):
    """Reference: (Q / num_masks) * mean_j; num_masks: sum_j / num_masks. Here Q = N * K = 15, num_masks = 5,
    and 4 of the 5 clicks have a part label: the ratio of the part losses is Q / 4."""
    target, outputs, labels, _ = case
    args = {"generator": torch.Generator().manual_seed(0), "labels": labels}
    ref = _criterion("reference")(outputs, [target], **args)
    args["generator"] = torch.Generator().manual_seed(0)
    per_mask = _criterion("num_masks")(outputs, [target], **args)
    labelled_parts = int((labels[0]["part"] >= 0).sum())
    assert labelled_parts == 4
    for s in (0, 1):
        assert (ref[f"loss_mask_cls_{s}"] / per_mask[f"loss_mask_cls_{s}"]).item() == pytest.approx(K, rel=1e-5)
        ratio = (ref[f"loss_mask_part_cls_{s}"] / per_mask[f"loss_mask_part_cls_{s}"]).item()
        assert ratio == pytest.approx(N * K / labelled_parts, rel=1e-5)
        for name in ("loss_mask_bce", "loss_mask_dice", "loss_bbox"):  # the mask terms do not depend on it
            torch.testing.assert_close(ref[f"{name}_{s}"], per_mask[f"{name}_{s}"])


def test_class_gradients_reach_only_the_best_outputs_of_labelled_clicks(case):
    target, outputs, labels, best = case
    losses = _criterion()(outputs, [target], generator=torch.Generator().manual_seed(0), labels=labels)
    (losses["loss_mask_cls_0"] + losses["loss_mask_part_cls_0"]).backward()
    object_rows = outputs["pred_logits"].grad[0].abs().sum(-1).nonzero().squeeze(1)
    assert object_rows.tolist() == [i * K + int(best[0][i]) for i in range(N)]
    part_rows = outputs["pred_logits_part"].grad[0].abs().sum(-1).nonzero().squeeze(1)
    labelled = [i for i in range(N) if labels[0]["part"][i] >= 0]
    assert part_rows.tolist() == [i * K + int(best[0][i]) for i in labelled]
    assert outputs["aux_outputs"][0]["pred_logits"].grad is None  # the aux layer has its own loss key


def test_clicks_without_any_part_label_give_a_zero_part_loss_in_the_graph(case):
    target, outputs, labels, _ = case
    labels = [{"object": labels[0]["object"], "part": torch.full((N,), -1)}]
    losses = _criterion()(outputs, [target], generator=torch.Generator().manual_seed(0), labels=labels)
    assert losses["loss_mask_part_cls_0"].item() == 0.0 and losses["loss_mask_part_cls_1"].item() == 0.0
    losses["loss_mask_part_cls_0"].backward()
    assert outputs["pred_logits_part"].grad is not None and not outputs["pred_logits_part"].grad.any()


def test_part_loss_is_absent_without_part_logits(case):
    target, outputs, labels, _ = case
    object_only = {k: v for k, v in outputs.items() if k not in ("pred_logits_part", "aux_outputs")}
    object_only["aux_outputs"] = [{k: v for k, v in outputs["aux_outputs"][0].items() if k != "pred_logits_part"}]
    losses = _criterion()(object_only, [target], generator=torch.Generator().manual_seed(0), labels=labels)
    assert sorted(losses) == sorted(
        f"{n}_{s}" for s in (0, 1) for n in
        ("loss_mask_bce", "loss_mask_dice", "iou_score_loss", "loss_bbox", "loss_giou", "loss_mask_cls")
    )
    # and without labels the criterion computes no class loss at all
    plain = _criterion()(outputs, [target], generator=torch.Generator().manual_seed(0))
    assert not any("cls" in k for k in plain)


def test_an_image_without_prompts_gives_zero_class_losses():
    gen = torch.Generator().manual_seed(3)
    target = prepare_click_targets(torch.zeros(0, 32, 32, dtype=torch.bool), (32, 32), (32, 32), 2, K, generator=gen)
    outputs = {
        "pred_masks": torch.randn(1, 2 * K, 8, 8, requires_grad=True),
        "pred_boxes": torch.rand(1, 2 * K, 4, requires_grad=True),
        "pred_ious": torch.randn(1, 2, K, requires_grad=True),
        "pred_logits": torch.randn(1, 2 * K, C_O, requires_grad=True),
    }
    labels = [{"object": torch.full((2,), -1), "part": torch.full((2,), -1)}]
    losses = _criterion(num_layers=1)(outputs, [target], labels=labels)
    assert losses["loss_mask_cls_0"].item() == 0.0 and "loss_mask_part_cls_0" not in losses
    sum(losses.values()).backward()
    assert outputs["pred_logits"].grad is not None and not outputs["pred_logits"].grad.any()


def test_labelled_criterion_from_config_weights_and_options():
    cfg = load_config(TINY_TEXT, ["MODEL.DECODER.PART_CLASS_WEIGHT=2.5", "MODEL.DECODER.FOCAL_ALPHA=-1"])
    labelled = build_criterion(cfg, labelled=True)
    plain = build_criterion(cfg)
    layers = cfg.MODEL.DECODER.DEC_LAYERS
    assert labelled.many_to_one and labelled.class_losses and not plain.class_losses
    assert labelled.focal_alpha == -1 and labelled.focal_gamma == 2.0
    assert labelled.class_loss_normalization == "reference"
    for s in range(layers):
        assert labelled.weight_dict[f"loss_mask_cls_{s}"] == cfg.MODEL.DECODER.CLASS_WEIGHT == 4.0
        assert labelled.weight_dict[f"loss_mask_part_cls_{s}"] == 2.5
        assert labelled.weight_dict[f"loss_mask_bce_{s}"] == plain.weight_dict[f"loss_mask_bce_{s}"]
    assert set(labelled.weight_dict) - set(plain.weight_dict) == {
        f"{n}_{s}" for n in ("loss_mask_cls", "loss_mask_part_cls") for s in range(layers)
    }
    no_deep = build_criterion(load_config(TINY_TEXT, ["MODEL.DECODER.DEEP_SUPERVISION=False"]), labelled=True)
    assert sorted(k for k in no_deep.weight_dict if "cls" in k) == ["loss_mask_cls_0", "loss_mask_part_cls_0"]


@pytest.mark.parametrize(
    "key, value",
    [("CLASS_LOSS_NORMALIZATION", "mean"), ("FOCAL_ALPHA", 1.5), ("FOCAL_GAMMA", -1.0), ("PART_CLASS_WEIGHT", -2.0)],
)
def test_bad_class_loss_options_name_their_key(key, value):
    cfg = load_config(TINY_TEXT)
    cfg.defrost()
    cfg.MODEL.DECODER[key] = value
    with pytest.raises(ConfigError, match=f"MODEL.DECODER.{key}"):
        build_criterion(cfg, labelled=True)


def test_errors(case):
    target, outputs, labels, _ = case
    with pytest.raises(ValueError, match="without class losses"):
        _criterion(class_losses=False)(outputs, [target], labels=labels)
    with pytest.raises(ValueError, match="2 label sets for a batch of 1"):
        _criterion()(outputs, [target], labels=labels * 2)
    with pytest.raises(ValueError, match="many-to-one"):
        _criterion(many_to_one=False)
    with pytest.raises(ValueError, match="class_loss_normalization"):
        _criterion("sum")
    out_of_range = [{"object": torch.full((N,), C_O), "part": labels[0]["part"]}]
    with pytest.raises(ValueError, match=f"class id {C_O} is out of range for {C_O} class logits"):
        _criterion()(outputs, [target], labels=out_of_range)
