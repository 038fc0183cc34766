"""Prompt templates (81, from open_clip), class-name normalisation, training prompts drawn from a
given random source, and evaluation embeddings (normalised mean of unit-norm template embeddings)."""
import random

import numpy as np
import pytest
import torch

from semantic_sam.modeling.language.templates import (
    NUM_TEMPLATES,
    VocabularyError,
    check_class_names,
    class_texts,
    evaluation_text_embeddings,
    normalize_class_name,
    prompt_templates,
    sample_training_texts,
    training_text_embeddings,
)
from semantic_sam.modeling.language.unicl import UniclTextEncoder
from semantic_sam.utils.random_draws import TorchRandom

# The reference's list (X-Decoder / Semantic-SAM utils/prompt_engineering.py, get_prompt_templates), in its order.
REFERENCE_TEMPLATES = [
    "{}.", "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.",
    "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.",
    "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "a tattoo of the {}.",
]


def tiny(seed=0):
    torch.manual_seed(seed)
    return UniclTextEncoder(width=64, heads=4, layers=2, context_length=18, dim_proj=32)


def test_templates_are_the_reference_set():
    t = prompt_templates()
    assert len(t) == NUM_TEMPLATES == 81 == len(set(t))
    assert t[0] == "{}." and set(t) == set(REFERENCE_TEMPLATES) and len(REFERENCE_TEMPLATES) == 81
    assert all(x.count("{}") == 1 for x in t)


@pytest.mark.parametrize("name, expected", [
    ("wall-brick", "brick wall"),
    ("sky-other-merged", "sky"),
    ("window-blind", "blind window"),
    ("building-other-merged", "building"),
    ("floor-wood", "wood floor"),
    ("door-stuff", "door"),
    ("water-other", "water"),
    ("tennis racket", "tennis racket"),
    ("hot+dog", "hot dog"),
    ("hair drier, blow dryer", "hair drier blow dryer"),
    ("a-b-c", "a-b-c"),  # only two-word hyphenations are rewritten
])
def test_name_normalisation(name, expected):
    assert normalize_class_name(name) == expected


def test_class_prompts():
    p = class_texts("wall-brick")
    assert len(p) == 81 and p[0] == "brick wall." and "a photo of a brick wall." in p


def test_vocabulary_errors():
    with pytest.raises(VocabularyError, match="is empty"):
        check_class_names([])
    with pytest.raises(VocabularyError, match="list of class names, got str"):
        check_class_names("dog")
    with pytest.raises(VocabularyError, match=r"vocabulary\[1\] is int \(3\)"):
        check_class_names(["dog", 3])
    with pytest.raises(VocabularyError, match=r"vocabulary\[0\] \('-other'\) is empty after normalisation"):
        check_class_names(["-other"])


def test_training_prompts_come_from_the_given_random_source():
    names = ["person", "wall-brick", "sky-other-merged"]
    a = sample_training_texts(names, torch.Generator().manual_seed(3))
    b = sample_training_texts(names, torch.Generator().manual_seed(3))
    assert a == b and len(a) == 3
    assert a[1] in class_texts("wall-brick") and a[2] in class_texts("sky")
    # the draws are torch.randint(81, (C,)) on the generator
    idx = torch.randint(81, (3,), generator=torch.Generator().manual_seed(3)).tolist()
    assert a == [prompt_templates()[i].format(n) for i, n in zip(idx, ["person", "brick wall", "sky"], strict=True)]
    for rng in (np.random.default_rng(0), np.random.RandomState(0), random.Random(0),
                TorchRandom(torch.Generator().manual_seed(0)), None):
        out = sample_training_texts(names, rng)
        assert [p in class_texts(n) for p, n in zip(out, names, strict=True)] == [True] * 3
    # uniform over the 81 templates
    g = torch.Generator().manual_seed(0)
    seen = {sample_training_texts(["dog"], g)[0] for _ in range(1500)}
    assert len(seen) == 81
    with pytest.raises(TypeError, match="rng must be"):
        sample_training_texts(names, rng=3)


def test_training_embeddings_carry_gradients():
    enc = tiny()
    emb = training_text_embeddings(enc, ["person", "sky-other-merged"], torch.Generator().manual_seed(0))
    assert emb.shape == (2, 32) and emb.requires_grad
    emb.sum().backward()
    assert enc.lang_proj.grad is not None and enc.lang_encoder.token_embedding.weight.grad is not None


def test_evaluation_embedding_is_the_normalised_mean_of_unit_template_embeddings():
    enc = tiny().eval()
    names = ["wall-brick", "person"]
    out = evaluation_text_embeddings(enc, names, batch_size=7)  # small batches: 162 prompts in 24 calls
    assert out.shape == (2, 32) and not out.requires_grad
    with torch.no_grad():
        for i, name in enumerate(names):
            per_template = enc.encode_text(class_texts(name))  # (81, D), each x / (|x| + 1e-7)
            assert per_template.shape == (81, 32)
            mean = per_template.mean(dim=0)
            torch.testing.assert_close(out[i], mean / mean.norm(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    few = evaluation_text_embeddings(enc, ["person"], templates=["{}.", "a photo of a {}."])
    with torch.no_grad():
        two = enc.encode_text(["person.", "a photo of a person."]).mean(0)
    torch.testing.assert_close(few[0], two / two.norm(), atol=1e-6, rtol=1e-5)
