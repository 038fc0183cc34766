"""The class-embedding cache: encodes each name once per (weights, templates), in memory and on
disk, and only the new names of a changed vocabulary."""
import glob
import logging
import os

import pytest
import torch

from semantic_sam.modeling.language import vocabulary
from semantic_sam.modeling.language.templates import VocabularyError, evaluation_text_embeddings
from semantic_sam.modeling.language.unicl import UniclTextEncoder
from semantic_sam.modeling.language.vocabulary import TextEmbeddingCache, text_weights_hash

NAMES = ["person", "wall-brick", "sky-other-merged"]


def tiny(seed=0):
    torch.manual_seed(seed)
    return UniclTextEncoder(width=64, heads=4, layers=2, context_length=18, dim_proj=32).eval()


class Counter:
    """Counts the texts that go through ``encoder.encode_ids``."""

    def __init__(self, encoder):
        self.texts = 0
        original = encoder.encode_ids

        def counted(ids, normalize=True):
            self.texts += ids.shape[0]
            return original(ids, normalize)

        encoder.encode_ids = counted


def test_second_call_encodes_nothing_and_new_names_only_themselves(tmp_path):
    enc = tiny()
    count = Counter(enc)
    cache = TextEmbeddingCache(enc, tmp_path)
    first = cache(NAMES)
    assert first.shape == (3, 32) and cache.encoded_names == 3 and count.texts == 3 * 81
    torch.testing.assert_close(first, evaluation_text_embeddings(enc, NAMES))
    count.texts = 0
    again = cache(NAMES)
    assert count.texts == 0 and torch.equal(again, first)
    more = cache(NAMES + ["license plate"])
    assert count.texts == 81 and cache.encoded_names == 4
    assert torch.equal(more[:3], first)
    # the normalised name is the key: 'sky' and 'brick wall' are already there; duplicates are fine
    count.texts = 0
    out = cache(["sky", "brick wall", "sky"])
    assert count.texts == 0 and torch.equal(out[0], first[2]) and torch.equal(out[2], first[2])


def test_disk_cache_is_read_by_a_new_cache_with_weights_only_files(tmp_path):
    enc = tiny()
    first = TextEmbeddingCache(enc, tmp_path)(NAMES)
    files = glob.glob(os.path.join(tmp_path, "*", "*.pt"))
    assert len(files) == 3
    weights_dir = os.path.basename(os.path.dirname(files[0]))
    assert weights_dir == text_weights_hash(enc)[:20]
    entry = torch.load(files[0], weights_only=True)
    assert set(entry) == {"name", "signature", "templates", "weights", "embedding"}
    assert entry["name"] in {"person", "brick wall", "sky"} and entry["embedding"].shape == (32,)
    assert entry["embedding"].untyped_storage().nbytes() == 32 * 4  # one row, not the whole batch
    count = Counter(enc)
    cache = TextEmbeddingCache(enc, str(tmp_path))
    assert torch.equal(cache(NAMES), first)
    assert count.texts == 0 and cache.disk_hits == 3 and cache.encoded_names == 0


def test_different_weights_or_templates_miss(tmp_path):
    enc = tiny()
    cache = TextEmbeddingCache(enc, tmp_path)
    first = cache(NAMES)
    with torch.no_grad():
        enc.lang_proj.add_(0.01 * torch.randn_like(enc.lang_proj))  # an optimizer step changes the weights in place
    second = cache(NAMES)
    assert cache.encoded_names == 6 and not torch.allclose(first, second)
    assert len(os.listdir(tmp_path)) == 2  # one folder per weights hash
    other = TextEmbeddingCache(tiny(seed=1), tmp_path)
    other(NAMES)
    assert other.encoded_names == 3 and other.disk_hits == 0
    short = TextEmbeddingCache(enc, tmp_path, templates=["{}.", "a photo of a {}."])
    short(NAMES)
    assert short.encoded_names == 3 and short.disk_hits == 0


def test_weights_hash_is_recomputed_only_after_a_change(monkeypatch):
    enc = tiny()
    calls = []
    real = vocabulary.text_weights_hash
    monkeypatch.setattr(vocabulary, "text_weights_hash", lambda m: calls.append(1) or real(m))
    cache = TextEmbeddingCache(enc)
    h1 = cache.weights_hash()
    assert cache.weights_hash() == h1 and len(calls) == 1
    enc.load_state_dict(tiny(seed=1).state_dict())
    h2 = cache.weights_hash()
    assert h2 != h1 and len(calls) == 2


def test_memory_only_cache_and_corrupt_entries(tmp_path, caplog):
    enc = tiny()
    mem = TextEmbeddingCache(enc, None)
    mem(NAMES)
    assert mem.cache_dir is None and mem.encoded_names == 3
    TextEmbeddingCache(enc, tmp_path)(["person"])
    (path,) = glob.glob(os.path.join(tmp_path, "*", "*.pt"))
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    cache = TextEmbeddingCache(enc, tmp_path)
    with caplog.at_level(logging.WARNING, logger="semantic_sam.modeling.language"):
        cache(["person"])
    assert cache.encoded_names == 1 and "unreadable entry" in caplog.text
    assert TextEmbeddingCache(enc, tmp_path)(["person"]).shape == (1, 32)  # rewritten, readable again


def test_bad_vocabularies():
    cache = TextEmbeddingCache(tiny())
    with pytest.raises(VocabularyError, match="is empty"):
        cache([])
    with pytest.raises(VocabularyError, match=r"vocabulary\[1\] is NoneType"):
        cache(["dog", None])
    assert cache.encoded_names == 0
