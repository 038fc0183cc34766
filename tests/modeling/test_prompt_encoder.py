"""The prompt module: click/box geometry by hand, validation messages, attention-mask modes."""

import pytest
import torch

from semantic_sam.modeling.decoder.prompt_encoder import (
    ATTN_MASK_MODES,
    CLICK_BOX_HALF_SIZE,
    DEMO_CLICK_SIZE,
    box_to_prompt,
    check_attn_mask_mode,
    check_boxes_in_image,
    check_pixel_prompts,
    check_points_in_image,
    check_token_indices,
    click_boxes,
    point_to_box,
    self_attn_mask,
)


def test_click_boxes_by_hand():
    # click (10, 20) in a 100 x 50 (H x W) image
    pts = torch.tensor([[10, 20]])
    r = CLICK_BOX_HALF_SIZE
    torch.testing.assert_close(
        click_boxes(pts, (100, 50)), torch.tensor([[10 / 50, 20 / 100, 2 * r / 50, 2 * r / 100]])
    )
    s = DEMO_CLICK_SIZE
    torch.testing.assert_close(click_boxes(pts, (100, 50), "demo"), torch.tensor([[10 / 50, 20 / 100, s, s]]))
    assert click_boxes(torch.zeros(0, 2), (100, 50)).shape == (0, 4)
    with pytest.raises(ValueError, match="convention"):
        click_boxes(pts, (100, 50), "sam")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        click_boxes(torch.zeros(3), (100, 50))


def test_padded_frame_rescales_the_image_frame():
    pts = torch.tensor([[10.0, 20.0], [49.0, 99.0]])
    for convention in ("eval", "demo"):
        padded = point_to_box(pts, (100, 50), (128, 64), convention)
        torch.testing.assert_close(
            padded, click_boxes(pts, (100, 50), convention) * torch.tensor([50 / 64, 100 / 128] * 2)
        )
    torch.testing.assert_close(
        box_to_prompt(torch.tensor([[10, 20, 30, 60]]), (128, 64)),
        torch.tensor([[20 / 64, 40 / 128, 20 / 64, 40 / 128]]),
    )


def test_attn_mask_modes():
    assert ATTN_MASK_MODES == ("block", "none")
    assert check_attn_mask_mode("none") == "none"
    with pytest.raises(ValueError, match="attn_mask must be one of"):
        check_attn_mask_mode("full")
    assert self_attn_mask("none", 2, 3) is None
    assert self_attn_mask("block", 2, 3).shape == (6, 6)
    with pytest.raises(ValueError, match="attn_mask"):
        self_attn_mask("diagonal", 2, 3)


def test_pixel_prompt_validation():
    points, boxes = check_pixel_prompts([[0, 0], [60, 40]], None, (40, 60))
    assert points.dtype == torch.float32 and points.shape == (2, 2) and boxes.shape == (0, 4)
    with pytest.raises(
        ValueError, match=r"input 2: point 1 \(x=61, y=0\) is outside the image \(width 60, height 40\)"
    ):
        check_pixel_prompts([[0, 0], [61, 0]], None, (40, 60), "input 2: ")
    with pytest.raises(ValueError, match="no prompts"):
        check_pixel_prompts(None, torch.zeros(0, 4), (40, 60))
    with pytest.raises(TypeError, match="numeric"):
        check_pixel_prompts(torch.tensor([[True, False]]), None, (40, 60))
    with pytest.raises(ValueError, match="NaN"):
        check_pixel_prompts(None, [[0, 0, float("inf"), 1]], (40, 60))


def test_point_and_box_range_checks():
    check_points_in_image(torch.tensor([[0.0, 40.0], [60.0, 0.0]]), (40, 60))
    with pytest.raises(ValueError, match="outside the image"):
        check_points_in_image(torch.tensor([[float("nan"), 1.0]], dtype=torch.float64), (40, 60))
    check_boxes_in_image(torch.tensor([[5.0, 5.0, 5.0, 20.0]]), (40, 60))  # zero width: allowed by default
    with pytest.raises(ValueError, match="x0 < x1"):
        check_boxes_in_image(torch.tensor([[5.0, 5.0, 5.0, 20.0]]), (40, 60), allow_degenerate=False)
    with pytest.raises(ValueError, match="x0 <= x1"):
        check_boxes_in_image(torch.tensor([[6.0, 5.0, 5.0, 20.0]]), (40, 60))
    with pytest.raises(ValueError, match=r"box 1 .* is outside the image"):
        check_boxes_in_image(torch.tensor([[0.0, 0.0, 60.0, 40.0], [0.0, 0.0, 60.0, 41.0]]), (40, 60))


def test_token_indices():
    assert check_token_indices(None, 3) == [0, 1, 2]
    assert check_token_indices(torch.tensor([2, 0]), 3) == [2, 0]
    for bad in ([], [3], [-1], [True], [1.0]):
        with pytest.raises(ValueError, match="tokens"):
            check_token_indices(bad, 3)
