import glob
import os
import subprocess
import sys

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
