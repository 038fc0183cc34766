"""The CLIP BPE tokenizer adapter: the spec's test vectors, truncation keeping EOT, padding."""
import pytest
import torch

from semantic_sam.modeling.language.tokenizer import BOS_ID, EOT_ID, VOCAB_SIZE, ClipTokenizer, tokenize


def test_spec_vectors():
    ids = tokenize(["a photo of a dog.", "license plate."], context_length=18)
    assert ids.dtype == torch.long and ids.shape == (2, 18)
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 1929, 269, 49407]
    assert ids[1, :5].tolist() == [49406, 10337, 5135, 269, 49407]
    assert (ids[0, 8:] == 0).all() and (ids[1, 5:] == 0).all()
    assert (BOS_ID, EOT_ID, VOCAB_SIZE) == (49406, 49407, 49408)


def test_single_string_and_equality_with_open_clip():
    import open_clip

    texts = ["a photo of a dog.", "itap of my traffic light.", "a jpeg corrupted photo of the window-blind."]
    assert torch.equal(tokenize(texts, 77), open_clip.tokenize(texts, context_length=77))
    assert torch.equal(tokenize(texts[0], 18), tokenize([texts[0]], 18))


def test_longest_reference_text_fits_18():
    # SEMANTIC_SPEC §2.3: the longest COCO template text is 14 ids with BOS/EOT.
    ids = tokenize("a jpeg corrupted photo of the window-blind.", 77)[0]
    assert int((ids != 0).sum()) == 14


def test_truncation_keeps_eot():
    full = tokenize("a photo of a dog.", 77)[0]
    cut = tokenize("a photo of a dog.", 6)[0]
    assert cut.tolist() == full[:5].tolist() + [EOT_ID]
    assert int(cut.argmax()) == 5  # pooling still finds the EOT
    exact = tokenize("a photo of a dog.", 8)[0]  # exactly fits: no truncation, no padding
    assert exact.tolist() == full[:8].tolist()


def test_pad_id_and_empty_inputs():
    ids = ClipTokenizer(10, pad_id=EOT_ID)(["dog."])[0]
    assert ids.tolist()[:4] == [BOS_ID, 1929, 269, EOT_ID] and (ids[4:] == EOT_ID).all()
    assert int(ids.argmax()) == 3  # the first EOT
    assert tokenize([], 8).shape == (0, 8)
    assert tokenize([""], 4)[0].tolist() == [BOS_ID, EOT_ID, 0, 0]


def test_bad_inputs():
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tokenize(["dog", 3], 8)
    with pytest.raises(TypeError, match="string or a sequence"):
        tokenize(5, 8)
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer(1)
    with pytest.raises(ValueError, match="pad_id"):
        ClipTokenizer(8, pad_id=VOCAB_SIZE)
