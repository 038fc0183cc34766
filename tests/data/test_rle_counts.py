"""COCO RLE counts: the compressed-string decoder against pycocotools, and the check that an
RLE's runs cover exactly its size (pycocotools decodes any other into uninitialized memory)."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from semantic_sam.data.sa1b import (
    CorruptRecordError,
    CorruptRLEError,
    decode_rle,
    encode_mask_rle,
    record_from_files,
    rle_counts_from_string,
    rle_counts_problem,
    validate_annotations,
)


def _runs_of(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of a bool mask, starting with a (maybe empty) background run."""
    flat = mask.T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return [0] + runs if flat.size and flat[0] else runs


def _compressed(runs: list[int], h: int, w: int) -> str:
    """pycocotools' own compression of the run lengths ``runs`` (it does not check their sum)."""
    return mask_utils.frPyObjects({"size": [h, w], "counts": list(runs)}, h, w)["counts"].decode("ascii")


def _encode(runs: list[int]) -> str:
    """Compressed counts of any (also negative) runs, written as maskApi.c's rleToString does."""
    out = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(48 + (c | 0x20 if more else c)))
    return "".join(out)


def _random_masks(rng: np.random.Generator, n: int):
    for t in range(n):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        kind = t % 4
        if kind == 0:  # salt and pepper: many short runs
            yield rng.random((h, w)) < rng.random()
        elif kind == 1:  # one blob: few long runs, deltas of both signs
            yy, xx = np.mgrid[:h, :w]
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 40)
            yield (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        elif kind == 2:
            yield np.full((h, w), bool(t % 8 == 2))  # all background / all foreground
        else:  # stripes
            yield (np.arange(w)[None, :] // rng.integers(1, 5) % 2 == 0) & (np.arange(h)[:, None] > h // 3)


def test_decoder_agrees_with_pycocotools_on_random_masks():
    rng = np.random.default_rng(0)
    for mask in _random_masks(rng, 400):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        runs = rle_counts_from_string(rle["counts"])  # bytes, as pycocotools returns it
        assert runs.dtype == np.int64
        assert runs.tolist() == _runs_of(mask)
        assert rle_counts_from_string(rle["counts"].decode()).tolist() == runs.tolist()  # str too
        assert _encode(runs.tolist()) == rle["counts"].decode()  # the test's encoder is pycocotools'
        # and pycocotools decodes the run lengths back into the same mask
        back = mask_utils.decode(mask_utils.frPyObjects({"size": list(mask.shape), "counts": runs.tolist()},
                                                        *mask.shape))
        np.testing.assert_array_equal(back.astype(bool), mask)


def test_decoder_on_large_counts():
    # SA-1B-sized image: counts of millions of pixels need 5 characters, with deltas of both signs.
    h, w = 1500, 2250
    mask = np.zeros((h, w), bool)
    mask[100:1400, 1000:1001] = True
    mask[:, 2000:] = True
    mask[1499, 5] = True
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    runs = rle_counts_from_string(rle["counts"])
    assert runs.tolist() == _runs_of(mask) and int(runs.sum()) == h * w
    assert rle_counts_problem({"size": [h, w], "counts": rle["counts"].decode()}) is None


def test_runs_that_miss_one_pixel_are_refused():
    h, w = 12, 16
    mask = np.zeros((h, w), bool)
    mask[2:8, 3:10] = True
    short = _runs_of(mask)
    short[-1] -= 1  # covers h*w - 1 pixels
    for counts in (short, _compressed(short, h, w)):
        seg = {"size": [h, w], "counts": counts}
        assert rle_counts_problem(seg) == "RLE counts cover 191 pixels, expected 192 (12x16)"
        with pytest.raises(CorruptRLEError) as e:
            decode_rle(seg, "shard s.tsv row 3 annotation 1")
        assert str(e.value) == "shard s.tsv row 3 annotation 1: RLE counts cover 191 pixels, expected 192 (12x16)"


def test_runs_that_cover_too_many_pixels_are_refused():
    h, w = 12, 16
    runs = _runs_of(np.zeros((h, w), bool))
    runs[-1] += 5
    for counts in (runs, _compressed(runs, h, w)):
        with pytest.raises(CorruptRLEError, match=r"RLE counts cover 197 pixels, expected 192 \(12x16\)"):
            decode_rle({"size": [h, w], "counts": counts})


def test_negative_runs_are_refused():
    h, w = 4, 4
    runs = [10, 3, -1, 4]  # sums to 16, but run 2 is negative
    assert rle_counts_problem({"size": [h, w], "counts": runs}) == "RLE run 2 is negative (-1)"
    # Compressed, run 3 is stored as the delta -5 to run 1 (3): it decodes to -2, which
    # pycocotools would turn into a run of 2**32 - 2 pixels.
    s = _encode([10, 3, 5, -2])
    assert rle_counts_from_string(s).tolist() == [10, 3, 5, -2]
    with pytest.raises(CorruptRLEError, match=r"RLE run 3 is negative \(-2\)"):
        decode_rle({"size": [h, w], "counts": s})


@pytest.mark.parametrize(
    "counts, message",
    [
        ("zzzz", r"malformed counts string \(character 'z' at position 0 is not a COCO RLE character"),
        ("52 3", r"character ' ' at position 2"),
        ("5P", r"ends inside a count"),  # 'P' = 48 + 0x20: a continuation with nothing after it
        ("```````0", r"count 0 is written in 8 characters \(at most 6\)"),
        ("5\u00e93", r"non-ASCII character '\u00e9' at position 1"),
        ([3, 2.5, 11], r"counts list holds a non-integer, 2\.5"),
        ([3, "2", 11], r"counts list holds a non-integer, '2'"),
        ([3, True, 12], r"counts list holds a non-integer, True"),
    ],
)
def test_malformed_counts_are_refused(counts, message):
    with pytest.raises(CorruptRLEError, match=message) as e:
        decode_rle({"size": [4, 4], "counts": counts}, "here")
    assert str(e.value).startswith("here: RLE cannot be decoded")


def test_empty_counts_and_empty_image():
    assert rle_counts_problem({"size": [0, 5], "counts": ""}) is None
    assert rle_counts_problem({"size": [0, 5], "counts": []}) is None
    assert rle_counts_problem({"size": [2, 2], "counts": ""}) == "RLE counts cover 0 pixels, expected 4 (2x2)"


def test_validate_annotations_names_the_annotation_and_counts():
    h, w = 12, 16
    good = encode_mask_rle(np.ones((h, w), bool))
    bad = {"size": [h, w], "counts": _compressed([h * w - 1], h, w)}
    data = {"image": {"height": h, "width": w},
            "annotations": [{"id": 40, "segmentation": good}, {"id": 41, "segmentation": bad}]}
    with pytest.raises(CorruptRLEError) as e:
        validate_annotations(data, (h, w), "shard x.tsv row 7")
    assert isinstance(e.value, CorruptRecordError)
    assert str(e.value) == "shard x.tsv row 7: annotation 1 (id 41): RLE counts cover 191 pixels, expected 192 (12x16)"


def test_record_from_files_names_the_json_of_a_bad_rle(tmp_path):
    from PIL import Image

    h, w = 12, 16
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "sa_1.png", format="PNG")
    seg = {"size": [h, w], "counts": [h * w + 3]}
    (tmp_path / "sa_1.json").write_text(json.dumps({"image": {}, "annotations": [{"id": 0, "segmentation": seg}]}))
    with pytest.raises(CorruptRLEError) as e:
        record_from_files(str(tmp_path / "sa_1.png"), str(tmp_path / "sa_1.json"))
    assert e.value.where == str(tmp_path / "sa_1.json")
    assert e.value.reason == "annotation 0 (id 0): RLE counts cover 195 pixels, expected 192 (12x16)"


def test_decode_rle_still_decodes_good_rles_without_the_check():
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    rle = encode_mask_rle(mask)
    np.testing.assert_array_equal(decode_rle(rle, check_counts=False), mask)
    np.testing.assert_array_equal(decode_rle({"size": [5, 7], "counts": _runs_of(mask)}), mask)
