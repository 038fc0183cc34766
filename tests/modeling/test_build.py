"""Building from a config: the registries and their lookup, the criterion's option checks."""
import os
import re

import pytest

from semantic_sam.config import ConfigError, load_config
from semantic_sam.modeling import registry
from semantic_sam.modeling.criterion import build_criterion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")


def test_importing_the_package_registers_every_builtin_part():
    names = {r._name: sorted(k for k, _ in r) for r in (
        registry.META_ARCH, registry.HEAD, registry.BACKBONE, registry.PIXEL_DECODER, registry.DECODER
    )}
    assert names == {
        "SEMANTIC_SAM_META_ARCH": ["interactive_mask_dino"],
        "SEMANTIC_SAM_HEAD": ["general_head"],
        "SEMANTIC_SAM_BACKBONE": ["swin"],
        "SEMANTIC_SAM_PIXEL_DECODER": ["encoder_deform"],
        "SEMANTIC_SAM_DECODER": ["interactive_mask_dino"],
    }


def test_unknown_name_is_a_config_error_naming_the_key_and_the_known_names():
    with pytest.raises(ConfigError, match=r"^MODEL.BACKBONE.NAME: unknown name 'resnet'; registered names: swin$"):
        registry.get_registered(registry.BACKBONE, "resnet", "MODEL.BACKBONE.NAME")
    assert registry.get_registered(registry.BACKBONE, "swin", "MODEL.BACKBONE.NAME").__name__ == "build_swin_backbone"


def _changed_after_loading(key: str, value):
    """The tiny config with ``MODEL.DECODER.<key>`` set after loading (so the load-time checks did not see it)."""
    cfg = load_config(TINY, freeze=False)
    cfg.MODEL.DECODER[key] = value
    return cfg


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("IOU_TARGET", "best", "one of 'matched', 'prompt'"),
        ("TRAIN_NUM_POINTS", 0, "an integer >= 1"),
        ("OVERSAMPLE_RATIO", 0.5, "a number >= 1"),
        ("IMPORTANCE_SAMPLE_RATIO", 1.5, "a number in [0, 1]"),
        ("MASK_WEIGHT", -1.0, "a number >= 0"),
        ("COST_GIOU_WEIGHT", float("nan"), "a number >= 0"),
        ("DEEP_SUPERVISION", "yes", "True or False"),
    ],
)
def test_bad_criterion_option_is_a_config_error_naming_its_key(key, value, allowed):
    with pytest.raises(ConfigError) as e:
        build_criterion(_changed_after_loading(key, value))
    message = str(e.value)
    assert f"invalid value for config key 'MODEL.DECODER.{key}': {value!r}; allowed: {allowed}" in message


def test_all_matching_costs_zero_is_a_config_error():
    cfg = load_config(TINY, freeze=False)
    for key in ("COST_MASK_WEIGHT", "COST_DICE_WEIGHT", "COST_BOX_WEIGHT", "COST_GIOU_WEIGHT"):
        cfg.MODEL.DECODER[key] = 0.0
    with pytest.raises(ConfigError, match="MODEL.DECODER.COST_MASK_WEIGHT.*a positive weight for at least one"):
        build_criterion(cfg)


def test_valid_options_build():
    criterion = build_criterion(load_config(TINY, ["MODEL.DECODER.IOU_TARGET=prompt", "MODEL.DECODER.MANY_TO_ONE=True"]))
    assert criterion.iou_target == "prompt" and criterion.many_to_one


def test_bad_criterion_option_fails_when_the_model_is_built():
    from semantic_sam.build import build_model

    with pytest.raises(ConfigError, match="MODEL.DECODER.IOU_TARGET"):
        build_model(_changed_after_loading("IOU_TARGET", "best"))


def test_modeling_never_imports_build():
    """build.py imports the model parts; the parts take the registries from modeling/registry.py."""
    package = os.path.join(ROOT, "semantic_sam", "modeling")
    offenders = []
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    text = f.read()
                if re.search(r"^\s*from\s+(\.\.+build|semantic_sam\.build)\s+import|^\s*import\s+semantic_sam\.build", text, re.M):
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []
