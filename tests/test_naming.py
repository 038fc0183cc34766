"""One name per concept (docs: README "Naming"; ARCHITECTURE.md "Rules of thumb").

* level / levels: the user granularities 1-6 (``semantic_sam.predictor.levels``), only where users
  choose them (predictor, generator, demo, benchmarks of those);
* token / tokens / num_tokens: the K content queries of a prompt (an index into them is a token);
* feature level / num_feature_levels: a scale of the pixel decoder and of deformable attention;
* a GT mask a prompt is trained towards is a target.

The level-to-token mapping is a permutation, so mixing the first two gives a wrong mask without an
error: this test reads every identifier of the package, the tools and the entry points (not strings,
comments or the config's YAML keys) and fails on the old names.
"""
from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ["semantic_sam", "tools", "utils", "datasets", "demo.py", "train_net.py"]

# Old names of K, of the feature levels and of a prompt's targets.
FORBIDDEN = {
    "num_mask_tokens": "num_tokens",
    "n_levels": "num_feature_levels",
    "num_levels": "num_tokens (K) or num_feature_levels (scales)",
    "level_start_index": "feature_level_start_index",
    "input_level_start_index": "input_feature_level_start_index",
    "num_fpn_levels": "num_fpn_feature_levels",
    "level_target_inds": "prompt_target_gt_inds",
    "level_idx": "token_idx",
    "LEVELS": "ALL_LEVELS (user levels) or TIERS (synthetic scene hierarchy)",
}
# The deprecated aliases themselves: (file, identifier).
DEPRECATED_ALIASES = {
    ("semantic_sam/modeling/meta_arch.py", "num_mask_tokens"),  # SemanticSAM.num_mask_tokens property
    ("semantic_sam/predictor/model_interface.py", "num_mask_tokens"),  # models that still name K so
    ("semantic_sam/predictor/interactive_predictor.py", "num_levels"),  # SemanticSamPredictor.num_levels
}
# Where user levels are chosen: the only places an identifier may say "level" without "feature_level".
USER_LEVEL_PLACES = ("semantic_sam/predictor/", "demo.py", "utils/demo_app.py", "utils/demo_outputs.py", "tools/bench/")
# Names that contain "level" for another reason.
OTHER_LEVELS = {
    "level_embed",  # the pixel decoder's per-feature-level embedding: a state-dict key of the released checkpoints
    "stacklevel",  # warnings.warn
}


def _python_files() -> list[str]:
    files = []
    for entry in SCANNED:
        path = os.path.join(ROOT, entry)
        if os.path.isfile(path):
            files.append(entry)
            continue
        for folder, _, names in os.walk(path):
            files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in names if n.endswith(".py")]
    return sorted(f.replace(os.sep, "/") for f in files)


def _identifiers(tree: ast.AST):
    """(line, identifier) of every name the code defines or uses; ``logging``'s ``level=`` keyword is skipped."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.arg):
            yield node.lineno, node.arg
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.alias):
            yield getattr(node, "lineno", 0), node.asname or node.name.split(".")[-1]
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for kw in node.keywords:
                if kw.arg is not None and not (func == "basicConfig" and kw.arg == "level"):
                    yield node.lineno, kw.arg


FILES = _python_files()


def test_scan_finds_the_code():
    assert "semantic_sam/ops/ms_deform_attn.py" in FILES and "demo.py" in FILES and len(FILES) > 50


@pytest.mark.parametrize("path", FILES)
def test_one_name_per_concept(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    user_levels = path.startswith(USER_LEVEL_PLACES)
    problems = []
    for line, name in _identifiers(tree):
        if name in FORBIDDEN and (path, name) not in DEPRECATED_ALIASES:
            problems.append(f"{path}:{line}: {name!r} is an old name: use {FORBIDDEN[name]}")
        elif (
            re.search("level|LEVEL", name)
            and not re.search("feature_level|FEATURE_LEVEL", name)
            and name not in OTHER_LEVELS
            and name not in FORBIDDEN
            and not user_levels
        ):
            problems.append(
                f"{path}:{line}: {name!r}: 'level' is a user granularity 1-6, chosen only in "
                f"{', '.join(USER_LEVEL_PLACES)}; here it is a token, a feature level or a target"
            )
    assert not problems, "\n".join(problems)
