"""tools/bench/rows_text.py and the decode row's labels: the vocabulary and the class embeddings they time."""
import pytest
import torch

from tools.bench.rows_model import random_class_embeddings
from tools.bench.rows_text import evaluation_vocabulary, vocabulary_subset


def test_evaluation_vocabulary_is_coco_panoptic_objects_and_pascal_part_parts():
    objects, parts = evaluation_vocabulary()
    assert (len(objects), len(parts)) == (133, 30)
    assert objects[0] == "person" and "wall-other-merged" in objects
    assert {"license plate", "wheel", "torso"} <= set(parts)


@pytest.mark.parametrize("n, expected", [(0, (133, 30)), (163, (133, 30)), (500, (133, 30)), (2, (2, 0)),
                                         (133, (133, 0)), (140, (133, 7))])
def test_vocabulary_subset_takes_the_first_names_objects_first(n, expected):
    objects, parts = vocabulary_subset(n)
    all_objects, all_parts = evaluation_vocabulary()
    assert (len(objects), len(parts)) == expected
    assert objects == list(all_objects[: expected[0]]) and parts == list(all_parts[: expected[1]])


def test_random_class_embeddings_are_seeded_unit_vectors():
    emb = random_class_embeddings(5, 3, 16)
    assert emb["object"].shape == (5, 16) and emb["part"].shape == (3, 16)
    for t in emb.values():
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(len(t)))
    assert torch.equal(random_class_embeddings(5, 3, 16)["object"], emb["object"])
