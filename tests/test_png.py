"""synthfer's own PNG encoder (io/png.py): lossless, the PNG spec's Paeth filter, fixed bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthfer.io import images, png
from synthfer.recipe import load_recipe
from tests.conftest import SMALL


def _paeth_reference(pixels: np.ndarray) -> np.ndarray:
    """The PNG specification's filter type 4, pixel by pixel (section 9.4)."""
    h, w, c = pixels.shape
    a = pixels.astype(int)
    out = np.zeros((h, 1 + w * c), np.uint8)
    for y in range(h):
        out[y, 0] = 4
        for x in range(w):
            for ch in range(c):
                left = a[y, x - 1, ch] if x else 0
                up = a[y - 1, x, ch] if y else 0
                up_left = a[y - 1, x - 1, ch] if x and y else 0
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                out[y, 1 + x * c + ch] = (a[y, x, ch] - pred) % 256
    return out


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (13, 31, 3)])
def test_paeth_rows_follow_the_spec(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(png.paeth_rows(pixels), _paeth_reference(pixels))



def test_a_stack_is_filtered_and_encoded_as_each_image_alone():
    """The writer filters a task's images together (encode_pngs, encode_many): same bytes."""
    rng = np.random.default_rng(3)
    stack = np.cumsum(rng.integers(-3, 4, (5, 11, 13, 3)), axis=2).clip(0, 255).astype(np.uint8)
    assert np.array_equal(png.paeth_rows(stack), np.stack([_paeth_reference(p) for p in stack]))
    assert png.encode_pngs(stack, 6) == [png.encode_png(p, 6) for p in stack]
    same = images.encode_many(list(stack[:, :11, :11]), "png", 11, 95)
    assert same == [images.encode(p, "png", 11, 95) for p in stack[:, :11, :11]]
    resized = images.encode_many(list(stack), "png", 8, 95)   # not the output size: one by one, via Pillow
    assert resized == [images.encode(p, "png", 8, 95) for p in stack] and resized[0][1:] == (8, 8)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("shape", [(1, 1, 3), (9, 17, 3), (64, 64, 3)])
def test_png_decodes_to_the_same_pixels(shape, level):
    rng = np.random.default_rng(level)
    smooth = np.cumsum(rng.integers(-3, 4, shape), axis=1).clip(0, 255).astype(np.uint8)   # photo-like rows
    for pixels in (smooth, rng.integers(0, 256, shape, dtype=np.uint8), np.zeros(shape, np.uint8)):
        data = png.encode_png(pixels, level)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (shape[1], shape[0])
            assert np.array_equal(np.asarray(img), pixels)
        assert png.encode_png(pixels, level) == data   # fixed bytes


def test_levels_trade_size_and_a_non_contiguous_crop_is_encoded_as_itself():
    rng = np.random.default_rng(0)
    frame = np.cumsum(rng.integers(-2, 3, (48, 96, 3)), axis=1).clip(0, 255).astype(np.uint8)
    assert len(png.encode_png(frame, 0)) > len(png.encode_png(frame, 1)) >= len(png.encode_png(frame, 9))
    crop = frame[:, ::2]   # a strided view
    with Image.open(io.BytesIO(png.encode_png(crop, 6))) as img:
        assert np.array_equal(np.asarray(img), crop)


def test_encode_resizes_with_pillow_then_writes_png():
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data, width, height = images.encode(pixels, "png", 16, 95)
    expected = np.asarray(Image.fromarray(pixels).resize((16, 16), Image.Resampling.LANCZOS))
    with Image.open(io.BytesIO(data)) as img:
        assert (width, height) == img.size == (16, 16) and np.array_equal(np.asarray(img), expected)


def test_the_png_encoder_counts_in_the_fingerprint(write_recipe):
    """A new encoder makes new bytes from the same pixels: a resumed build must not mix them."""
    inputs = load_recipe(write_recipe(SMALL, "a.yaml")).fingerprint_inputs({}, "cpu")
    assert inputs["png_encoder"] == png.encoder_id() and "libdeflate" in inputs["png_encoder"]
    as_jpg = load_recipe(write_recipe(SMALL.replace("format: png", "format: jpg"), "b.yaml"))
    assert "png_encoder" not in as_jpg.fingerprint_inputs({}, "cpu")
