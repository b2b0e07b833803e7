"""Image encoding with fixed settings, so the same pixels always give the same bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from synthfer.io.png import encode_png, encode_pngs

EXTENSIONS = {"png": "png", "jpg": "jpg", "webp": "webp"}


def encode(pixels: np.ndarray, fmt: str, size: int, quality: int, png_level: int = 6) -> tuple[bytes, int, int]:
    """uint8 HWC RGB -> (encoded bytes, width, height), resized to size x size with antialiasing."""
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, (pixels.dtype, pixels.shape)
    img = Image.fromarray(pixels, "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
        pixels = np.asarray(img)
    if fmt == "png":   # our own encoder, about 3x faster than Pillow's (io/png.py)
        return encode_png(pixels, png_level), size, size
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=False)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=quality, method=4, exact=True)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue(), img.size[0], img.size[1]


def encode_many(pixels: list[np.ndarray], fmt: str, size: int, quality: int,
                png_level: int = 6) -> list[tuple[bytes, int, int]]:
    """encode() of each image, the same bytes; same-shaped PNGs that need no resize are
    filtered together (io/png.py), the rest one by one."""
    if fmt == "png" and pixels and all(p.shape == (size, size, 3) for p in pixels):
        return [(data, size, size) for data in encode_pngs(np.stack(pixels), png_level)]
    return [encode(p, fmt, size, quality, png_level) for p in pixels]
