"""interactive_metrics (mask IoUs, IoU and label summaries, per-class accuracy, tables) on hand-made values
against hand-computed numbers."""
import numpy as np
import pytest
import torch

from semantic_sam.evaluation import mask_ious, summarize_ious
from semantic_sam.evaluation import interactive_metrics as im
from tests.utils.interactive_cases import POINT_IOUS, POINT_PICKS, _check, _expected_point_metrics, _m


def test_mask_ious_hand_values():
    gt = _m(4, 4, (0, 2, 0, 2))
    pred = torch.stack([gt, _m(4, 4, (0, 1, 0, 4)), _m(4, 4), _m(4, 4, (2, 4, 2, 4))])
    torch.testing.assert_close(mask_ious(pred, gt), torch.tensor([1.0, 2 / 6, 0.0, 0.0], dtype=torch.float64))
    assert mask_ious(_m(2, 2), _m(2, 2)).item() == 1.0  # both empty: defined, not NaN
    with pytest.raises(ValueError, match=r"prediction masks are \(3, 3\), GT mask is \(4, 4\)"):
        mask_ious(_m(3, 3), gt)


def test_summarize_ious_hand_values():
    res = summarize_ious(np.array(POINT_IOUS), np.array(POINT_PICKS))
    expected = _expected_point_metrics()
    for k in ("num_images", "num_images_without_segments", "num_dropped_segments"):
        expected.pop(k)
    _check(res, expected)


def test_summarize_labels_hand_values():
    labels = np.array([[2, 0, 1], [0, 2, 1], [2, 1, 0], [1, 1, 1]])
    gt = np.array([2, 1, 0, -1])  # the last segment is unlabelled: not scored
    ious = np.array([[1, 1 / 3, 0], [0.5, 0.5, 1], [1 / 3, 2 / 3, 1], [1, 0, 0]])
    picks = np.array([1, 0, 2, 0])
    res = im.summarize_labels(labels, gt, ious, picks)
    assert list(res) == ["num_labelled_segments", "label_acc@Max", "label_acc@Oracle"]
    _check(res, {"num_labelled_segments": 3, "label_acc@Max": 100 / 3, "label_acc@Oracle": 100.0})
    # Oracle ties resolve to the first maximum: IoUs [1, 1, 0] -> output 0.
    tie = im.summarize_labels(np.array([[2, 1, 1]]), np.array([2]), np.array([[1.0, 1.0, 0.0]]), np.array([1]))
    _check(tie, {"label_acc@Max": 0.0, "label_acc@Oracle": 100.0})
    assert im.summarize_labels(labels[:1], np.array([-1]), ious[:1], picks[:1]) == {"num_labelled_segments": 0}
    with pytest.raises(ValueError, match="labels and ious must be"):
        im.summarize_labels(labels, gt, ious[:, :2], picks)


def test_per_class_accuracy_hand_values_and_errors():
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 1]])
    gt = np.array([0, 1, 0, -1])
    ious = np.array([[1.0, 0.0], [1.0, 0.5], [1.0, 0.0], [0.0, 1.0]])
    picks = np.array([1, 0, 0, 0])
    res = im.per_class_accuracy(labels, gt, ious, picks, ("car", "house"))
    assert list(res) == ["num_labelled_segments/car", "label_acc@Max/car", "label_acc@Oracle/car",
                         "num_labelled_segments/house", "label_acc@Max/house", "label_acc@Oracle/house"]
    _check(res, {"num_labelled_segments/car": 2, "label_acc@Max/car": 50.0, "label_acc@Oracle/car": 100.0,
                 "label_acc@Max/house": 100.0})
    table = im.format_per_class_table(res).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:5]] == ["class", "segments", "label_acc@Max", "label_acc@Oracle"]
    assert [c.strip() for c in table[2].split("|")[1:5]] == ["car", "2", "50.00", "100.00"]
    with pytest.raises(ValueError, match="GT class 1 is not an index of the 1 class names"):
        im.per_class_accuracy(labels, gt, ious, picks, ("car",))
