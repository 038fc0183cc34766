"""Generic queries: proposals, two-stage selection, denoising queries and their attention mask, the decoder's
generic pass, the checkpoint policy for its new keys, and isolation from the interactive outputs (SEMANTIC_SPEC
§5, §9 G1/G2)."""
import math
import os

import pytest
import torch

from semantic_sam.build import build_model
from semantic_sam.checkpoint import load_checkpoint
from semantic_sam.config import ConfigError, load_config
from semantic_sam.modeling.decoder.generic_queries import (
    denoising_queries,
    encoder_output_proposals,
    generic_self_attn_mask,
    select_queries,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERIC = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
RELEASED_TINY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny", "tiny_parity.pth")


@pytest.fixture(scope="module")
def generic_model():
    torch.manual_seed(0)
    return build_model(load_config(GENERIC)).eval()


def test_proposals_are_cell_centres_with_level_sizes_and_invalid_edges():
    memory = torch.ones(1, 2 * 2 + 4 * 4, 3)
    shapes = torch.tensor([[2, 2], [4, 4]])
    out, proposals = encoder_output_proposals(memory, shapes)
    p = proposals[0].sigmoid()
    # level 0 (2x2): centres 0.25 / 0.75, side 0.05; level 1 (4x4): centres 0.125.., side 0.1
    torch.testing.assert_close(p[0], torch.tensor([0.25, 0.25, 0.05, 0.05]))
    torch.testing.assert_close(p[3], torch.tensor([0.75, 0.75, 0.05, 0.05]))
    torch.testing.assert_close(p[4], torch.tensor([0.125, 0.125, 0.1, 0.1]))
    assert torch.isfinite(proposals).all() and (out == 1).all()  # every proposal inside (0.01, 0.99)
    # a level 7 (side 0.05 * 2**7 = 6.4) proposal leaves (0.01, 0.99): invalid, +inf, memory zeroed
    shapes = torch.tensor([[1, 1]] * 8)
    out, proposals = encoder_output_proposals(torch.ones(1, 8, 3), shapes)
    assert torch.isinf(proposals[0, 7]).all() and (out[0, 7] == 0).all()
    assert torch.isfinite(proposals[0, :5]).all()  # side 0.05 * 16 = 0.8 is still valid


def test_denoising_groups_noise_content_and_padding():
    emb = {"object": torch.eye(3, 4), "part": 2 * torch.eye(2, 4)}
    lang_mapper = torch.arange(16.0).view(4, 4)
    targets = [
        {"labels": torch.tensor([0, 2]), "part_labels": torch.tensor([1, -1]),
         "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.3, 0.1, 0.1]])},
        {"labels": torch.tensor([1]), "part_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]
    g = torch.Generator().manual_seed(0)
    content, anchors, meta = denoising_queries(targets, emb, lang_mapper, 5, 0.4, g)
    assert meta == {"num_groups": 2, "max_gt": 2}  # 5 // 2 groups of 2 rows
    assert content.shape == (2, 4, 4) and anchors.shape == (2, 4, 4)
    # content = (T_object[o] + T_part[p]) @ lang_mapper, the same in every group
    expected0 = (emb["object"][0] + emb["part"][1]) @ lang_mapper
    expected1 = emb["object"][2] @ lang_mapper  # no part
    for group in range(2):
        torch.testing.assert_close(content[0, 2 * group], expected0)
        torch.testing.assert_close(content[0, 2 * group + 1], expected1)
    assert (content[1, 1] == 0).all() and (content[1, 3] == 0).all()  # padding rows of the 1-GT image
    # each coordinate moves by at most noise_scale * (w/2, h/2, w, h)
    boxes = anchors.sigmoid()
    delta = (boxes[0, 0] - targets[0]["boxes"][0]).abs()
    assert (delta <= 0.4 * torch.tensor([0.1, 0.2, 0.2, 0.4]) + 1e-5).all() and (delta > 0).any()
    assert not torch.equal(boxes[0, 0], boxes[0, 2])  # each group its own noise
    assert denoising_queries([{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}],
                             emb, lang_mapper, 5, 0.4) is None


def test_generic_attention_mask_blocks_groups_and_hides_denoising_from_generic_queries():
    mask = generic_self_attn_mask(num_denoising=4, num_groups=2, num_queries=3, device=torch.device("cpu"))
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[4:, :4] = True  # generic rows do not see denoising rows
    expected[:2, 2:4] = True  # group 0 does not see group 1
    expected[2:4, :2] = True
    assert torch.equal(mask, expected)
    assert not generic_self_attn_mask(0, 0, 3, torch.device("cpu")).any()


def test_selection_keeps_the_best_scored_valid_tokens(generic_model):
    dec = generic_model.sem_seg_head.predictor
    emb = generic_model.class_embeddings(["a", "b"])
    memory = torch.randn(1, 2 * 2 + 4 * 4, dec.hidden_dim)
    shapes = torch.tensor([[2, 2], [4, 4]])
    mask_features = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        content, anchors, interm = select_queries(dec, memory, shapes, mask_features, emb, 5)
        # independent recomputation of the score: object logits of enc_output_norm(enc_output(memory))
        scores = dec.class_logits(dec.enc_output_norm(dec.enc_output(memory)), emb)["pred_logits"].max(-1).values
    top = scores[0].topk(5).indices
    torch.testing.assert_close(content[0], dec.enc_output_norm(dec.enc_output(memory))[0, top])
    assert content.shape == (1, 5, dec.hidden_dim) and anchors.shape == (1, 5, 4)
    assert interm["pred_logits"].shape == (1, 5, 2) and interm["pred_masks"].shape == (1, 5, 8, 8)
    torch.testing.assert_close(interm["pred_boxes"], anchors.sigmoid())


def test_generic_pass_outputs_and_denoising_split(generic_model):
    model = generic_model.train()
    try:
        dec = model.sem_seg_head.predictor
        feats = model.encode_image(model.preprocess_image([torch.randint(0, 256, (3, 96, 64), dtype=torch.uint8)]))
        emb = model.training_class_embeddings({"object": ["a", "b", "c"], "part": ["x"]})
        targets = [{"labels": torch.tensor([0, 2, 1]), "part_labels": torch.tensor([0, -1, -1]),
                    "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.2, 0.3, 0.1, 0.2], [0.7, 0.7, 0.3, 0.3]])}]
        out = dec.forward_generic(feats["multi_scale_features"], feats["mask_features"], emb, targets)
    finally:
        model.eval()
    q, layers = dec.num_queries, dec.num_layers
    assert out["pred_logits"].shape == (1, q, 3) and out["pred_logits_part"].shape == (1, q, 1)
    assert out["pred_masks"].shape == (1, q, 24, 16) and out["pred_boxes"].shape == (1, q, 4)
    assert len(out["aux_outputs"]) == layers  # the initial prediction + layers 0..L-2
    assert out["dn_meta"] == {"num_groups": 3, "max_gt": 3}  # DN_NUM 10 // 3
    assert out["dn_outputs"]["pred_logits"].shape == (1, 9, 3) and len(out["dn_outputs"]["aux_outputs"]) == layers
    assert out["interm_outputs"]["pred_masks"].shape == (1, q, 24, 16)


def test_released_checkpoint_loads_into_a_generic_model_keeping_exactly_the_new_keys():
    torch.manual_seed(0)
    model = build_model(load_config(GENERIC))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_checkpoint(model, RELEASED_TINY, strict=True)
    kept = set(report.kept)
    new = {k for k in model.state_dict() if k.startswith(("sem_seg_head.predictor.lang_encoder.",
                                                           "sem_seg_head.predictor.enc_output"))}
    assert kept == new and any("enc_output_norm" in k for k in kept) and not report.missing
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in kept)
    assert "kept as they were" in str(report)


def test_generic_queries_leave_the_interactive_outputs_unchanged():
    """G2: the same weights with and without generic queries give identical click outputs."""
    torch.manual_seed(0)
    generic = build_model(load_config(GENERIC)).eval()
    interactive = build_model(load_config(TEXT)).eval()
    state = {k: v for k, v in generic.state_dict().items() if "enc_output" not in k}
    interactive.load_state_dict(state, strict=True)
    image = torch.randint(0, 256, (3, 80, 96), dtype=torch.uint8)
    inputs = [{"image": image, "points": torch.tensor([[10.0, 20.0], [50.0, 40.0]])}]
    emb = generic.class_embeddings(["a", "b"])
    a = generic.inference(inputs, class_embeddings=emb)[0]
    b = interactive.inference(inputs, class_embeddings=emb)[0]
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["MODEL.DECODER.NUM_OBJECT_QUERIES=20", "MODEL.DECODER.TWO_STAGE=True", "MODEL.DECODER.INITIAL_PRED=True"],
         "MODEL.DECODER.NUM_OBJECT_QUERIES"),  # no text encoder
        (["MODEL.TEXT.ARCH=unicl", "MODEL.DECODER.NUM_OBJECT_QUERIES=20"], "MODEL.DECODER.TWO_STAGE"),
        (["MODEL.TEXT.ARCH=unicl", "MODEL.DECODER.NUM_OBJECT_QUERIES=20", "MODEL.DECODER.TWO_STAGE=True",
          "MODEL.DECODER.INITIAL_PRED=True", "MODEL.DECODER.DN=box"], "MODEL.DECODER.DN"),
    ],
)
def test_generic_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"), overrides)


def test_segment_needs_generic_queries_and_thing_flags(generic_model):
    image = {"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)}
    emb = generic_model.class_embeddings(["a", "b"])
    with pytest.raises(ValueError, match="is_thing"):
        generic_model.segment([image], emb)
    out = generic_model.segment([image], emb, is_thing=[True, False])[0]
    ids, info = out["panoptic_seg"]
    assert ids.shape == (64, 64) and out["sem_seg"].shape == (2, 64, 64)
    assert {s["id"] for s in info} == set(ids.unique().tolist()) - {0}
    assert all(math.isfinite(float(s)) for s in out["instances"].scores)
    torch.manual_seed(0)
    plain = build_model(load_config(TEXT)).eval()
    with pytest.raises(ValueError, match="no generic queries"):
        plain.segment([image], emb, is_thing=[True, False])


def test_segment_outputs_are_float32_under_bf16_autocast(generic_model):
    image = {"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)}
    emb = generic_model.class_embeddings(["a", "b"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generic_model.segment([image], emb, is_thing=[True, False])[0]
    assert out["sem_seg"].dtype == torch.float32 and out["instances"].scores.dtype == torch.float32
