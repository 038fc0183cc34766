"""semantic_sam.utils.image_io: 16-bit and float images are converted, unsafe ones are refused."""
import numpy as np
import pytest
from PIL import Image

from semantic_sam.utils.image_io import UnsupportedImageError, load_image, to_rgb_uint8

from tests.utils.image_files import write_float_tiff, write_gray16_png, write_png_header

GRADIENT8 = np.arange(256, dtype=np.uint8).reshape(4, 64)  # every 8-bit value once


def test_gray16_png(tmp_path):
    # the 8 -> 16-bit expansion is v * 257 (0 -> 0, 255 -> 65535): reading back must undo it
    path = tmp_path / "g16.png"
    write_gray16_png(path, GRADIENT8.astype(np.uint16) * 257)
    assert Image.open(path).mode == "I;16"
    rgb = load_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 64, 3)
    np.testing.assert_array_equal(rgb, np.repeat(GRADIENT8[:, :, None], 3, axis=2))
    # values between the expanded ones round to the nearest 8-bit level (v / 257)
    write_gray16_png(path, np.array([[0, 128, 129, 385, 386, 32896, 65535]], np.uint16))
    np.testing.assert_array_equal(load_image(path)[0, :, 0], [0, 0, 1, 1, 2, 128, 255])


def test_float_tiff(tmp_path):
    path = tmp_path / "f.tif"
    write_float_tiff(path, (GRADIENT8 / 255.0).astype(np.float32))
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(load_image(path), np.repeat(GRADIENT8[:, :, None], 3, axis=2))
    write_float_tiff(path, np.array([[0.0, 0.25, 0.002, 1.0]], np.float32))
    np.testing.assert_array_equal(load_image(path)[0, :, 0], [0, 64, 1, 255])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (255.0, r"must be in \[0, 1\], got \[0, 255\]"),
        (-0.5, r"got \[-0.5, 0.5\]"),
    ],
)
def test_float_tiff_refused(tmp_path, bad, message):
    values = np.full((3, 5), 0.5, np.float32)
    values[1, 2] = bad
    values[0, 0] = 0.0
    path = tmp_path / "bad.tif"
    write_float_tiff(path, values)
    with pytest.raises(UnsupportedImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_int32_tiff_refused(tmp_path):
    path = tmp_path / "i32.tif"
    Image.fromarray(np.arange(12, dtype=np.int32).reshape(3, 4)).save(path)
    with pytest.raises(UnsupportedImageError, match="int32 is not supported"):
        load_image(path)


def test_arrays():
    rgb8 = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = rgb8.copy()
    np.testing.assert_array_equal(to_rgb_uint8(rgb8.astype(np.uint16) * 257), expected)
    np.testing.assert_array_equal(to_rgb_uint8((rgb8.astype(np.uint16) * 257).astype(">u2")), expected)
    np.testing.assert_array_equal(to_rgb_uint8(rgb8 / 255.0), expected)  # float64
    bgr32 = (rgb8 / 255.0).astype(np.float32)[:, :, ::-1]
    np.testing.assert_array_equal(to_rgb_uint8(bgr32, "BGR"), expected)
    half = np.array([[0.0, 0.5, 1.0]], np.float16)
    np.testing.assert_array_equal(to_rgb_uint8(half)[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[True, False]]))[0, :, 0], [255, 0])
    with pytest.raises(UnsupportedImageError, match="NaN"):
        to_rgb_uint8(np.array([[0.5, np.nan]], np.float32))
    with pytest.raises(UnsupportedImageError, match="int64 is not supported"):
        to_rgb_uint8(rgb8.astype(np.int64))
    with pytest.raises(TypeError, match="numpy array"):
        to_rgb_uint8(rgb8.tolist())


def test_decompression_bomb_header(tmp_path):
    path = tmp_path / "bomb.png"
    write_png_header(path, 100_000, 100_000)  # 10^10 pixels declared in 70 bytes
    assert path.stat().st_size < 100
    with pytest.raises(UnsupportedImageError, match="10000000000 pixels.*decompression bomb") as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pixel_limit_below_pils_hard_limit(tmp_path, monkeypatch):
    # PIL only warns between MAX_IMAGE_PIXELS and twice that: the warning is refused too
    Image.new("RGB", (15, 10)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnsupportedImageError, match=r"\(150 pixels\) exceeds limit of 100 pixels"):
        load_image(tmp_path / "a.png")
    with pytest.raises(UnsupportedImageError, match="15x10 = 150 pixels, more than the limit of 100"):
        to_rgb_uint8(Image.new("RGB", (15, 10)))  # an opened PIL image (the web app's uploads)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
    assert load_image(tmp_path / "a.png").shape == (10, 15, 3)


def test_pil_images_in_their_own_mode():
    # what the web app receives: a PIL image in the upload's mode
    g16 = Image.fromarray(GRADIENT8.astype(np.uint16) * 257)
    np.testing.assert_array_equal(to_rgb_uint8(g16)[:, :, 1], GRADIENT8)
    pal = Image.fromarray(GRADIENT8).convert("P")
    np.testing.assert_array_equal(to_rgb_uint8(pal), np.asarray(pal.convert("RGB")))
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 0, 0))  # magenta ink only
    np.testing.assert_array_equal(to_rgb_uint8(cmyk)[0, 0], [255, 0, 255])


def test_refusals_are_user_errors(tmp_path, capsys):
    from semantic_sam.utils.cli import exit_on_user_error

    write_float_tiff(tmp_path / "nan.tif", np.full((2, 2), np.nan, np.float32))
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(load_image)(tmp_path / "nan.tif")
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nan.tif'}: float image has NaN or infinite pixels\n"
