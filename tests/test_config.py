import glob
import os

import pytest
import yaml

from semantic_sam.config import ConfigError, get_default_config, load_config, parse_overrides, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWINT = os.path.join(ROOT, "configs", "semantic_sam_only_sa-1b_swinT.yaml")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.NAME == "interactive_mask_dino"
    assert cfg.MODEL.BACKBONE.NAME == "swin"


def test_reference_values():
    t = load_config(SWINT)
    assert t.MODEL.DECODER.HIDDEN_DIM == t["MODEL"]["DECODER"]["HIDDEN_DIM"] == 256
    assert t.MODEL.BACKBONE.SWIN.DEPTHS == [2, 2, 6, 2]
    assert t.MODEL.BACKBONE.SWIN.QK_SCALE is None
    assert t.SOLVER.STEPS == [327778, 355092] and t.SOLVER.MAX_ITER == 368750
    assert t.SOLVER.WEIGHT_DECAY_BIAS == "None"  # the reference's YAML quirk, kept as is
    l = load_config(os.path.join(ROOT, "configs", "semantic_sam_only_sa-1b_swinL.yaml"))
    assert l.MODEL.BACKBONE.SWIN.EMBED_DIM == 192 and l.MODEL.BACKBONE.SWIN.WINDOW_SIZE == 12
    assert l.MODEL.BACKBONE.SWIN.DEPTHS == [2, 2, 18, 2]
    r = load_config(os.path.join(ROOT, "configs", "semantic_sam_reproduce_sam_swinL.yaml"))
    assert r.MODEL.DECODER.NUM_INTERACTIVE_TOKENS == 3 and r.MODEL.DECODER.MANY_TO_ONE is True
    # reproduce-SAM differs from SwinL only in these two keys
    diff = _diff(l, r)
    assert diff == {"MODEL.DECODER.NUM_INTERACTIVE_TOKENS", "MODEL.DECODER.MANY_TO_ONE"}


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _diff(a, b):
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def test_reference_files_match_fixture_yaml_keys():
    # The parity fixture is the reference's SwinT YAML with sizes changed: same key set.
    fixture = os.path.join(ROOT, "tests", "fixtures", "parity_tiny", "tiny_parity.yaml")
    with open(fixture) as f:
        ref_keys = set(_flat(yaml.safe_load(f)))
    with open(SWINT) as f:
        our_keys = set(_flat(yaml.safe_load(f)))
    assert ref_keys == our_keys


def test_overrides_change_values_and_types():
    cfg = load_config(
        SWINT,
        [
            "COCO.TEST.BATCH_SIZE_TOTAL=8",
            "MODEL.WEIGHTS=/x.pth",
            "SOLVER.BASE_LR=1e-4",
            "SOLVER.STEPS=[1, 2]",
            "SOLVER.AMP.ENABLED=false",
            "MODEL.BACKBONE.SWIN.QK_SCALE=0.5",
            "MODEL.WEIGHTS=~",
            "SOLVER.WEIGHT_DECAY=1",
        ],
    )
    assert cfg.COCO.TEST.BATCH_SIZE_TOTAL == 8
    assert cfg.SOLVER.BASE_LR == pytest.approx(1e-4) and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.STEPS == [1, 2]
    assert cfg.SOLVER.AMP.ENABLED is False
    assert cfg.MODEL.BACKBONE.SWIN.QK_SCALE == 0.5
    assert cfg.MODEL.WEIGHTS is None
    assert cfg.SOLVER.WEIGHT_DECAY == 1.0 and isinstance(cfg.SOLVER.WEIGHT_DECAY, float)
    assert cfg.is_frozen()


def test_parse_overrides_yaml_values():
    assert parse_overrides(["A=1", "B=true", "C=[1, 2]", "D=~", "E=abc", "F="]) == [
        ("A", 1), ("B", True), ("C", [1, 2]), ("D", None), ("E", "abc"), ("F", "")
    ]


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError) as e:
        load_config(SWINT, ["MODEL.DECODER.HIDEN_DIM=3"])
    msg = str(e.value)
    assert "MODEL.DECODER.HIDEN_DIM" in msg and "MODEL.DECODER.HIDDEN_DIM" in msg


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("MODEL:\n  BACKBONE:\n    SWIN:\n      EMBED_DIMS: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(p) in str(e.value) and "MODEL.BACKBONE.SWIN.EMBED_DIM" in str(e.value)


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError) as e:
        load_config(SWINT, ["MODEL.DECODER.HIDDEN_DIM=abc"])
    msg = str(e.value)
    assert "MODEL.DECODER.HIDDEN_DIM" in msg and "'abc'" in msg and "expected int" in msg
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(SWINT, ["SOLVER.AMP.ENABLED=1"])
    with pytest.raises(ConfigError, match="section"):
        load_config(SWINT, ["MODEL.DECODER=3"])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config("/nonexistent/nope.yaml")


def test_yaml_syntax_error_reports_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("MODEL:\n  NAME: x\n  DECODER: [1, 2\nSOLVER:\n  BASE_LR: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    msg = str(e.value)
    assert "YAML syntax error" in msg and f"{p}:" in msg
    line = int(msg.split(f"{p}:")[1].split(":")[0])
    assert 3 <= line <= 5


def test_override_without_equals():
    with pytest.raises(ConfigError, match="KEY.SUB=value"):
        load_config(SWINT, ["MODEL.WEIGHTS"])


def test_base_chain_and_free_form_section(tmp_path):
    p = tmp_path / "child.yaml"
    p.write_text(f"_BASE_: {SWINT}\nSOLVER:\n  LR_MULTIPLIER:\n    pixel_decoder: 0.5\n")
    cfg = load_config(str(p))
    assert cfg.SOLVER.LR_MULTIPLIER.pixel_decoder == 0.5
    assert cfg.SOLVER.LR_MULTIPLIER.backbone == 0.1


def test_save_config_round_trip(tmp_path):
    cfg = load_config(SWINT, ["SOLVER.BASE_LR=0.5"])
    path = save_config(cfg, str(tmp_path))
    again = load_config(path)
    assert again.SOLVER.BASE_LR == 0.5 and _diff(cfg, again) == set()


def test_defaults_cover_every_reference_key():
    d = _flat(get_default_config())
    with open(SWINT) as f:
        assert set(_flat(yaml.safe_load(f))) <= set(d)


# ------------------------------------------------------------------------------------------ load-time checks
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")

# (overrides on the SwinT config, the key the message must name)
REJECTED = [
    # sizes and counts
    (["SAM.INPUT.IMAGE_SIZE=0"], "SAM.INPUT.IMAGE_SIZE"),
    (["SAM.INPUT.IMAGE_SIZE=-1024"], "SAM.INPUT.IMAGE_SIZE"),
    (["SAM.INPUT.MIN_SIZE_TEST=0"], "SAM.INPUT.MIN_SIZE_TEST"),
    (["SAM.INPUT.MAX_SIZE_TEST=-1"], "SAM.INPUT.MAX_SIZE_TEST"),
    (["COCO.INPUT.MIN_SIZE_TEST=0"], "COCO.INPUT.MIN_SIZE_TEST"),
    (["COCO.INPUT.MAX_SIZE_TEST=0"], "COCO.INPUT.MAX_SIZE_TEST"),
    (["SAM.TRAIN.BATCH_SIZE_TOTAL=0"], "SAM.TRAIN.BATCH_SIZE_TOTAL"),
    (["COCO.TEST.BATCH_SIZE_TOTAL=-2"], "COCO.TEST.BATCH_SIZE_TOTAL"),
    (["SOLVER.IMS_PER_BATCH=0"], "SOLVER.IMS_PER_BATCH"),
    (["MODEL.DECODER.HIDDEN_DIM=0"], "MODEL.DECODER.HIDDEN_DIM"),
    (["MODEL.DECODER.HIDDEN_DIM=-256"], "MODEL.DECODER.HIDDEN_DIM"),
    (["MODEL.DECODER.DIM_FEEDFORWARD=0"], "MODEL.DECODER.DIM_FEEDFORWARD"),
    (["MODEL.DECODER.TRAIN_NUM_POINTS=0"], "MODEL.DECODER.TRAIN_NUM_POINTS"),
    (["MODEL.DECODER.MAX_NUM_INSTANCE=0"], "MODEL.DECODER.MAX_NUM_INSTANCE"),
    (["MODEL.DECODER.NUM_INTERACTIVE_TOKENS=0"], "MODEL.DECODER.NUM_INTERACTIVE_TOKENS"),
    (["MODEL.DECODER.NHEADS=0"], "MODEL.DECODER.NHEADS"),
    (["MODEL.DECODER.DEC_LAYERS=0"], "MODEL.DECODER.DEC_LAYERS"),
    (["MODEL.DECODER.DEC_N_POINTS=0"], "MODEL.DECODER.DEC_N_POINTS"),
    (["MODEL.ENCODER.MASK_DIM=0"], "MODEL.ENCODER.MASK_DIM"),
    (["MODEL.ENCODER.TRANSFORMER_ENC_LAYERS=-1"], "MODEL.ENCODER.TRANSFORMER_ENC_LAYERS"),
    (["MODEL.DIM_PROJ=0"], "MODEL.DIM_PROJ"),
    (["MODEL.BACKBONE.SWIN.EMBED_DIM=0"], "MODEL.BACKBONE.SWIN.EMBED_DIM"),
    (["MODEL.BACKBONE.SWIN.PATCH_SIZE=0"], "MODEL.BACKBONE.SWIN.PATCH_SIZE"),
    (["MODEL.BACKBONE.SWIN.WINDOW_SIZE=0"], "MODEL.BACKBONE.SWIN.WINDOW_SIZE"),
    (["MODEL.BACKBONE.SWIN.MLP_RATIO=0"], "MODEL.BACKBONE.SWIN.MLP_RATIO"),
    (["MODEL.BACKBONE.SWIN.DEPTHS=[]", "MODEL.BACKBONE.SWIN.NUM_HEADS=[]"], "MODEL.BACKBONE.SWIN.DEPTHS"),
    (["MODEL.BACKBONE.SWIN.DEPTHS=[2, -1, 6, 2]"], "MODEL.BACKBONE.SWIN.DEPTHS"),
    # divisibility: GroupNorm(32, d) and attention heads
    (["MODEL.DECODER.HIDDEN_DIM=100"], "MODEL.DECODER.HIDDEN_DIM"),
    (["MODEL.DECODER.HIDDEN_DIM=48", "MODEL.ENCODER.CONVS_DIM=48"], "MODEL.ENCODER.CONVS_DIM"),
    (["MODEL.ENCODER.CONVS_DIM=0"], "MODEL.ENCODER.CONVS_DIM"),
    (["MODEL.DECODER.NHEADS=3"], "MODEL.DECODER.NHEADS"),
    (["MODEL.DECODER.QUERY_DECODER_NHEADS=3"], "MODEL.DECODER.QUERY_DECODER_NHEADS"),
    (["MODEL.DECODER.QUERY_DECODER_NHEADS=0", "MODEL.DECODER.NHEADS=64", "MODEL.DECODER.HIDDEN_DIM=32",
      "MODEL.ENCODER.CONVS_DIM=64"], "MODEL.DECODER.NHEADS"),
    # Swin stages
    (["MODEL.BACKBONE.SWIN.DEPTHS=[2, 2, 6]"], "MODEL.BACKBONE.SWIN.NUM_HEADS"),
    (["MODEL.BACKBONE.SWIN.NUM_HEADS=[3, 6, 12]"], "MODEL.BACKBONE.SWIN.NUM_HEADS"),
    (["MODEL.BACKBONE.SWIN.NUM_HEADS=[0, 6, 12, 24]"], "MODEL.BACKBONE.SWIN.NUM_HEADS"),
    (["MODEL.BACKBONE.SWIN.EMBED_DIM=100"], "MODEL.BACKBONE.SWIN.NUM_HEADS"),
    (["MODEL.BACKBONE.SWIN.NUM_HEADS=[5, 6, 12, 24]"], "MODEL.BACKBONE.SWIN.NUM_HEADS"),
    (["MODEL.BACKBONE.SWIN.OUT_INDICES=[0, 1, 2, 4]"], "MODEL.BACKBONE.SWIN.OUT_INDICES"),
    (["MODEL.BACKBONE.SWIN.OUT_FEATURES=[res2, res6]"], "MODEL.BACKBONE.SWIN.OUT_FEATURES"),
    (["MODEL.BACKBONE.SWIN.APE=true", "MODEL.BACKBONE.SWIN.PRETRAIN_IMG_SIZE=2"],
     "MODEL.BACKBONE.SWIN.PRETRAIN_IMG_SIZE"),
    (["MODEL.BACKBONE.SWIN.DROP_PATH_RATE=1.5"], "MODEL.BACKBONE.SWIN.DROP_PATH_RATE"),
    (["MODEL.BACKBONE.SWIN.QK_SCALE=abc"], "MODEL.BACKBONE.SWIN.QK_SCALE"),
    # pixel decoder and query decoder wiring
    (["MODEL.ENCODER.IN_FEATURES=[res2, res3, res4, res6]"], "MODEL.ENCODER.IN_FEATURES"),
    (["MODEL.ENCODER.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES=[]"],
     "MODEL.ENCODER.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"),
    (["MODEL.ENCODER.TOTAL_NUM_FEATURE_LEVELS=2", "MODEL.DECODER.TOTAL_NUM_FEATURE_LEVELS=2"],
     "MODEL.ENCODER.TOTAL_NUM_FEATURE_LEVELS"),
    (["MODEL.DECODER.TOTAL_NUM_FEATURE_LEVELS=3"], "MODEL.DECODER.TOTAL_NUM_FEATURE_LEVELS"),
    (["MODEL.ENCODER.COMMON_STRIDE=0"], "MODEL.ENCODER.COMMON_STRIDE"),
    (["MODEL.ENCODER.COMMON_STRIDE=3"], "MODEL.ENCODER.COMMON_STRIDE"),
    (["MODEL.ENCODER.NORM=GroupNorm"], "MODEL.ENCODER.NORM"),
    (["MODEL.ENCODER.FEATURE_ORDER=high2low"], "MODEL.ENCODER.FEATURE_ORDER"),
    (["MODEL.DECODER.TWO_STAGE=true"], "MODEL.DECODER.TWO_STAGE"),
    (["MODEL.DECODER.NUM_OBJECT_QUERIES=300"], "MODEL.DECODER.NUM_OBJECT_QUERIES"),
    # probabilities, ratios, weights
    (["MODEL.DECODER.DROPOUT=1.5"], "MODEL.DECODER.DROPOUT"),
    (["MODEL.DECODER.OVERSAMPLE_RATIO=0.5"], "MODEL.DECODER.OVERSAMPLE_RATIO"),
    (["MODEL.DECODER.IMPORTANCE_SAMPLE_RATIO=2"], "MODEL.DECODER.IMPORTANCE_SAMPLE_RATIO"),
    (["MODEL.DECODER.DN_NOISE_SCALE=-0.4"], "MODEL.DECODER.DN_NOISE_SCALE"),
    (["MODEL.DECODER.MASK_WEIGHT=-1"], "MODEL.DECODER.MASK_WEIGHT"),
    (["MODEL.DECODER.COST_DICE_WEIGHT=.nan"], "MODEL.DECODER.COST_DICE_WEIGHT"),
    ([f"MODEL.DECODER.COST_{k}_WEIGHT=0" for k in ("MASK", "DICE", "BOX", "GIOU")], "MODEL.DECODER.COST_MASK_WEIGHT"),
    (["MODEL.DECODER.IOU_TARGET=mean"], "MODEL.DECODER.IOU_TARGET"),
    (["MODEL.DECODER.TEST.CLICK_METHOD=fast"], "MODEL.DECODER.TEST.CLICK_METHOD"),
    (["MODEL.DECODER.TEST.SHORT_SIDE=0"], "MODEL.DECODER.TEST.SHORT_SIDE"),
    (["MODEL.DECODER.TEST.MAX_SIZE=-5"], "MODEL.DECODER.TEST.MAX_SIZE"),
    # input and data
    (["INPUT.PIXEL_STD=[58.4, 0, 57.4]"], "INPUT.PIXEL_STD"),
    (["INPUT.PIXEL_MEAN=[123.7, 116.3]"], "INPUT.PIXEL_MEAN"),
    (["SAM.INPUT.MIN_SCALE=0"], "SAM.INPUT.MIN_SCALE"),
    (["SAM.INPUT.MAX_SCALE=0.5"], "SAM.INPUT.MAX_SCALE"),
    (["SAM.INPUT.FORMAT=RGBA"], "SAM.INPUT.FORMAT"),
    (["SAM.INPUT.RANDOM_FLIP=diagonal"], "SAM.INPUT.RANDOM_FLIP"),
    (["SAM.DATALOADER.NUM_WORKERS=-1"], "SAM.DATALOADER.NUM_WORKERS"),
    (["SAM.DATASET.CORRUPT_ROW_RETRIES=-1"], "SAM.DATASET.CORRUPT_ROW_RETRIES"),
    # evaluation
    (["TEST.EVAL_PERIOD=-1"], "TEST.EVAL_PERIOD"),
    (["TEST.INTERACTIVE.MAX_CLICKS=0"], "TEST.INTERACTIVE.MAX_CLICKS"),
    (["TEST.INTERACTIVE.NOC_THRESHOLDS=[0.5, 1.5]"], "TEST.INTERACTIVE.NOC_THRESHOLDS"),
    (["TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE=-1"], "TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE"),
    (["TEST.EXPECTED_RESULTS=[[interactive, 1-IoU@Max, 54.5]]"], "TEST.EXPECTED_RESULTS"),
    (["TEST.PRECISE_BN.ENABLED=true", "TEST.PRECISE_BN.NUM_ITER=0"], "TEST.PRECISE_BN.NUM_ITER"),
    # solver
    (["SOLVER.BASE_LR=0"], "SOLVER.BASE_LR"),
    (["SOLVER.BASE_LR=-1e-4"], "SOLVER.BASE_LR"),
    (["SOLVER.BASE_LR=.inf"], "SOLVER.BASE_LR"),
    (["SOLVER.CHECKPOINT_PERIOD=0"], "SOLVER.CHECKPOINT_PERIOD"),
    (["SOLVER.MAX_ITER=0"], "SOLVER.MAX_ITER"),
    (["SOLVER.TRAINABLE_PARAMS=[\"class_embed[\"]"], "SOLVER.TRAINABLE_PARAMS"),
    (["SOLVER.STEPS=[355092, 327778]"], "SOLVER.STEPS"),
    (["SOLVER.STEPS=[0, 327778]"], "SOLVER.STEPS"),
    (["SOLVER.STEPS=[327778, 368750]"], "SOLVER.STEPS"),
    (["SOLVER.WARMUP_ITERS=-1"], "SOLVER.WARMUP_ITERS"),
    (["SOLVER.WARMUP_FACTOR=-0.001"], "SOLVER.WARMUP_FACTOR"),
    (["SOLVER.WARMUP_METHOD=exp"], "SOLVER.WARMUP_METHOD"),
    (["SOLVER.LR_SCHEDULER_NAME=WarmupPolyLR"], "SOLVER.LR_SCHEDULER_NAME"),
    (["SOLVER.GAMMA=-0.1"], "SOLVER.GAMMA"),
    (["SOLVER.LR_SCHEDULER_NAME=WarmupCosineLR", "SOLVER.BASE_LR_END=0.001"], "SOLVER.BASE_LR_END"),
    (["SOLVER.LR_SCHEDULER_NAME=WarmupStepWithFixedGammaLR", "SOLVER.NUM_DECAYS=0"], "SOLVER.NUM_DECAYS"),
    (["SOLVER.OPTIMIZER=LAMB"], "SOLVER.OPTIMIZER"),
    (["SOLVER.WEIGHT_DECAY=-0.05"], "SOLVER.WEIGHT_DECAY"),
    (["SOLVER.OPTIMIZER=SGD", "SOLVER.NESTEROV=true", "SOLVER.MOMENTUM=0"], "SOLVER.MOMENTUM"),
    (["SOLVER.LR_MULTIPLIER.backbone=-0.1"], "SOLVER.LR_MULTIPLIER.backbone"),
    (["SOLVER.REFERENCE_WORLD_SIZE=-1"], "SOLVER.REFERENCE_WORLD_SIZE"),
    (["SOLVER.IMS_PER_BATCH=6", "SOLVER.REFERENCE_WORLD_SIZE=4"], "SOLVER.REFERENCE_WORLD_SIZE"),
    (["SOLVER.CLIP_GRADIENTS.CLIP_TYPE=norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE=0"],
     "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"),
]


@pytest.mark.parametrize("overrides, key", REJECTED, ids=[" ".join(o) for o, _ in REJECTED])
def test_load_rejects_unusable_values_naming_key_value_and_allowed(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(SWINT, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"config key '{key}'" in msg and "; allowed: " in msg, msg
    # the value is named: the override that set the key, or (for cross-key checks) the one that broke it
    assert "command-line override" in msg, msg


def test_rejected_value_names_the_file_that_set_it(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(f"_BASE_: {SWINT}\nMODEL:\n  DECODER:\n    NHEADS: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(e.value) == (
        f"{p}: invalid value for config key 'MODEL.DECODER.NHEADS': 0; allowed: an integer >= 1 (attention heads "
        "of the pixel decoder, and of the query decoder when QUERY_DECODER_NHEADS <= 0)"
    )


ACCEPTED_EDGES = [
    ["MODEL.DECODER.QUERY_DECODER_NHEADS=0"],  # = NHEADS
    ["SOLVER.MAX_ITER=4"],  # later STEPS are ignored by detectron2
    ["SOLVER.LR_SCHEDULER_NAME=WarmupCosineLR", "SOLVER.BASE_LR_END=0.0001"],
    ["SOLVER.OPTIMIZER=sgd", "SOLVER.NESTEROV=true"],
    ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE=0.0"],  # full_model: no clipping
    ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE=-1.0", "SOLVER.CLIP_GRADIENTS.ENABLED=false"],
    ["SOLVER.LR_MULTIPLIER.backbone=0", "SOLVER.WARMUP_ITERS=0", "SOLVER.WARMUP_FACTOR=0"],
    ["MODEL.DECODER.HIDDEN_DIM=96", "MODEL.DECODER.NHEADS=8", "MODEL.DECODER.QUERY_DECODER_NHEADS=4"],
    ["MODEL.DECODER.COST_MASK_WEIGHT=0", "MODEL.DECODER.COST_DICE_WEIGHT=0", "MODEL.DECODER.COST_BOX_WEIGHT=0"],
    ["MODEL.ENCODER.NORM=", "MODEL.ENCODER.COMMON_STRIDE=8", "MODEL.ENCODER.TRANSFORMER_ENC_LAYERS=0"],
    ["MODEL.ENCODER.NORM=~"],
    ["TEST.EVAL_PERIOD=0", "TEST.EXPECTED_RESULTS=[[interactive, 1-IoU@Max, 54.5, 0.5]]"],
    ["MODEL.DECODER.DN_NOISE_SCALE=0", "MODEL.DECODER.DROPOUT=1.0", "MODEL.BACKBONE.SWIN.DROP_PATH_RATE=1.0"],
    ["SAM.DATALOADER.NUM_WORKERS=0", "SAM.DATASET.CORRUPT_ROW_RETRIES=0", "SAM.INPUT.MIN_SCALE=1.01"],
    ["MODEL.DECODER.SIZE_DIVISIBILITY=-1", "SEED=-1"],
]


@pytest.mark.parametrize("overrides", ACCEPTED_EDGES, ids=[" ".join(o) for o in ACCEPTED_EDGES])
def test_edge_values_stay_valid(overrides):
    load_config(SWINT, overrides)


def test_smallest_accepted_values_build_and_run():
    """The lower bounds of the checks are the model's: a model at those bounds builds and infers."""
    import torch

    from semantic_sam.build import build_model

    cfg = load_config(TINY, [
        "MODEL.BACKBONE.SWIN.EMBED_DIM=8", "MODEL.BACKBONE.SWIN.DEPTHS=[1, 0, 1, 1]",
        "MODEL.BACKBONE.SWIN.NUM_HEADS=[1, 1, 1, 1]", "MODEL.BACKBONE.SWIN.WINDOW_SIZE=1",
        "MODEL.BACKBONE.SWIN.MLP_RATIO=0.5", "MODEL.ENCODER.CONVS_DIM=32", "MODEL.ENCODER.MASK_DIM=1",
        "MODEL.ENCODER.TRANSFORMER_ENC_LAYERS=0", "MODEL.ENCODER.COMMON_STRIDE=8", "MODEL.ENCODER.NORM=",
        "MODEL.DECODER.HIDDEN_DIM=32", "MODEL.DECODER.ENFORCE_INPUT_PROJ=True", "MODEL.DECODER.NHEADS=1",
        "MODEL.DECODER.QUERY_DECODER_NHEADS=0", "MODEL.DECODER.DIM_FEEDFORWARD=1", "MODEL.DECODER.DEC_LAYERS=1",
        "MODEL.DECODER.DEC_N_POINTS=1", "MODEL.DECODER.NUM_INTERACTIVE_TOKENS=1", "MODEL.DIM_PROJ=1",
    ])
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 100, 130), dtype=torch.uint8)
    out = model.inference([{"image": image, "points": torch.tensor([[10.0, 20.0]])}])[0]
    assert out["pred_masks"].shape == (1, 1, 100, 130) and torch.isfinite(out["pred_masks"]).all()


def test_enum_copies_match_their_modules():
    from semantic_sam import config_checks
    from semantic_sam.evaluation.click_simulation import CLICK_METHODS
    from semantic_sam.modeling.criterion import IOU_TARGETS
    from semantic_sam.modeling.decoder.prompt_encoder import POINT_CONVENTIONS

    assert config_checks.IOU_TARGETS == IOU_TARGETS
    assert config_checks.CLICK_METHODS == CLICK_METHODS
    assert config_checks.POINT_CONVENTIONS == POINT_CONVENTIONS


def test_demo_image_size_defaults_are_the_predictors():
    import inspect

    from semantic_sam.predictor import SemanticSamPredictor

    defaults = inspect.signature(SemanticSamPredictor).parameters
    cfg = load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"))
    assert cfg.MODEL.DECODER.TEST.SHORT_SIDE == defaults["short_side"].default
    assert cfg.MODEL.DECODER.TEST.MAX_SIZE == defaults["max_size"].default


def test_output_dir_must_not_be_a_file(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("")
    with pytest.raises(ConfigError) as e:
        load_config(SWINT, [f"OUTPUT_DIR={f}"])
    msg = str(e.value)
    assert "'OUTPUT_DIR'" in msg and str(f) in msg and "existing file" in msg
    with pytest.raises(ConfigError, match=f"OUTPUT_DIR.*under the file {f}"):
        load_config(SWINT, [f"OUTPUT_DIR={f}/run1"])
    load_config(SWINT, [f"OUTPUT_DIR={tmp_path}"])  # an existing directory
    load_config(SWINT, [f"OUTPUT_DIR={tmp_path}/new/run"])  # to be created


def test_empty_yaml_file(tmp_path):
    for text in ("", "# only a comment\n"):
        p = tmp_path / "empty.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=f"{p}: the config file is empty"):
            load_config(str(p))


def test_non_utf8_yaml_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("MODEL:\n  WEIGHTS: 'caf\u00e9.pth'\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(e.value).startswith(f"{p}:2: not UTF-8 text (byte 0xe9")


def test_duplicate_yaml_key_names_file_and_line(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("SOLVER:\n  BASE_LR: 0.1\n  MAX_ITER: 10\n  BASE_LR: 0.2\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(e.value) == f"{p}:4: duplicate key 'BASE_LR' (first at line 2); each key may appear once per mapping"
    # the same key in different mappings, and keys overriding a << merge, are fine
    p.write_text("SOLVER:\n  BASE_LR: 0.1\nSAM:\n  INPUT: &i {MIN_SIZE_TEST: 600}\nCOCO:\n  INPUT:\n"
                 "    <<: *i\n    MIN_SIZE_TEST: 700\n")
    cfg = load_config(str(p))
    assert cfg.SAM.INPUT.MIN_SIZE_TEST == 600 and cfg.COCO.INPUT.MIN_SIZE_TEST == 700


def test_duplicate_key_in_override_value():
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_overrides(["SOLVER.LR_MULTIPLIER={a: 1, a: 2}"])


def test_directory_as_config_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


def test_overrides_must_be_a_list_not_a_string():
    with pytest.raises(TypeError, match=r"pass \['SOLVER.BASE_LR=1'\]"):
        load_config(SWINT, "SOLVER.BASE_LR=1")
    with pytest.raises(TypeError):
        parse_overrides("A=1")


def test_config_error_is_a_user_error():
    from semantic_sam.errors import UserError

    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


def test_unknown_text_encoder_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"MODEL.TEXT.ARCH.*'vlpencoder'.*vlpencoder is unicl"):
        load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"), ["MODEL.TEXT.ARCH=vlpencoder"])
